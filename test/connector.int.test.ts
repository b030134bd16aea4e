import { resolve } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@llmq/config';
import { silentLogger } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { startConnector } from '@llmq/connector';
import { checkSeedRequest, seedWorkerConfig } from '../apps/cli/src/mongo-worker.js';
import { startStack, type Stack } from './helpers/stack.js';

describe('connector', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ config: { sources: [{ name: 'feed', type: 'test-source', options: { count: 25, model: 'echo' } }] } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('runs configured sources into the queues; re-delivered ids collapse; the worker answers each once', async () => {
    const platform = await createPlatform(loadConfig({ path: stack.configPath, env: {} }));
    const connector = await startConnector({ platform, logger: silentLogger, registry: new Registry() });
    try {
      const ids = Array.from({ length: 25 }, (_, i) => `test:feed:${i}`);
      for (const id of ids) {
        const job = await stack.waitFor(id, ['completed']);
        expect(job.result.text).toBe(`doc ${id.split(':')[2]}`);
        expect(job.source).toMatchObject({ type: 'test-source', name: 'feed' });
      }
      const q = (await stack.http('GET', '/v1/queues')).body.data.find((r: any) => r.model === 'echo');
      expect(q.completed).toBe(25);
    } finally {
      await connector.close();
    }
  });

  it('refuses jobs for unknown models at enqueue, before anything reaches Redis', async () => {
    const config = loadConfig({ path: stack.configPath, env: {} });
    const platform = await createPlatform({ ...config, sources: [{ name: 'bad', type: 'test-source', options: { count: 2, model: 'nope' }, events: ['results'] }] });
    const err = await startConnector({ platform, logger: silentLogger, registry: new Registry() }).catch((e: unknown) => e as Error);
    expect((err as Error).message).toMatch(/ERR_MODEL_NOT_FOUND: model "nope" does not exist/);
  });
});

describe('llmq mongo-worker (seed compatibility)', () => {
  it('maps the seed flags and env onto a source, a write-back sink and the model', () => {
    const base = loadConfig({ inline: { models: [{ name: 'phi3', backend: 'echo', concurrency: 2 }] }, env: {} });
    const c = seedWorkerConfig(
      ['--parallel', '6', '--model', 'phi3', '--db_name', 'llm', '--requests_collection', 'reqs', '--batch_size', '50', '--timeout', '30', '--min_len', '5', '--max_len', '200', '--template', 'templates/phi3.template'],
      { DB_URI: 'mongodb://user:pw@db:27017/?replicaSet=rs0' },
      base,
    );
    expect(c.worker.models).toEqual(['phi3']);
    expect(c.models[0]).toMatchObject({ name: 'phi3', concurrency: 6, timeout_ms: 30_000 });
    expect(c.sources[0]).toMatchObject({ type: 'mongodb', options: { url_env: 'DB_URI', db: 'llm', collection: 'reqs', batch_size: 50, model: 'phi3', template: 'phi3', params: { min_tokens: 5, max_tokens: 200 } } });
    expect(c.sinks[0]).toMatchObject({ type: 'mongodb', sources: ['mongo-worker'], options: { url_env: 'DB_URI' } });
    const env = seedWorkerConfig([], { DB_URI: 'mongodb://x', DB_NAME: 'd', REQUESTS_COLLECTION: 'r', WORKER_CNT: '3', MODEL_NAME: 'phi3', MAX_LEN: '64' }, base);
    expect(env.models[0]!.concurrency).toBe(3);
    expect(env.sources[0]!.options).toMatchObject({ db: 'd', collection: 'r', params: { max_tokens: 64 } });
    expect(() => seedWorkerConfig(['--model', 'other', '--db_name', 'd', '--requests_collection', 'r', '--mongo_connection_string', 'mongodb://x'], {}, base)).toThrow(/--model "other" is not declared/);
  });

  it('checks at start, before any model loads, the template and lengths every document would be refused for', async () => {
    const base = loadConfig({
      inline: { models: [{ name: 'phi3', backend: 'llama-cpp', options: { model_path: '/nonexistent/phi3.gguf', context_size: 512, templates_dir: resolve('config/templates') } }] },
      env: {},
    });
    const seed = (...flags: string[]) => seedWorkerConfig(['--model', 'phi3', '--db_name', 'd', '--requests_collection', 'r', '--mongo_connection_string', 'mongodb://x', ...flags], {}, base);
    const check = async (...flags: string[]) => {
      const config = seed(...flags);
      checkSeedRequest(await createPlatform(config), config);
    };
    await expect(check('--template', 'templates/phi3.template', '--min_len', '5', '--max_len', '200')).resolves.toBeUndefined();
    await expect(check('--template', 'templates/nope.template')).rejects.toThrow(/^ERR_CONFIG_INVALID: mongo-worker: --template: model "phi3" has no template "nope" \(available: .*phi3/);
    await expect(check('--min_len', '600')).rejects.toThrow(/mongo-worker: --min_len: 600 tokens cannot fit in this model's context of 512 tokens/);
  });
});
