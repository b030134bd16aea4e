import type { Client } from './client.js';

export interface LoadtestOptions {
  model: string;
  count: number;
  /** Requests per second; 0 sends as fast as the concurrency allows. */
  rps: number;
  concurrency: number;
  prompt: string;
  maxTokens?: number | undefined;
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/**
 * Sends `count` jobs (paced at `rps` when set), waits for each through its event stream and
 * reports end-to-end latency, time to first token and throughput — the seed's load-test command.
 */
export async function loadtest(client: Client, o: LoadtestOptions, log: (line: string) => void): Promise<Record<string, number>> {
  const latencies: number[] = [];
  const ttfts: number[] = [];
  let failed = 0;
  const errors = new Map<string, number>();
  let tokens = 0;
  const started = Date.now();
  let next = 0;
  const runOne = async (i: number) => {
    const t0 = Date.now();
    try {
      const job = await client.call('POST', '/v1/jobs', { model: o.model, prompt: `${o.prompt} ${i}`, ...(o.maxTokens ? { max_tokens: o.maxTokens } : {}) });
      let first: number | undefined;
      for await (const e of client.events(job.id)) {
        if (e.event === 'token' && first === undefined) first = Date.now();
        if (e.event === 'completed') {
          tokens += e.data.result.usage.completion_tokens;
          latencies.push(Date.now() - t0);
          if (first !== undefined) ttfts.push(first - t0);
          return;
        }
        if (e.event === 'failed' || e.event === 'cancelled') {
          errors.set(e.event, (errors.get(e.event) ?? 0) + 1);
          failed++;
          return;
        }
      }
      errors.set('stream ended without a result', (errors.get('stream ended without a result') ?? 0) + 1);
      failed++;
    } catch (err) {
      const key = (err as Error).message.slice(0, 120);
      errors.set(key, (errors.get(key) ?? 0) + 1);
      failed++;
    }
  };
  const workers = Array.from({ length: Math.max(1, o.concurrency) }, async () => {
    for (;;) {
      const i = next++;
      if (i >= o.count) return;
      if (o.rps > 0) {
        const due = started + (i * 1000) / o.rps - Date.now();
        if (due > 0) await new Promise((r) => setTimeout(r, due));
      }
      await runOne(i);
      if ((i + 1) % Math.max(1, Math.floor(o.count / 10)) === 0) log(`  ${i + 1}/${o.count} sent`);
    }
  });
  await Promise.all(workers);
  const seconds = (Date.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  ttfts.sort((a, b) => a - b);
  for (const [reason, n] of errors) log(`  failed ×${n}: ${reason}`);
  return {
    jobs: o.count,
    completed: latencies.length,
    failed,
    seconds: Number(seconds.toFixed(2)),
    jobs_per_second: Number((latencies.length / seconds).toFixed(2)),
    tokens_per_second: Number((tokens / seconds).toFixed(1)),
    latency_p50_ms: pct(latencies, 50),
    latency_p99_ms: pct(latencies, 99),
    ttft_p50_ms: pct(ttfts, 50),
    ttft_p99_ms: pct(ttfts, 99),
  };
}
