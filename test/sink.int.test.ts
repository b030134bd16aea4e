import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from './helpers/stack.js';

const lines = (f: string) => (existsSync(f) ? readFileSync(f, 'utf8').split('\n').filter(Boolean) : []);

describe('sinks', () => {
  let stack: Stack;
  const base = join(tmpdir(), `llmq-sink-${process.pid}-${Date.now()}`);
  const generations = `${base}-gen`;
  const writes = `${base}-writes`;
  const down = `${base}-down`;

  beforeAll(async () => {
    stack = await startStack({
      config: {
        queue: { backoff_ms: 100, lock_duration_ms: 3_000, stalled_interval_ms: 1_000, max_stalled_count: 10 },
        models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 2, attempts: 5, options: { record_file: generations } }],
        sinks: [{ name: 'receiver', type: 'test-sink', events: ['results', 'usage'], options: { record_file: writes, fail_file: down } }],
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    for (const f of [generations, writes, down]) rmSync(f, { force: true });
  });

  it('keeps the generated result on the job, so a failed sink write retries only the write', async () => {
    writeFileSync(down, 'x');
    const res = await stack.http('POST', '/v1/jobs', { model: 'scripted', prompt: 'p' });
    const id = res.body.id as string;
    // Let two attempts fail on the sink while the receiver is down.
    for (let i = 0; i < 100; i++) {
      const job = (await stack.http('GET', `/v1/jobs/${id}`)).body;
      if (job.attempts >= 2) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    rmSync(down);
    const job = await stack.waitFor(id, ['completed'], 20_000);
    expect(job.attempts).toBeGreaterThanOrEqual(2);
    expect(lines(generations).filter((l) => l.split(' ')[0] === id)).toHaveLength(1);
    const written = lines(writes);
    expect(written[0]).toBe(`${id} ok:${id}`);
    expect(written).toHaveLength(2);
    const usage = JSON.parse(written[1]!.replace(/^usage /, ''));
    expect(usage).toMatchObject({ object: 'usage', job_id: id, model: 'scripted', served_by: 'scripted', backend: 'test-scripted', source: 'http', prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 });
    expect(usage.queue_wait_ms).toBeGreaterThanOrEqual(0);
    expect(usage.processing_ms).toBeGreaterThanOrEqual(0);
    expect(usage.worker).toMatch(/:\d+$/);
  });
});
