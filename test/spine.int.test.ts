import { writeFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '@llmq/config';
import { errorCode, silentLogger } from '@llmq/core';
import { serveGateway } from '@llmq/gateway';
import { createPlatform } from '@llmq/platform';
import { readSse, startStack, type Stack } from './helpers/stack.js';

describe('spine over HTTP with a worker child process', () => {
  let stack: Stack;
  let failFile: string;

  beforeAll(async () => {
    failFile = join(tmpdir(), `llmq-fail-${process.pid}-${Date.now()}`);
    stack = await startStack({
      config: {
        models: [
          { name: 'echo', backend: 'echo', concurrency: 16 },
          { name: 'echo-slow', backend: 'echo', concurrency: 2, options: { tokens_per_second: 20 } },
          { name: 'scripted', backend: 'test-scripted', concurrency: 4, attempts: 3 },
          { name: 'short', backend: 'echo', concurrency: 2, attempts: 1, timeout_ms: 300, options: { tokens_per_second: 5 } },
          { name: 'scripted-file', backend: 'test-scripted', concurrency: 2, attempts: 2, options: { fail_file: failFile } },
        ],
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('enqueues, runs and returns the result with timings', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'the quick brown fox', metadata: { ticket: 7 } });
    expect(res.status).toBe(202);
    expect(res.body.id).toMatch(/^job_/);
    const job = await stack.waitFor(res.body.id, ['completed']);
    expect(job.result.text).toBe('the quick brown fox');
    expect(job.result.finish_reason).toBe('stop');
    expect(job.result.usage).toEqual({ prompt_tokens: 4, completion_tokens: 4, total_tokens: 8 });
    expect(job.metadata).toEqual({ ticket: 7 });
    expect(job.attempts).toBe(1);
    expect(job.created_at).toBeLessThanOrEqual(job.started_at);
    expect(job.started_at).toBeLessThanOrEqual(job.first_token_at);
    expect(job.first_token_at).toBeLessThanOrEqual(job.completed_at);
  });

  it('streams tokens over SSE before the final result', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'a b c', max_tokens: 8 });
    const events = await readSse(`${stack.url}/v1/jobs/${res.body.id}/events`);
    const tokens = events.filter((e) => e.event === 'token');
    const final = events.at(-1)!;
    expect(final.event).toBe('completed');
    expect(tokens.length).toBeGreaterThanOrEqual(4);
    expect(tokens.map((t) => t.data.text).join('')).toBe(final.data.result.text);
    expect(final.data.result.text).toBe('a b c a b c a b');
    // Tokens arrived spread out in time, before the final event (20 tokens/s).
    expect(final.at - tokens[0]!.at).toBeGreaterThan(150);
  });

  it('shows a long job\'s progress to a client that polls it, and drops it once the job is done', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'a b c d e f g h', max_tokens: 160 });
    const id = res.body.id as string;
    const seen: number[] = [];
    const deadline = Date.now() + 15_000;
    while (seen.length < 2 && Date.now() < deadline) {
      const view = (await stack.http('GET', `/v1/jobs/${id}`)).body;
      if (view.status !== 'active') expect(view.progress).toBeUndefined();
      const chars = view.progress?.generated_chars as number | undefined;
      if (chars !== undefined && chars !== seen.at(-1)) {
        expect(view.progress.updated_at).toBeGreaterThanOrEqual(view.started_at);
        // Stored with it: when the first token came, before the job ends.
        expect(view.first_token_at).toBeGreaterThanOrEqual(view.started_at);
        expect(view.first_token_at).toBeLessThanOrEqual(view.progress.updated_at);
        seen.push(chars);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    // Stored every ~2 s once it has run 2 s (160 tokens at 20/s: ~8 s), and growing.
    expect(seen.length).toBe(2);
    expect(seen[1]!).toBeGreaterThan(seen[0]!);
    const done = await stack.waitFor(id, ['completed'], 15_000);
    expect(done.progress).toBeUndefined();
    expect(done.result.text.length).toBeGreaterThan(seen[1]!);
  }, 40_000);

  it('gives a second client that joins mid-answer the text so far, so both rebuild the whole answer', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'one two three four five six seven eight nine ten', max_tokens: 30 });
    const id = res.body.id as string;
    const firstSeen: string[] = [];
    const first = readSse(`${stack.url}/v1/jobs/${id}/events`, 20_000, (e) => firstSeen.push(e.event));
    while (firstSeen.filter((e) => e === 'token').length < 3) await new Promise((r) => setTimeout(r, 20));
    const second = await readSse(`${stack.url}/v1/jobs/${id}/events`, 20_000);
    const rebuilt = (events: { event: string; data: any }[]) => {
      let text = '';
      for (const e of events) if (e.event === 'token') text = text.slice(0, e.data.offset) + e.data.text;
      return text;
    };
    const final = second.at(-1)!;
    expect(final.event).toBe('completed');
    expect(rebuilt(second)).toBe(final.data.result.text);
    expect(rebuilt(await first)).toBe(final.data.result.text);
  });

  it('cancels an active job in the worker process: generation stops, status cancelled', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'x', max_tokens: 400 });
    const id = res.body.id as string;
    const seen: string[] = [];
    const sse = readSse(`${stack.url}/v1/jobs/${id}/events`, 15_000, (e) => seen.push(e.event));
    while (!seen.includes('token')) await new Promise((r) => setTimeout(r, 20));
    const del = await stack.http('DELETE', `/v1/jobs/${id}`);
    expect(del.status).toBe(202);
    expect(del.body.status).toBe('cancelling');
    const events = await sse;
    expect(events.at(-1)!.event).toBe('cancelled');
    const job = await stack.waitFor(id, ['cancelled']);
    expect(job.error.code).toBe('ERR_JOB_CANCELLED');
    // It had answered in part: when its first token came stays on the job.
    expect(job.first_token_at).toBeGreaterThanOrEqual(job.started_at);
    expect(job.first_token_at).toBeLessThanOrEqual(job.completed_at);
    expect(events.filter((e) => e.event === 'token').length).toBeLessThan(100);
    // The slot was freed: another job on the same model runs.
    const next = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'y', max_tokens: 2 });
    await stack.waitFor(next.body.id, ['completed']);
    // Cancelling again is idempotent; cancelling a completed job is a 409.
    expect((await stack.http('DELETE', `/v1/jobs/${id}`)).status).toBe(200);
    expect((await stack.http('DELETE', `/v1/jobs/${next.body.id}`)).status).toBe(409);
  });

  it('cancels a queued job by removing it, and counts it', async () => {
    const cancelled = async () => Number(/^llmq_jobs_cancelled_total\{model="echo"\} (\d+)$/m.exec(await (await fetch(`${stack.url}/metrics`)).text())?.[1] ?? 0);
    await stack.http('POST', '/v1/queues/echo/pause');
    try {
      const before = await cancelled();
      const res = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'never runs' });
      const del = await stack.http('DELETE', `/v1/jobs/${res.body.id}`);
      expect(del.status).toBe(200);
      expect(del.body.status).toBe('cancelled');
      const job = await stack.http('GET', `/v1/jobs/${res.body.id}`);
      expect(job.body.status).toBe('cancelled');
      // No worker saw it: the gateway that removed it counts it.
      expect(await cancelled()).toBe(before + 1);
    } finally {
      await stack.http('POST', '/v1/queues/echo/resume');
    }
  });

  it('ends waits and event streams of a job removed behind the API (Bull Board "empty")', async () => {
    await stack.http('POST', '/v1/queues/echo/pause');
    try {
      const began = Date.now();
      const sync = stack.http('POST', '/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'lost' }] });
      const queued = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'lost too' });
      const events = readSse(`${stack.url}/v1/jobs/${queued.body.id}/events`, 20_000);
      for (let i = 0; i < 100 && (await stack.http('GET', '/v1/queues')).body.data.find((q: { model: string }) => q.model === 'echo').waiting < 2; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      await new Promise((r) => setTimeout(r, 200));
      expect((await fetch(`${stack.url}/admin/queues/api/queues/echo/empty`, { method: 'PUT' })).status).toBe(200);
      const answer = await sync;
      expect(answer.status).toBe(503);
      expect(answer.body.error).toMatchObject({ code: 'ERR_JOB_LOST', message: expect.stringMatching(/was removed from Redis while it was followed .* send the request again/) });
      const seen = await events;
      expect(seen.at(-1)).toMatchObject({ event: 'failed', data: { id: queued.body.id, status: 'failed', error: { code: 'ERR_JOB_LOST' } } });
      // Both without waiting for a timeout: two reads of the store, 2 s and 5 s apart.
      expect(seen.at(-1)!.at - began).toBeLessThan(15_000);
    } finally {
      await stack.http('POST', '/v1/queues/echo/resume');
    }
  });

  it('times out a job, aborting the backend call', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'short', prompt: 'a b c d e f g h' });
    const job = await stack.waitFor(res.body.id, ['failed']);
    expect(job.error.code).toBe('ERR_JOB_TIMEOUT');
    expect(job.attempts).toBe(1);
    // A per-job timeout overrides the model's.
    const quick = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'a', max_tokens: 100, timeout_ms: 200 });
    const failed = await stack.waitFor(quick.body.id, ['failed'], 20_000);
    expect(failed.error.code).toBe('ERR_JOB_TIMEOUT');
    expect(failed.completed_at - failed.created_at).toBeLessThan(5_000 * 3);
  });

  it('times out a job whose deadline comes before that of a job already running on the same worker', async () => {
    // The worker keeps one timer for all in-flight deadlines: a later, shorter job must re-arm it.
    const long = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'a', max_tokens: 40, timeout_ms: 60_000 });
    await stack.waitFor(long.body.id, ['active']);
    const short = await stack.http('POST', '/v1/jobs', { model: 'echo-slow', prompt: 'b', max_tokens: 100, timeout_ms: 300 });
    const failed = await stack.waitFor(short.body.id, ['failed'], 10_000);
    expect(failed.error.code).toBe('ERR_JOB_TIMEOUT');
    expect(failed.completed_at - failed.started_at).toBeGreaterThanOrEqual(250);
    expect(failed.completed_at - failed.started_at).toBeLessThan(1_500);
    const done = await stack.waitFor(long.body.id, ['completed'], 20_000);
    expect(done.result.usage.completion_tokens).toBe(40);
  });

  it('retries a retryable failure and then succeeds', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'scripted', prompt: 'p', metadata: { fail_attempts: 2 } });
    const job = await stack.waitFor(res.body.id, ['completed']);
    expect(job.attempts).toBe(3);
    expect(job.result.text).toBe(`ok:${res.body.id}`);
  });

  it('does not retry a non-retryable failure', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'scripted', prompt: 'p', metadata: { bad_request: true } });
    const job = await stack.waitFor(res.body.id, ['failed']);
    expect(job.attempts).toBe(1);
    expect(job.error.code).toBe('ERR_BACKEND_BAD_REQUEST');
  });

  it('dead-letters after the last attempt, and replays from the DLQ', async () => {
    const res = await stack.http('POST', '/v1/jobs', { model: 'scripted', prompt: 'p', metadata: { fail_attempts: 99 } });
    const id = res.body.id as string;
    const failed = await stack.waitFor(id, ['failed']);
    expect(failed.attempts).toBe(3);
    expect(failed.error.code).toBe('ERR_BACKEND_UNAVAILABLE');
    let entry: any;
    for (let i = 0; i < 50 && !entry; i++) {
      const r = await stack.http('GET', `/v1/dlq/${id}`);
      if (r.status === 200) entry = r.body;
      else await new Promise((r2) => setTimeout(r2, 50));
    }
    expect(entry).toMatchObject({ id, model: 'scripted', attempts: 3, error: { code: 'ERR_BACKEND_UNAVAILABLE' }, source: { type: 'http' } });
    const list = await stack.http('GET', '/v1/dlq');
    expect(list.body.data.map((e: any) => e.id)).toContain(id);
    // Replay runs it again with fresh attempts; it fails again (fail_attempts 99) but first it is queued under the same id.
    const replay = await stack.http('POST', `/v1/dlq/${id}/replay`);
    expect(replay.status).toBe(202);
    expect((await stack.http('GET', `/v1/dlq/${id}`)).status).toBe(404);
    const again = await stack.waitFor(id, ['failed']);
    expect(again.attempts).toBe(3);
    expect((await stack.http('POST', '/v1/dlq/nope/replay')).status).toBe(404);
  });

  it('replays a dead-lettered job into a success once the cause is fixed', async () => {
    writeFileSync(failFile, 'backend is down');
    const res = await stack.http('POST', '/v1/jobs', { model: 'scripted-file', prompt: 'p' });
    const id = res.body.id as string;
    const failed = await stack.waitFor(id, ['failed']);
    expect(failed.attempts).toBe(2);
    let found = false;
    for (let i = 0; i < 50 && !found; i++) {
      found = (await stack.http('GET', `/v1/dlq/${id}`)).status === 200;
      if (!found) await new Promise((r) => setTimeout(r, 50));
    }
    expect(found).toBe(true);
    rmSync(failFile);
    const replay = await stack.http('POST', `/v1/dlq/${id}/replay`);
    expect(replay.status).toBe(202);
    const done = await stack.waitFor(id, ['completed']);
    expect(done.result.text).toBe(`ok:${id}`);
    expect(done.attempts).toBe(1);
  });

  it('honours idempotency keys: same body → same job; different body → 409', async () => {
    const body = { model: 'echo', prompt: 'idempotent' };
    const a = await stack.http('POST', '/v1/jobs', body, { 'Idempotency-Key': 'abc-1' });
    const b = await stack.http('POST', '/v1/jobs', { prompt: 'idempotent', model: 'echo' }, { 'Idempotency-Key': 'abc-1' });
    expect(a.status).toBe(202);
    expect(b.status).toBe(200);
    expect(b.body.id).toBe(a.body.id);
    const c = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'different' }, { 'Idempotency-Key': 'abc-1' });
    expect(c.status).toBe(409);
    expect(c.body.error.code).toBe('ERR_IDEMPOTENCY_CONFLICT');
    const d = await stack.http('POST', '/v1/jobs', { ...body, idempotency_key: 'abc-1' });
    expect(d.body.id).toBe(a.body.id);
    const e = await Promise.all([1, 2, 3, 4, 5].map(() => stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'race' }, { 'Idempotency-Key': 'race-1' })));
    expect(new Set(e.map((r) => r.body.id)).size).toBe(1);
    expect(e.filter((r) => r.status === 202)).toHaveLength(1);
    // A replay after the job finished says so, rather than "queued".
    await stack.waitFor(a.body.id, ['completed']);
    const late = await stack.http('POST', '/v1/jobs', body, { 'Idempotency-Key': 'abc-1' });
    expect(late.status).toBe(200);
    expect(late.body).toMatchObject({ id: a.body.id, status: 'completed', created: false });
    const batch = await stack.http('POST', '/v1/jobs/batch', { jobs: [{ ...body, idempotency_key: 'abc-1' }, { model: 'echo', prompt: 'new', idempotency_key: 'abc-2' }] });
    expect(batch.body.data).toMatchObject([
      { id: a.body.id, status: 'completed', created: false },
      { status: 'queued', created: true },
    ]);
  });

  it('enqueues a batch in bulk, reporting per-item errors without failing the valid ones', async () => {
    const res = await stack.http('POST', '/v1/jobs/batch', {
      jobs: [
        { model: 'echo', prompt: 'one' },
        { model: 'nope', prompt: 'two' },
        { model: 'echo', prompt: 'three', temperature: 9 },
        { model: 'echo', messages: [{ role: 'user', content: 'four' }] },
      ],
    });
    expect(res.status).toBe(202);
    expect(res.body.accepted).toBe(2);
    expect(res.body.rejected).toBe(2);
    expect(res.body.data[1]).toMatchObject({ index: 1, status: 'rejected', error: { code: 'ERR_MODEL_NOT_FOUND', param: 'jobs[1].model' } });
    expect(res.body.data[2]).toMatchObject({ index: 2, status: 'rejected', error: { code: 'ERR_REQUEST_INVALID', param: 'jobs[2].temperature' } });
    const done = await stack.waitFor(res.body.data[3].id, ['completed']);
    expect(done.result.text).toBe('four');
    await stack.waitFor(res.body.data[0].id, ['completed']);
  });

  it('lists queues, serves /healthz, /readyz, /metrics and Bull Board', async () => {
    const queues = await stack.http('GET', '/v1/queues');
    expect(queues.status).toBe(200);
    expect(queues.body.data.map((q: any) => q.model)).toEqual(['echo', 'echo-slow', 'scripted', 'short', 'scripted-file']);
    expect(queues.body.data[0].completed).toBeGreaterThan(0);
    expect((await stack.http('GET', '/healthz')).body).toEqual({ status: 'ok' });
    expect((await stack.http('GET', '/readyz')).status).toBe(200);
    const metrics = await stack.http('GET', '/metrics');
    expect(metrics.body).toContain('llmq_jobs_enqueued_total{model="echo",source="http"}');
    expect(metrics.body).toMatch(/llmq_queue_jobs\{model="echo",state="completed"\} [1-9]/);
    const board = await fetch(`${stack.url}/admin/queues`);
    expect(board.status).toBe(200);
    expect(await board.text()).toContain('<!DOCTYPE html>');
    const api = await stack.http('GET', '/admin/queues/api/queues');
    expect(api.status).toBe(200);
    expect(JSON.stringify(api.body)).toContain('_dlq');
  });

  it('answers 4xx for bad input and enqueues nothing', async () => {
    const before = (await stack.http('GET', '/v1/queues')).body.data;
    const total = (rows: any[]) => rows.reduce((n, q) => n + q.waiting + q.active + q.delayed + q.completed + q.failed, 0);
    const cases: [string, string, unknown, number, string | null, Record<string, string>?][] = [
      ['POST', '/v1/jobs', '{not json', 400, null],
      ['POST', '/v1/jobs', '[]', 400, null],
      ['POST', '/v1/jobs', {}, 400, 'model'],
      ['POST', '/v1/jobs', { model: 'echo' }, 400, 'prompt'],
      ['POST', '/v1/jobs', { prompt: 'x' }, 400, 'model'],
      ['POST', '/v1/jobs', { model: 'nope', prompt: 'x' }, 404, 'model'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', messages: [{ role: 'user', content: 'y' }] }, 400, 'messages'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 42 }, 400, 'prompt'],
      ['POST', '/v1/jobs', { model: 'echo', messages: [] }, 400, 'messages'],
      ['POST', '/v1/jobs', { model: 'echo', messages: [{ role: 'wizard', content: 'y' }] }, 400, 'messages[0].role'],
      ['POST', '/v1/jobs', { model: 'echo', messages: [{ role: 'user' }] }, 400, 'messages[0].content'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', max_tokens: 0 }, 400, 'max_tokens'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', max_tokens: 1.5 }, 400, 'max_tokens'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', temperature: -1 }, 400, 'temperature'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', top_p: 2 }, 400, 'top_p'],
      // Deep enough to overflow a recursive walk (the request hash's): a 500 before.
      ['POST', '/v1/jobs', `{"model":"echo","prompt":"x","metadata":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}`, 400, 'metadata'],
      ['POST', '/v1/chat/completions', `{"model":"echo","messages":[{"role":"user","content":"x"}],"metadata":${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}}`, 400, 'metadata'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', stop: ['a', ''] }, 400, 'stop[1]'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', priority: 0 }, 400, 'priority'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', timeout_ms: -5 }, 400, 'timeout_ms'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', metadata: 'nope' }, 400, 'metadata'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', frobnicate: true }, 400, 'frobnicate'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', min_p: 0.1 }, 400, 'min_p'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', template: '../etc/passwd' }, 400, 'template'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', response_format: { type: 'xml' } }, 400, 'response_format.type'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x', min_tokens: 5, max_tokens: 2 }, 400, 'min_tokens'],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x' }, 400, 'idempotency_key', { 'Idempotency-Key': 'a', 'x-unused': '1' }],
      ['POST', '/v1/jobs', { model: 'echo', prompt: 'x'.repeat(2_000_000) }, 413, null],
      ['POST', '/v1/jobs/batch', { jobs: [] }, 400, 'jobs'],
      ['POST', '/v1/jobs/batch', { jobs: {} }, 400, 'jobs'],
      ['POST', '/v1/jobs/batch', { jobs: [{ model: 'echo', prompt: 'x' }], extra: 1 }, 400, 'extra'],
      ['POST', '/v1/jobs/batch', { jobs: [{ model: 'nope', prompt: 'x' }] }, 400, null],
      ['GET', '/v1/jobs/job_doesnotexist', undefined, 404, 'id'],
      ['DELETE', '/v1/jobs/job_doesnotexist', undefined, 404, 'id'],
      ['GET', '/v1/dlq/job_doesnotexist', undefined, 404, 'id'],
      ['POST', '/v1/queues/nope/pause', undefined, 404, 'model'],
      ['GET', '/v1/nothing-here', undefined, 404, null],
    ];
    for (const [method, path, body, status, param, headers] of cases) {
      // The idempotency mismatch case sends a different key in the body and header.
      const b = param === 'idempotency_key' ? { ...(body as object), idempotency_key: 'b' } : body;
      const res = await stack.http(method, path, b, headers ?? {});
      expect(res.status, `${method} ${path} ${JSON.stringify(b)?.slice(0, 80)}`).toBe(status);
      expect(res.body.error, `${method} ${path}`).toBeDefined();
      expect(typeof res.body.error.message).toBe('string');
      expect(res.body.error.code).toMatch(/^ERR_/);
      if (param !== null) expect(res.body.error.param, `${method} ${path} ${JSON.stringify(b)?.slice(0, 80)}`).toBe(param);
    }
    expect(cases.length).toBeGreaterThanOrEqual(20);
    // Bodies the JSON parser does not take: a 400 that says what is wrong, never a 500.
    const raw = async (body: string, headers: Record<string, string>) => {
      const res = await stack.http('POST', '/v1/jobs', body, headers);
      expect(res.status, `${body} ${JSON.stringify(headers)}: ${JSON.stringify(res.body)}`).toBe(400);
      return res.body.error;
    };
    expect(await raw('null', {})).toMatchObject({ code: 'ERR_REQUEST_INVALID', message: 'the body must be a JSON object, not null' });
    expect(await raw('"x"', {})).toMatchObject({ message: 'the body must be a JSON object, not string' });
    const job = JSON.stringify({ model: 'echo', prompt: 'x' });
    expect(await raw(job, { 'content-type': 'text/plain' })).toMatchObject({ param: 'content-type', message: expect.stringContaining('content-type: application/json (got "text/plain")') });
    expect(await raw(job, { 'content-type': '' })).toMatchObject({ param: 'content-type' });
    expect(await raw(job, { 'content-encoding': 'gzip' })).toMatchObject({ code: 'ERR_REQUEST_INVALID', message: expect.stringContaining('the request body could not be read') });
    expect(await raw(job, { 'content-encoding': 'br' })).toMatchObject({ code: 'ERR_REQUEST_INVALID' });
    const after = (await stack.http('GET', '/v1/queues')).body.data;
    expect(total(after)).toBe(total(before));
  });
});

describe('a port already in use', () => {
  it('stops a worker before it takes a job, and a gateway, naming the setting to change', async () => {
    const holder = createServer();
    await new Promise<void>((r) => holder.listen(0, '0.0.0.0', r));
    const port = (holder.address() as AddressInfo).port;
    const stack = await startStack({ workers: 0 });
    try {
      const job = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'waits' });
      const started = stack.spawnWorker({ LLMQ_METRICS_PORT: String(port) });
      await expect(started).rejects.toThrow(`worker.metrics_port (env LLMQ_METRICS_PORT): port ${port} on 0.0.0.0 is in use by another process; each worker or connector on a host needs a port of its own`);
      expect(await stack.workers[0]!.exited).toBe(1);
      expect((await stack.http('GET', `/v1/jobs/${job.body.id}`)).body).toMatchObject({ status: 'queued', attempts: 0, started_at: null });

      const platform = await createPlatform(loadConfig({ path: stack.configPath, env: { PORT: String(port) } }));
      const err = await serveGateway({ platform, logger: silentLogger, registry: new Registry(), host: '0.0.0.0' }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(errorCode(err)).toBe('ERR_CONFIG_INVALID');
      expect(err?.message).toContain(`gateway.port (env PORT): port ${port} on 0.0.0.0 is in use by another process`);
    } finally {
      await stack.close();
      holder.close();
    }
  });
});

describe('gateway auth and Redis outages', () => {
  let stack: Stack;
  const key = 'test-key-0123456789';
  beforeAll(async () => {
    stack = await startStack({ workers: 0, config: { gateway: { port: 0, host: '127.0.0.1', api_keys: [key] } } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('requires an API key except on public paths; Bull Board takes Basic auth', async () => {
    const no = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'x' });
    expect(no.status).toBe(401);
    expect(no.body.error).toMatchObject({ code: 'ERR_AUTH_REQUIRED', type: 'authentication_error' });
    expect((await stack.http('GET', '/v1/queues', undefined, { authorization: 'Bearer wrong-key-123' })).status).toBe(401);
    expect((await stack.http('GET', '/v1/queues', undefined, { authorization: `Bearer ${key}` })).status).toBe(200);
    expect((await stack.http('GET', '/v1/queues', undefined, { 'x-api-key': key })).status).toBe(200);
    expect((await stack.http('GET', '/healthz')).status).toBe(200);
    expect((await stack.http('GET', '/metrics')).status).toBe(200);
    const board = await fetch(`${stack.url}/admin/queues`);
    expect(board.status).toBe(401);
    expect(board.headers.get('www-authenticate')).toContain('Basic');
    const basic = Buffer.from(`admin:${key}`).toString('base64');
    expect((await fetch(`${stack.url}/admin/queues`, { headers: { authorization: `Basic ${basic}` } })).status).toBe(200);
  });

  it('answers 503 fast while Redis is down, and recovers when it is back', async () => {
    const auth = { authorization: `Bearer ${key}` };
    await stack.redis.kill();
    try {
      const started = Date.now();
      const res = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'x' }, auth);
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('ERR_REDIS_UNAVAILABLE');
      expect(res.headers.get('retry-after')).toBe('5');
      expect(Date.now() - started).toBeLessThan(2_000);
      expect((await stack.http('GET', '/readyz')).status).toBe(503);
      expect((await stack.http('GET', '/v1/queues', undefined, auth)).status).toBe(503);
      // The doors that wait for the answer, and the event stream, subscribe first: on a connection
      // that queues commands until Redis is back, which held them for the whole outage.
      const doors: [string, string, unknown][] = [
        ['POST', '/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'x' }] }],
        ['POST', '/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'x' }], stream: true }],
        ['POST', '/v1/completions', { model: 'echo', prompt: 'x' }],
        ['POST', '/v1/engines/echo/completions', { prompt: 'x' }],
        ['GET', '/v1/jobs/job_x/events', undefined],
      ];
      for (const [method, path, body] of doors) {
        const began = Date.now();
        const answer = await stack.http(method, path, body, auth);
        expect(answer.status, `${method} ${path}`).toBe(503);
        // TextSynth's error shape is { error: message, code }.
        expect(answer.body.error.code ?? answer.body.code, `${method} ${path}`).toBe('ERR_REDIS_UNAVAILABLE');
        expect(Date.now() - began, `${method} ${path}`).toBeLessThan(2_000);
      }
      // An outage is not a defect: warn lines without stacks, repeats counted, not an error per request.
      const outage = stack.gatewayLogs.filter((l) => l.obj.code === 'ERR_REDIS_UNAVAILABLE' || (l.obj.err as { code?: string } | undefined)?.code === 'ERR_REDIS_UNAVAILABLE');
      expect(outage.length).toBeGreaterThan(0);
      expect(outage.filter((l) => l.level !== 'warn')).toEqual([]);
      const answered = outage.filter((l) => l.msg === 'requests answered 503: Redis is unavailable').map((l) => String(l.obj.err));
      expect(answered.length).toBeGreaterThan(0);
      expect(answered.length, answered.join('\n')).toBe(new Set(answered).size);
    } finally {
      await stack.redis.start();
    }
    let ok = false;
    for (let i = 0; i < 100 && !ok; i++) {
      ok = (await stack.http('GET', '/readyz')).status === 200;
      if (!ok) await new Promise((r) => setTimeout(r, 100));
    }
    expect(ok).toBe(true);
    const res = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'x' }, auth);
    expect(res.status).toBe(202);
  });

  it('answers 503 within the call bound while Redis is frozen (socket open, nothing answering)', async () => {
    const auth = { authorization: `Bearer ${key}` };
    stack.redis.freeze();
    try {
      const started = Date.now();
      const res = await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'x' }, auth);
      expect(res.status).toBe(503);
      expect(res.body.error.code).toBe('ERR_REDIS_UNAVAILABLE');
      expect(Date.now() - started).toBeLessThan(7_000);
      const began = Date.now();
      const chat = await stack.http('POST', '/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'x' }] }, auth);
      expect(chat.status).toBe(503);
      expect(chat.body.error.message).toMatch(/nothing was enqueued/);
      expect(Date.now() - began).toBeLessThan(7_000);
    } finally {
      stack.redis.unfreeze();
    }
    expect((await stack.http('POST', '/v1/jobs', { model: 'echo', prompt: 'x' }, auth)).status).toBe(202);
  });
});
