import { afterEach, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, silentLogger, type AdapterContext, type GenerateOutput } from '@llmq/core';
import { startFaultServer, type FaultServer, type FaultServerOptions } from '@llmq/testing';
import { textSynthBackend, textSynthConfigSchema, type TextSynthBackend } from './index.js';

const ctx: AdapterContext = { logger: silentLogger, signal: new AbortController().signal, configDir: '.', env: {} };

const servers: FaultServer[] = [];
const backends: TextSynthBackend[] = [];

afterEach(async () => {
  await Promise.all(backends.splice(0).map((b) => b.close()));
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

async function cluster(n: number, options: FaultServerOptions = {}): Promise<FaultServer[]> {
  const started = await Promise.all(Array.from({ length: n }, () => startFaultServer(options)));
  servers.push(...started);
  return started;
}

function backend(at: FaultServer[], options: Record<string, unknown> = {}): TextSynthBackend {
  const config = textSynthConfigSchema.parse({ servers: at.map((s) => ({ url: s.url })), engine: 'eng', health_check_interval_ms: 100, health_check_timeout_ms: 200, ...options });
  const b = textSynthBackend.create({ name: 'ts', config, concurrency: 8 }, ctx) as TextSynthBackend;
  backends.push(b);
  return b;
}

function generate(b: TextSynthBackend, prompt: string, signal = new AbortController().signal, onToken: (t: string) => void = () => {}): Promise<GenerateOutput> {
  return b.generate({ jobId: prompt, attempt: 1, model: 'm', request: { model: 'm', prompt }, signal, logger: silentLogger, onToken });
}

/** Runs `total` jobs through `workers` parallel loops, like a worker at that concurrency. */
async function runJobs(total: number, workers: number, job: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < total) await job(next++);
    }),
  );
}

async function until(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const generations = (s: FaultServer) => s.count('textsynth.completions');

describe('textsynth cluster', () => {
  it('spreads sequential requests evenly (ties broken round-robin)', async () => {
    const three = await cluster(3);
    const b = backend(three);
    for (let i = 0; i < 30; i++) await generate(b, `job ${i}`);
    expect(three.map(generations)).toEqual([10, 10, 10]);
    expect(b.stats().servers.map((s) => s.requests)).toEqual([10, 10, 10]);
  });

  it('sends each request to the least busy server', async () => {
    const three = await cluster(3);
    const b = backend(three);
    // Server 0 answers slowly, so it keeps one request outstanding while the others finish theirs.
    three[0]?.script({ type: 'ok', tokenDelayMs: 100, times: 100 });
    await runJobs(30, 3, async (i) => {
      await generate(b, `w ${i} x y`);
    });
    const counts = three.map(generations);
    expect(counts.reduce((a, c) => a + c, 0)).toBe(30);
    expect(counts[0]).toBeLessThan(counts[1] ?? 0);
    expect(counts[0]).toBeLessThan(counts[2] ?? 0);
  });

  it('honours max_concurrency per server and queues the rest', async () => {
    const two = await cluster(2, { tokenDelayMs: 20 });
    const b = backend(two, { max_concurrency: 2 });
    let maxWaiting = 0;
    const watch = setInterval(() => {
      maxWaiting = Math.max(maxWaiting, b.stats().waiting);
    }, 5);
    try {
      const outs = await Promise.all(Array.from({ length: 16 }, (_, i) => generate(b, `a b c d e ${i}`)));
      expect(outs.every((o) => o.finish_reason === 'stop')).toBe(true);
    } finally {
      clearInterval(watch);
    }
    expect(two.map((s) => s.maxInFlight)).toEqual([2, 2]);
    expect(maxWaiting).toBeGreaterThan(0);
    expect(b.stats()).toMatchObject({ waiting: 0, servers: [{ in_flight: 0, max_concurrency: 2 }, { in_flight: 0, max_concurrency: 2 }] });
  });

  it('a request waiting for a slot gives up at once when its signal aborts', async () => {
    const [one] = await cluster(1);
    const b = backend([one!], { max_concurrency: 1 });
    one?.script({ type: 'ok', tokenDelayMs: 50 });
    const busy = generate(b, 'a b c d e f');
    await until(() => b.stats().servers[0]?.in_flight === 1);
    const controller = new AbortController();
    const waiting = generate(b, 'queued', controller.signal);
    await until(() => b.stats().waiting === 1);
    const reason = new Error('cancelled while queued');
    controller.abort(reason);
    await expect(waiting).rejects.toBe(reason);
    expect(b.stats().waiting).toBe(0);
    await busy;
    expect(generations(one!)).toBe(1);
  });

  it('retries a 500 on another server within the same attempt, then re-admits the failed one', async () => {
    const three = await cluster(3);
    const b = backend(three);
    three[0]?.script({ type: 'status', status: 500 });
    const out = await generate(b, 'hello there');
    expect(out.text).toBe('hello there');
    expect(generations(three[0]!) + generations(three[1]!) + generations(three[2]!)).toBe(2);
    expect(b.stats().servers[0]).toMatchObject({ failures: 1, marked_unhealthy: 1 });
    // Its health checks still pass (only the generation failed), so it comes back.
    await until(() => b.stats().servers[0]?.healthy === true);
  });

  it('a cut before any token is retried on another server; after tokens it is not (they would repeat)', async () => {
    const two = await cluster(2);
    const b = backend(two);
    two[0]?.script({ type: 'cut', afterChunks: 0 });
    const tokens: string[] = [];
    const out = await generate(b, 'p q r', undefined, (t) => tokens.push(t));
    expect(out.text).toBe('p q r');
    expect(tokens.join('')).toBe('p q r');
    expect(generations(two[0]!) + generations(two[1]!)).toBe(2);

    await until(() => b.stats().servers.every((s) => s.healthy));
    for (const s of two) {
      s.resetCounters();
      s.script({ type: 'cut', afterChunks: 2 });
    }
    const seen: string[] = [];
    const err = await generate(b, 'a b c d e', undefined, (t) => seen.push(t)).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_BACKEND_STREAM_CUT');
    expect(seen).toEqual(['a', ' b']);
    expect(generations(two[0]!) + generations(two[1]!)).toBe(1);
  });

  it('stays up when a server is killed mid-run: all jobs complete, the dead one is taken out and re-admitted', async () => {
    const three = await cluster(3, { tokenDelayMs: 5 });
    const [, victim] = three;
    const b = backend(three, { stream: false });
    const done: string[] = [];
    let killedAt = -1;
    const run = runJobs(90, 6, async (i) => {
      const out = await generate(b, `job ${i} a b c d`);
      done.push(out.text);
    });
    await until(() => done.length >= 15 && (victim?.inFlight ?? 0) > 0);
    await victim!.kill();
    killedAt = done.length;
    await run;

    expect(done).toHaveLength(90);
    expect(killedAt).toBeLessThan(90);
    const after = b.stats().servers;
    expect(after[1]).toMatchObject({ healthy: false });
    // Requests it was answering when it died were failed over within their attempt.
    expect(after[1]!.failures).toBeGreaterThan(0);
    // Everyone got work before the kill; the survivors carried the rest.
    expect(after.map((s) => s.requests).every((n) => n > 0)).toBe(true);
    expect(after[0]!.requests + after[2]!.requests).toBeGreaterThan(after[1]!.requests);

    const deadCount = generations(victim!);
    await victim!.revive();
    await until(() => b.stats().servers[1]?.healthy === true);
    for (let i = 0; i < 9; i++) await generate(b, `after ${i}`);
    expect(generations(victim!)).toBeGreaterThan(deadCount);
  });

  it('streaming: a kill mid-answer surfaces as a retryable cut; retried like the queue would, every job completes', async () => {
    const three = await cluster(3, { tokenDelayMs: 10 });
    const b = backend(three);
    let cuts = 0;
    const done: string[] = [];
    const runJob = async (i: number) => {
      for (let attempt = 1; ; attempt++) {
        try {
          done.push((await generate(b, `job ${i} a b c d e f`)).text);
          return;
        } catch (err) {
          if (!isRetryable(err) || attempt >= 3) throw err;
          if (errorCode(err) === 'ERR_BACKEND_STREAM_CUT') cuts++;
        }
      }
    };
    const run = runJobs(45, 6, runJob);
    // Kill it while it is streaming an answer (its first chunk goes out at once, the rest 10 ms apart).
    await until(() => done.length >= 6 && (three[2]?.inFlight ?? 0) > 0, 5000);
    await sleep(15);
    await three[2]!.kill();
    await run;
    expect(done).toHaveLength(45);
    expect(cuts).toBeGreaterThan(0);
    expect(b.stats().servers[2]?.healthy).toBe(false);
  });

  it('fails fast with ERR_BACKEND_UNAVAILABLE when every server is down', async () => {
    const three = await cluster(3);
    await Promise.all(three.map((s) => s.kill()));
    const b = backend(three);
    const started = Date.now();
    const err = await generate(b, 'x').catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_BACKEND_UNAVAILABLE');
    expect(isRetryable(err)).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(b.check()).rejects.toMatchObject({ code: 'ERR_BACKEND_UNAVAILABLE' });
  });

  it('gives up after retry_other_server extra servers', async () => {
    const three = await cluster(3);
    for (const s of three) s.script({ type: 'status', status: 503 });
    const b = backend(three, { retry_other_server: 1 });
    const err = await generate(b, 'x').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_BACKEND_UNAVAILABLE', details: { last_code: 'ERR_BACKEND_UNAVAILABLE' } });
    expect(three.reduce((n, s) => n + generations(s), 0)).toBe(2);
  });

  it('check() passes while one server is alive', async () => {
    const three = await cluster(3);
    await three[0]!.kill();
    await three[1]!.kill();
    const b = backend(three);
    await b.check();
    expect(b.stats().servers.map((s) => s.healthy)).toEqual([false, false, true]);
  });

  it('probes every server on the interval, and close() stops it', async () => {
    const two = await cluster(2);
    const b = backend(two);
    await until(() => two.every((s) => s.count('textsynth.engines') >= 2));
    await b.close();
    await sleep(50);
    const counts = two.map((s) => s.count('textsynth.engines'));
    await sleep(300);
    expect(two.map((s) => s.count('textsynth.engines'))).toEqual(counts);
    await expect(generate(b, 'x')).rejects.toMatchObject({ code: 'ERR_BACKEND_UNAVAILABLE' });
  });
});
