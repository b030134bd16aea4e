import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from './helpers/stack.js';

describe('per-model rate limits shared by all workers', () => {
  let stack: Stack;
  const record = join(tmpdir(), `llmq-rl-${process.pid}-${Date.now()}`);
  beforeAll(async () => {
    stack = await startStack({
      workers: 2,
      config: { models: [{ name: 'limited', backend: 'test-scripted', concurrency: 8, options: { record_file: record }, rate_limit: { rpm: 4, window_ms: 1000 } }] },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('never starts more than rpm jobs per window across two workers, and fails none', async () => {
    const res = await stack.http('POST', '/v1/jobs/batch', { jobs: Array.from({ length: 14 }, (_, i) => ({ model: 'limited', prompt: `p${i}` })) });
    const ids: string[] = res.body.data.map((d: any) => d.id);
    for (const id of ids) await stack.waitFor(id, ['completed'], 20_000);
    const starts = readFileSync(record, 'utf8').split('\n').filter(Boolean).map((l) => Number(l.split(' ')[1]));
    expect(starts).toHaveLength(14);
    // The limiter admits a job in the window of Redis' clock when it reserves; the backend records
    // its start a little later (the reply, then the worker's event loop), so a job admitted at the
    // end of a window can start just after the next one began. A start within LAG_MS of a window's
    // beginning is therefore counted in the window before when that one has room; every other start
    // counts where it fell. The lag passed 100 ms once with the whole suite running on 2 cores.
    const LAG_MS = 300;
    const perWindow = new Map<number, number>();
    for (const t of [...starts].sort((a, b) => a - b)) {
      const window = Math.floor(t / 1000);
      const admittedIn = t % 1000 < LAG_MS && (perWindow.get(window - 1) ?? 0) > 0 && (perWindow.get(window - 1) ?? 0) < 4 ? window - 1 : window;
      perWindow.set(admittedIn, (perWindow.get(admittedIn) ?? 0) + 1);
    }
    expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(4);
    // 14 jobs at 4 per window need at least 4 windows.
    expect(perWindow.size).toBeGreaterThanOrEqual(4);
    for (const id of ids) expect((await stack.http('GET', `/v1/jobs/${id}`)).body.attempts).toBe(1);
    const metrics = await fetch(`${stack.url}/metrics`).then((r) => r.text());
    expect(metrics).toContain('llmq_queue_jobs{model="limited",state="completed"} 14');
  }, 40_000);
});
