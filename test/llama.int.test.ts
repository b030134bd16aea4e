import { mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateTinyGguf } from '@llmq/testing';
import { linesWithRepeatedKeys, repeatedLogKeys } from './helpers/processes.js';
import { readSse, startStack, type Stack } from './helpers/stack.js';

describe('llama-cpp through the queue (generated tiny GGUF)', () => {
  let stack: Stack;
  let model: string;
  /** Where the model `late` looks for its file, which is not there when the worker starts. */
  const lateDir = mkdtempSync(join(tmpdir(), 'llmq-late-'));
  beforeAll(async () => {
    model = await generateTinyGguf();
    stack = await startStack({
      config: {
        models: [
          { name: 'echo', backend: 'echo', concurrency: 4 },
          { name: 'tiny', backend: 'llama-cpp', concurrency: 2, timeout_ms: 60_000, options: { model_path: model, context_size: 256, threads: 2, gpu: false, templates_dir: resolve('config/templates') } },
          { name: 'missing', backend: 'llama-cpp', concurrency: 1, options: { model_path: '/nonexistent/model.gguf', gpu: false } },
          // Its default template is not there: a config mistake, not tried again.
          { name: 'badtpl', backend: 'llama-cpp', concurrency: 1, options: { model_path: model, context_size: 64, threads: 1, gpu: false, template: 'nope' } },
          // The same, found only once its file appears (the retry's give-up path).
          { name: 'badtpl-late', backend: 'llama-cpp', concurrency: 1, options: { model_path: join(lateDir, 'badtpl-late.gguf'), context_size: 64, threads: 1, gpu: false, template: 'nope' } },
          { name: 'late', backend: 'llama-cpp', concurrency: 1, options: { model_path: join(lateDir, 'late.gguf'), context_size: 128, threads: 1, gpu: false } },
        ],
      },
    });
  }, 120_000);
  afterAll(async () => {
    await stack?.close();
    rmSync(lateDir, { recursive: true, force: true });
  });

  it('streams tokens over SSE before the result, with usage and first-token time', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'hello', max_tokens: 24, min_tokens: 24, temperature: 0 });
    expect(res.status).toBe(202);
    const events = await readSse(`${stack.url}/v1/jobs/${res.body.id}/events`, 60_000);
    const final = events.at(-1)!;
    expect(final.event).toBe('completed');
    const tokens = events.filter((e) => e.event === 'token');
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.map((t) => t.data.text).join('')).toBe(final.data.result.text);
    expect(final.data.result.usage.completion_tokens).toBe(24);
    const job = await stack.http('GET', `/v1/jobs/${res.body.id}`);
    expect(job.body.first_token_at).toBeGreaterThanOrEqual(job.body.started_at);
  });

  it('returns JSON matching a schema, even from random weights', async () => {
    const schema = { type: 'object', properties: { name: { type: 'string' }, n: { type: 'integer' } }, required: ['name', 'n'], additionalProperties: false };
    const res = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'give json', max_tokens: 120, response_format: { type: 'json_schema', json_schema: { schema } } });
    const job = await stack.waitFor(res.body.id, ['completed', 'failed'], 60_000);
    expect(job.status, JSON.stringify(job.error)).toBe('completed');
    const parsed = JSON.parse(job.result.text);
    expect(typeof parsed.name).toBe('string');
    expect(Number.isInteger(parsed.n)).toBe(true);
  });

  it('renders a named template, and rejects a template that is not there at enqueue, naming the ones that are', async () => {
    const ok = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'hi', template: 'phi3', max_tokens: 4 });
    expect(ok.status).toBe(202);
    expect((await stack.waitFor(ok.body.id, ['completed', 'failed'], 30_000)).status).toBe('completed');
    const bad = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'hi', template: 'phi-3' });
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'ERR_REQUEST_INVALID', param: 'template' });
    expect(bad.body.error.message).toBe('template: model "tiny" has no template "phi-3" (available: chatml, phi3)');
    const batch = await stack.http('POST', '/v1/jobs/batch', { jobs: [{ model: 'tiny', prompt: 'a', template: 'nope' }, { model: 'echo', prompt: 'b' }] });
    expect(batch.body.data[0]).toMatchObject({ status: 'rejected', error: { param: 'jobs[0].template' } });
    expect(batch.body.data[1].status).toBe('queued');
  });

  it('rejects at enqueue a JSON schema keyword the grammar cannot enforce, naming where it is', async () => {
    const schema = { type: 'object', properties: { age: { type: 'integer', minimum: 0 } }, required: ['age'] };
    const res = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'x', response_format: { type: 'json_schema', json_schema: { schema } } });
    expect(res.status).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'ERR_REQUEST_UNSUPPORTED_PARAM', param: 'response_format.json_schema.schema.properties.age.minimum' });
    const openai = await stack.http('POST', '/v1/chat/completions', {
      model: 'tiny',
      messages: [{ role: 'user', content: 'x' }],
      response_format: { type: 'json_schema', json_schema: { name: 'p', schema: { type: 'string', pattern: '^a' } } },
    });
    expect(openai.status).toBe(400);
    expect(openai.body.error.param).toBe('response_format.json_schema.schema.pattern');
  });

  it('cancels a running generation and frees the sequence for the next job', async () => {
    const long = await Promise.all([1, 2].map(() => stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'x', max_tokens: 200, min_tokens: 200 })));
    for (const r of long) await stack.waitFor(r.body.id, ['active'], 30_000);
    const queued = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt: 'next', max_tokens: 4 });
    await Promise.all(long.map((r) => stack.http('DELETE', `/v1/jobs/${r.body.id}`)));
    for (const r of long) expect((await stack.waitFor(r.body.id, ['cancelled'], 10_000)).status).toBe('cancelled');
    const next = await stack.waitFor(queued.body.id, ['completed'], 20_000);
    expect(next.result.usage.completion_tokens).toBeGreaterThan(0);
  });

  it('still serves the other models when a model file is missing, and says why', async () => {
    const echo = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'still here' });
    expect((await stack.waitFor(echo.body.id, ['completed'])).result.text).toBe('still here');
    expect(stack.workers[0]!.output()).toMatch(/model \\?"missing\\?" is not served: ERR_MODEL_FILE_MISSING: .*llmq model pull/);
    // A reason that is not tried again says what ends it, to the operator and to clients.
    expect(stack.workers[0]!.output()).toMatch(/model \\?"badtpl\\?" is not served: ERR_CONFIG_INVALID: options.template: .*nope.*restart the worker once it is fixed/);
    const chat = await stack.http('POST', '/v1/chat/completions', { model: 'badtpl', messages: [{ role: 'user', content: 'hi' }] });
    expect(chat.status).toBe(503);
    expect(chat.body.error.message).toMatch(/unknown template .*nope.*restart the worker once it is fixed/);
    // The API shows which queues no worker takes jobs from.
    const queues = (await stack.http('GET', '/v1/queues')).body.data as { model: string; workers: number }[];
    expect(Object.fromEntries(queues.map((q) => [q.model, q.workers]))).toMatchObject({ echo: 1, tiny: 1, missing: 0 });
    const metrics = (await stack.http('GET', '/metrics')).body as string;
    expect(metrics).toContain('llmq_queue_workers{model="missing"} 0');
    expect(metrics).toContain('llmq_queue_workers{model="tiny"} 1');
  });

  it('serves a model whose file appears after the worker started (a pull, a copy) without a restart', async () => {
    const job = await stack.http('POST', '/v1/jobs', { model: 'late', prompt: 'waited', max_tokens: 4 });
    expect(job.status).toBe(202);
    const path = join(lateDir, 'late.gguf');
    // A copy in progress first: a GGUF cut short does not load; the worker tries it again.
    const whole = readFileSync(model);
    writeFileSync(path, whole.subarray(0, 2_000));
    const deadline = Date.now() + 30_000;
    while (!/model \\?"late\\?" is not served: ERR_MODEL_LOAD/.test(stack.workers[0]!.output())) {
      if (Date.now() > deadline) throw new Error(`the worker did not try the cut file: ${stack.workers[0]!.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    expect((await stack.http('GET', `/v1/jobs/${job.body.id}`)).body.status).toBe('queued');
    // Then the whole file (as a copy finishes, or `model pull` renames its download into place).
    writeFileSync(`${path}.tmp`, whole);
    renameSync(`${path}.tmp`, path);
    const done = await stack.waitFor(job.body.id, ['completed', 'failed'], 30_000);
    expect(done.status, JSON.stringify(done.error)).toBe('completed');
    expect(done.result.usage.completion_tokens).toBeGreaterThan(0);
    const queues = (await stack.http('GET', '/v1/queues')).body.data as { model: string; workers: number; not_served: unknown }[];
    expect(queues.find((q) => q.model === 'late')).toMatchObject({ workers: 1, not_served: null });
    expect(queues.find((q) => q.model === 'missing')).toMatchObject({ workers: 0, not_served: { code: 'ERR_MODEL_FILE_MISSING' } });
    // A file that appears but whose model still cannot be served for a reason not retried: the
    // worker stops trying, and says a restart is needed, to clients too.
    writeFileSync(join(lateDir, 'badtpl-late.gguf'), whole);
    const until = Date.now() + 30_000;
    while (!/model \\?"badtpl-late\\?" is not served: ERR_CONFIG_INVALID: .*not tried again: restart the worker/.test(stack.workers[0]!.output())) {
      if (Date.now() > until) throw new Error(`the worker did not give up on badtpl-late: ${stack.workers[0]!.output().slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const chat = await stack.http('POST', '/v1/chat/completions', { model: 'badtpl-late', messages: [{ role: 'user', content: 'hi' }] });
    expect(chat.status).toBe(503);
    expect(chat.body.error.message).toMatch(/unknown template .*nope.*restart the worker once it is fixed/);
  }, 70_000);

  it('logs each key once per line (the host binds the model and backend; the backend does not again)', () => {
    expect(repeatedLogKeys('{"a":1,"b":{"a":2},"c":"\\"a\\":","a":3}')).toEqual(['a']);
    const output = stack.workers[0]!.output();
    expect(output).toContain('llama-cpp model ready');
    expect(linesWithRepeatedKeys(output)).toEqual([]);
  });

  it('answers a prompt longer than the context with a 400 that carries the numbers, not retried', async () => {
    const prompt = 'queue '.repeat(400);
    const res = await stack.http('POST', '/v1/completions', { model: 'tiny', prompt, max_tokens: 4 });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('ERR_BACKEND_CONTEXT_LENGTH');
    expect(res.body.error.details.context_size).toBe(256);
    expect(res.body.error.details.prompt_tokens).toBeGreaterThan(256);
    const job = await stack.http('POST', '/v1/jobs', { model: 'tiny', prompt, max_tokens: 4 });
    const events = await readSse(`${stack.url}/v1/jobs/${job.body.id}/events`, 60_000);
    expect(events.at(-1)!.event).toBe('failed');
    const view = await stack.http('GET', `/v1/jobs/${job.body.id}`);
    expect(view.body).toMatchObject({ status: 'failed', attempts: 1, error: { code: 'ERR_BACKEND_CONTEXT_LENGTH', details: { context_size: 256 } } });
  });

  it('serves the official openai SDK from the local model, streaming and not', async () => {
    const client = new OpenAI({ baseURL: `${stack.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const chat = await client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, temperature: 0 });
    expect(chat.choices[0]!.message.role).toBe('assistant');
    expect(chat.usage!.completion_tokens).toBeGreaterThan(0);
    expect(chat.usage!.prompt_tokens).toBeGreaterThan(0);
    let streamed = '';
    let usage: unknown;
    for await (const chunk of await client.completions.create({ model: 'tiny', prompt: 'once upon', max_tokens: 8, temperature: 0, stream: true, stream_options: { include_usage: true } })) {
      streamed += chunk.choices[0]?.text ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    const again = await client.completions.create({ model: 'tiny', prompt: 'once upon', max_tokens: 8, temperature: 0 });
    // Greedy decoding: the streamed and the non-streamed answers are the same text.
    expect(streamed).toBe(again.choices[0]!.text);
    expect(usage).toEqual(again.usage);
  });
});
