import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig, servedModels } from './index.js';

const dir = mkdtempSync(join(tmpdir(), 'llmq-config-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const error = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error('expected an error');
};

describe('config loader', () => {
  it('applies defaults and env overrides', () => {
    const c = loadConfig({ inline: { models: [{ name: 'echo', backend: 'echo' }] }, env: { REDIS_URL: 'redis://r:1', PORT: '9000', LLMQ_API_KEYS: 'aaaaaaaa, bbbbbbbb' } });
    expect(c.redis.url).toBe('redis://r:1');
    expect(c.gateway.port).toBe(9000);
    expect(c.gateway.api_keys).toEqual(['aaaaaaaa', 'bbbbbbbb']);
    expect(c.models[0]).toMatchObject({ name: 'echo', concurrency: 8, timeout_ms: 600_000, defaults: {}, options: {} });
    expect(c.queue.attempts).toBe(3);
    expect(c.worker.stream_flush_ms).toBe(50);
    expect(servedModels(c)).toEqual(['echo']);
  });

  it('reads the file named by LLMQ_CONFIG and resolves paths against it', () => {
    const p = file('a.yaml', 'models:\n  - name: m1\n    backend: echo\nworker:\n  models: [m1]\n');
    const c = loadConfig({ env: { LLMQ_CONFIG: p } });
    expect(c.config_path).toBe(p);
    expect(c.templates_path).toBe(join(dir, 'templates'));
    expect(servedModels(c)).toEqual(['m1']);
  });

  it('names the file and key for unknown keys and bad values', () => {
    const p = file('b.yaml', 'gateway:\n  prot: 80\n');
    expect(error(() => loadConfig({ path: p, env: {} }))).toBe(`ERR_CONFIG_INVALID: ${p}: gateway.prot: unknown key`);
    const q = file('c.yaml', 'models:\n  - name: m\n    backend: echo\n    concurrency: lots\n');
    expect(error(() => loadConfig({ path: q, env: {} }))).toMatch(/c\.yaml: models\[0\]\.concurrency: /);
    expect(error(() => loadConfig({ inline: {}, env: { PORT: 'eighty' } }))).toMatch(/PORT: expected a whole number/);
    expect(error(() => loadConfig({ inline: { gateway: { port: 70000 } }, env: {} }))).toMatch(/gateway\.port/);
    expect(error(() => loadConfig({ inline: { worker: { stream_flush_ms: -1 } }, env: {} }))).toMatch(/worker\.stream_flush_ms: /);
    expect(error(() => loadConfig({ inline: { models: [{ name: 'a', backend: 'echo' }, { name: 'a', backend: 'echo' }] }, env: {} }))).toMatch(/models\[1\]\.name: duplicate model name "a"/);
    expect(error(() => loadConfig({ inline: { models: [{ name: 'a', backend: 'echo', fallbacks: ['b'] }] }, env: {} }))).toMatch(/models\[0\]\.fallbacks\[0\]: unknown model "b"/);
    expect(error(() => loadConfig({ inline: { models: [{ name: 'a', backend: 'echo' }] }, env: { LLMQ_WORKER_MODELS: 'zzz' } }))).toMatch(/worker\.models\[0\]: unknown model "zzz"/);
    expect(error(() => loadConfig({ path: join(dir, 'missing.yaml'), env: {} }))).toMatch(/file not found/);
    expect(error(() => loadConfig({ path: file('d.yaml', 'a: [1,\n'), env: {} }))).toMatch(/not valid YAML/);
    expect(error(() => loadConfig({ inline: { gateway: { api_keys: ['short'] } }, env: {} }))).toMatch(/gateway\.api_keys\[0\]: API keys must be at least 8 characters/);
  });

  it('loads the shipped config/default.yaml', () => {
    const c = loadConfig({ path: new URL('../../../config/default.yaml', import.meta.url).pathname, env: {} });
    expect(c.models.map((m) => m.name)).toEqual(expect.arrayContaining(['echo', 'echo-slow']));
  });
});
