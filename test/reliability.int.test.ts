import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startRedis } from '@llmq/testing';
import { readSse, startStack, type Stack } from './helpers/stack.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function starts(file: string): Map<string, number> {
  const counts = new Map<string, number>();
  if (!existsSync(file)) return counts;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const id = line.split(' ')[0];
    if (id) counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

async function enqueueMany(stack: Stack, model: string, n: number, extra: Record<string, unknown> = {}): Promise<string[]> {
  const ids: string[] = [];
  for (let off = 0; off < n; off += 100) {
    const jobs = Array.from({ length: Math.min(100, n - off) }, (_, i) => ({ model, prompt: `job ${off + i}`, ...extra }));
    const res = await stack.http('POST', '/v1/jobs/batch', { jobs });
    expect(res.status).toBe(202);
    ids.push(...res.body.data.map((d: any) => d.id));
  }
  return ids;
}

/** Until the first model's queue has `n` jobs active. */
async function waitActive(stack: Stack, n: number): Promise<void> {
  while ((await stack.http('GET', '/v1/queues')).body.data[0].active !== n) await sleep(50);
}

async function waitAllCompleted(stack: Stack, model: string, n: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const q = (await stack.http('GET', '/v1/queues')).body.data.find((r: any) => r.model === model);
    if (q.completed >= n) return;
    if (Date.now() > deadline) throw new Error(`only ${q.completed}/${n} completed: ${JSON.stringify(q)}`);
    await sleep(100);
  }
}

describe('reliability with worker child processes', () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.close();
    stack = undefined;
  });

  it('loses no job when a worker is SIGKILLed 3 times mid-run', async () => {
    const record = join(tmpdir(), `llmq-starts-${process.pid}-${Date.now()}`);
    stack = await startStack({
      workers: 2,
      config: { models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 8, options: { delay_ms: 60, record_file: record } }] },
    });
    const ids = await enqueueMany(stack, 'scripted', 500);
    expect(new Set(ids).size).toBe(500);
    let kills = 0;
    for (let round = 0; round < 3; round++) {
      await sleep(400);
      const victim = stack.workers.find((w) => w.child.exitCode === null)!;
      victim.kill('SIGKILL');
      await victim.exited;
      kills++;
      await stack.spawnWorker();
    }
    expect(kills).toBe(3);
    await waitAllCompleted(stack, 'scripted', 500, 90_000);
    for (const id of ids) {
      const job = await stack.http('GET', `/v1/jobs/${id}`);
      expect(job.body.status, id).toBe('completed');
      expect(job.body.result.text).toBe(`ok:${id}`);
    }
    const counts = starts(record);
    const duplicated = [...counts.values()].filter((n) => n > 1).length;
    const totalStarts = [...counts.values()].reduce((a, b) => a + b, 0);
    console.log(`[reliability] 500 jobs, ${kills} SIGKILLs: all completed; ${totalStarts} starts, ${duplicated} jobs started more than once (re-run after their worker died)`);
    expect(counts.size).toBe(500);
    expect(ids.every((id) => counts.has(id))).toBe(true);
    // Killed workers held jobs in flight, so some jobs must have been re-run.
    expect(duplicated).toBeGreaterThan(0);
    const dlq = await stack.http('GET', '/v1/dlq');
    expect(dlq.body.total).toBe(0);
  }, 120_000);

  it('SIGTERM lets in-flight jobs finish, takes no new ones, and leaves nothing active or stalled', async () => {
    stack = await startStack({
      workers: 1,
      config: { models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 4, options: { delay_ms: 1500 } }] },
    });
    const ids = await enqueueMany(stack, 'scripted', 8);
    await waitActive(stack, 4);
    const worker = stack.workers[0]!;
    worker.kill('SIGTERM');
    const code = await worker.exited;
    expect(code, worker.output()).toBe(0);
    const q = (await stack.http('GET', '/v1/queues')).body.data[0];
    expect(q).toMatchObject({ active: 0, completed: 4, waiting: 4, failed: 0, delayed: 0 });
    const views = await Promise.all(ids.map(async (id) => (await stack!.http('GET', `/v1/jobs/${id}`)).body));
    expect(views.filter((v) => v.status === 'completed').every((v) => v.attempts === 1)).toBe(true);
    expect(worker.output()).not.toContain('stalled');
    await stack.spawnWorker();
    await waitAllCompleted(stack, 'scripted', 8, 20_000);
  }, 60_000);

  it('a worker that starts after a client began following a job streams to that client at once', async () => {
    stack = await startStack({
      workers: 0,
      config: {
        worker: { metrics_port: 0, watchdog_ms: 0 },
        models: [{ name: 'slow', backend: 'echo', concurrency: 1, options: { tokens_per_second: 10 } }],
      },
    });
    const { body } = await stack.http('POST', '/v1/jobs', { model: 'slow', prompt: 'one two three four five six seven eight' });
    const seen: { event: string; data: any }[] = [];
    const followed = readSse(`${stack.url}/v1/jobs/${body.id}/events`, 30_000, (e) => seen.push(e));
    for (let i = 0; i < 100 && seen.length === 0; i++) await sleep(20);
    expect(seen[0]).toMatchObject({ event: 'status', data: { status: 'queued' } });
    // The stream's watch went out while no worker listened; its next repeat is 15 s away, and the
    // job takes about a second once a worker has it.
    await stack.spawnWorker();
    const events = await followed;
    const kinds = events.map((e) => (e.event === 'status' ? `status:${e.data.status}` : e.event));
    expect(kinds).toContain('status:active');
    const tokens = seen.filter((e) => e.event === 'token');
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens.map((e) => e.data.text).join('')).toBe((events.at(-1)!.data as { result: { text: string } }).result.text);
  }, 60_000);

  it('SIGTERM past the grace period hands in-flight jobs back without spending an attempt', async () => {
    stack = await startStack({
      workers: 1,
      config: {
        worker: { metrics_port: 0, shutdown_grace_ms: 300, watchdog_ms: 0 },
        models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 2, attempts: 1, options: { delay_ms: 3000 } }],
      },
    });
    const ids = await enqueueMany(stack, 'scripted', 2);
    await waitActive(stack, 2);
    const seen: { event: string; data: any }[] = [];
    const followed = readSse(`${stack.url}/v1/jobs/${ids[0]}/events`, 30_000, (e) => seen.push(e));
    await sleep(300);
    stack.workers[0]!.kill('SIGTERM');
    await stack.workers[0]!.exited;
    const q = (await stack.http('GET', '/v1/queues')).body.data[0];
    expect(q.active).toBe(0);
    expect(q.failed).toBe(0);
    // Its watcher was told the job waits again, rather than hearing nothing until a worker takes it.
    expect(seen.map((e) => `${e.event}:${e.data.status}`)).toEqual(['status:active', 'status:queued']);
    await stack.spawnWorker();
    await waitAllCompleted(stack, 'scripted', 2, 20_000);
    for (const id of ids) expect((await stack.http('GET', `/v1/jobs/${id}`)).body.status).toBe('completed');
    expect((await followed).at(-1)).toMatchObject({ event: 'completed', data: { status: 'completed' } });
  }, 60_000);

  it('shows a job whose worker was SIGKILLed as orphaned until it runs again', async () => {
    stack = await startStack({
      workers: 1,
      config: {
        worker: { metrics_port: 0, watchdog_ms: 0 },
        queue: { lock_duration_ms: 2_000, stalled_interval_ms: 1_000 },
        models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 1, options: { delay_ms: 2_500 } }],
      },
    });
    const [id] = await enqueueMany(stack, 'scripted', 1);
    await waitActive(stack, 1);
    const running = (await stack.http('GET', `/v1/jobs/${id}`)).body;
    expect(running.status).toBe('active');
    expect(running.warning).toBeUndefined();
    const worker = stack.workers[0]!;
    worker.kill('SIGKILL');
    await worker.exited;
    // With no worker left, nothing runs the stalled check: the job stays "active", its lock expiring.
    let orphaned: any;
    for (let i = 0; i < 100 && orphaned?.warning === undefined; i++) {
      await sleep(100);
      orphaned = (await stack.http('GET', `/v1/jobs/${id}`)).body;
    }
    expect(orphaned).toMatchObject({
      status: 'active',
      warning: expect.stringMatching(/^no worker holds this job's lock any more \(its worker died or lost Redis\): a running worker of scripted queues it again within 2 s \(two stalled checks\), or fails it once this has happened more than \d+ times$/),
    });
    await stack.spawnWorker();
    const done = await stack.waitFor(id!, ['completed'], 20_000);
    expect(done.warning).toBeUndefined();
  }, 60_000);

  it('a second signal during the grace period exits at once, and its jobs still run (elsewhere, once their lock expires)', async () => {
    stack = await startStack({
      workers: 1,
      config: {
        worker: { metrics_port: 0, shutdown_grace_ms: 30_000, watchdog_ms: 0 },
        queue: { lock_duration_ms: 2_000, stalled_interval_ms: 1_000 },
        models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 2, options: { delay_ms: 4000 } }],
      },
    });
    await enqueueMany(stack, 'scripted', 2);
    await waitActive(stack, 2);
    const worker = stack.workers[0]!;
    worker.kill('SIGTERM');
    await sleep(300);
    const signalled = Date.now();
    worker.kill('SIGINT');
    const code = await worker.exited;
    // Not after the 30 s grace, nor after the 4 s jobs.
    expect(Date.now() - signalled).toBeLessThan(2_000);
    expect(code, worker.output()).toBe(130);
    expect(worker.output()).toContain('second signal: exiting now');
    await stack.spawnWorker();
    await waitAllCompleted(stack, 'scripted', 2, 30_000);
  }, 60_000);

  it('keeps consuming across a Redis restart and a frozen Redis', async () => {
    const redis = await startRedis({ persistent: true });
    try {
      stack = await startStack({
        redis,
        workers: 1,
        config: { models: [{ name: 'scripted', backend: 'test-scripted', concurrency: 4, options: { delay_ms: 50 } }] },
      });
      const first = await enqueueMany(stack, 'scripted', 40);
      await sleep(150);
      await redis.restart();
      // Jobs enqueued after the restart must be consumed by the same worker process.
      let second: string[] = [];
      for (let i = 0; i < 100 && second.length === 0; i++) {
        try {
          second = await enqueueMany(stack, 'scripted', 20);
        } catch {
          await sleep(100);
        }
      }
      await waitAllCompleted(stack, 'scripted', 60, 45_000);
      redis.freeze();
      await sleep(2_000);
      redis.unfreeze();
      const third = await enqueueMany(stack, 'scripted', 20);
      await waitAllCompleted(stack, 'scripted', 80, 45_000);
      for (const id of [...first, ...second, ...third]) expect((await stack.http('GET', `/v1/jobs/${id}`)).body.status).toBe('completed');
      expect(stack.workers[0]!.child.exitCode).toBeNull();
    } finally {
      await stack?.close();
      stack = undefined;
      await redis.stop();
    }
  }, 120_000);
});
