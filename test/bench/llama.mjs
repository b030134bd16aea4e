// npm run bench:llama — local inference: direct node-llama-cpp vs llmq (HTTP → Redis → worker → SSE).
// Same model, same threads, same context size and sampling (greedy) on both sides, for N = 1, 2, 4, 8
// concurrent requests: tokens/s, time to first token, and the llmq/direct ratio; worker RSS at N=1 and N=8.
// Model: BENCH_GGUF, else LLMQ_TEST_GGUF, else the tiny GGUF the test kit generates.
// Knobs: BENCH_TOKENS (64), BENCH_THREADS (physical cores), BENCH_NS (1,2,4,8), BENCH_ROUNDS (2), BENCH_CTX (512).
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { getLlama, LlamaCompletion, LlamaLogLevel } from 'node-llama-cpp';
import { Registry } from 'prom-client';
import { loadConfig } from '@llmq/config';
import { silentLogger } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { serveGateway } from '@llmq/gateway';
import { physicalCoreCount } from '@llmq/backend-llama-cpp';
import { generateTinyGguf, startRedis } from '@llmq/testing';

const env = process.env;
const TOKENS = Number(env.BENCH_TOKENS ?? 64);
const THREADS = Number(env.BENCH_THREADS ?? physicalCoreCount());
const NS = (env.BENCH_NS ?? '1,2,4,8').split(',').map(Number);
const ROUNDS = Number(env.BENCH_ROUNDS ?? 2);
const CTX = Number(env.BENCH_CTX ?? 512);
const PROMPT = 'Once upon a time, in a queue far away,';
const model = env.BENCH_GGUF ?? env.LLMQ_TEST_GGUF ?? (await generateTinyGguf());
const say = (s = '') => console.log(s);
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

say(`llmq llama bench — model ${model}, threads ${THREADS}, context ${CTX}/sequence, ${TOKENS} tokens/request, greedy, rounds ${ROUNDS}`);

/** Direct: one model, one context with N sequences, N completions at once. */
async function direct(n) {
  const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, maxThreads: THREADS });
  const m = await llama.loadModel({ modelPath: model, gpuLayers: 0 });
  const context = await m.createContext({ contextSize: CTX, sequences: n, threads: THREADS });
  const sequences = Array.from({ length: n }, () => context.getSequence());
  const results = [];
  for (let r = 0; r < ROUNDS; r++) {
    await Promise.all(sequences.map((seq) => seq.clearHistory()));
    const started = performance.now();
    const runs = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const seq = sequences[i];
        const completion = new LlamaCompletion({ contextSequence: seq, autoDisposeSequence: false });
        let first;
        let chunks = 0;
        const t0 = performance.now();
        const text = await completion.generateCompletion(`${PROMPT} ${i}`, {
          maxTokens: TOKENS,
          temperature: 0,
          onToken: (t) => {
            chunks += t.length;
            first ??= performance.now() - t0;
          },
        });
        const tokens = chunks || m.tokenize(text).length;
        completion.dispose();
        return { first, tokens };
      }),
    );
    const wall = (performance.now() - started) / 1000;
    const tokens = runs.reduce((a, x) => a + x.tokens, 0);
    results.push({ tps: tokens / wall, ttft: median(runs.map((x) => x.first ?? NaN)), tokens });
  }
  await context.dispose();
  await m.dispose();
  await llama.dispose();
  return best(results);
}

function best(results) {
  return { tps: Math.max(...results.map((r) => r.tps)), ttft: Math.min(...results.map((r) => r.ttft)), tokens: results.at(-1).tokens };
}

function rssOf(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]) * 1024;
}

/** llmq: gateway in this process, a worker child process serving a llama-cpp model of concurrency N. */
async function viaLlmq(n, redis) {
  const dir = mkdtempSync(join(tmpdir(), 'llmq-bench-llama-'));
  const prefix = `b${n}${Math.random().toString(36).slice(2, 6)}`;
  const config = {
    log_level: 'warn',
    redis: { url: redis.url, prefix },
    gateway: { port: 0, host: '127.0.0.1' },
    worker: { metrics_port: 0, watchdog_ms: 0 },
    models: [{ name: 'local', backend: 'llama-cpp', concurrency: n, timeout_ms: 600_000, options: { model_path: resolve(model), context_size: CTX, threads: THREADS, gpu: false } }],
  };
  const configPath = join(dir, 'llmq.yaml');
  writeFileSync(configPath, JSON.stringify(config));
  const platform = await createPlatform(loadConfig({ path: configPath, env: {} }));
  const gw = await serveGateway({ platform, logger: silentLogger, registry: new Registry() });
  const worker = spawn(process.execPath, ['apps/worker/dist/main.js'], { env: { ...process.env, LLMQ_CONFIG: configPath, LLMQ_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  worker.stdout.on('data', (d) => (out += d));
  while (!out.includes('worker ready')) {
    if (worker.exitCode !== null) throw new Error(`worker exited: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const one = async (i) => {
    const t0 = performance.now();
    const res = await fetch(`${gw.url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'local', prompt: `${PROMPT} ${i}`, max_tokens: TOKENS, temperature: 0 }),
    });
    const { id } = await res.json();
    const sse = await fetch(`${gw.url}/v1/jobs/${id}/events`);
    const decoder = new TextDecoder();
    let buf = '';
    let first;
    let result;
    for await (const chunk of sse.body) {
      buf += decoder.decode(chunk, { stream: true });
      if (first === undefined && buf.includes('event: token')) first = performance.now() - t0;
      if (buf.includes('event: completed')) {
        const m = /event: completed\ndata: (.*)\n/.exec(buf);
        if (m) {
          result = JSON.parse(m[1]).result;
          break;
        }
      }
      if (buf.includes('event: failed')) throw new Error(`job failed: ${buf}`);
    }
    return { first, tokens: result.usage.completion_tokens };
  };
  // Warm-up request (model load happens at worker start; this settles the first decode).
  await one(-1);
  const results = [];
  for (let r = 0; r < ROUNDS; r++) {
    const started = performance.now();
    const runs = await Promise.all(Array.from({ length: n }, (_, i) => one(i)));
    const wall = (performance.now() - started) / 1000;
    const tokens = runs.reduce((a, x) => a + x.tokens, 0);
    results.push({ tps: tokens / wall, ttft: median(runs.map((x) => x.first)), tokens });
  }
  const rss = rssOf(worker.pid);
  worker.kill('SIGTERM');
  await new Promise((r) => worker.once('exit', r));
  await gw.close();
  return { ...best(results), rss };
}

const redis = await startRedis();
const rows = [];
try {
  for (const n of NS) {
    // Alternate sides so background load hits both alike.
    const d = await direct(n);
    const l = await viaLlmq(n, redis);
    rows.push({ n, direct: d, llmq: l, ratio: l.tps / d.tps });
    say(`  N=${n}: direct ${d.tps.toFixed(1)} tok/s (TTFT ${d.ttft.toFixed(0)} ms), llmq ${l.tps.toFixed(1)} tok/s (TTFT ${l.ttft.toFixed(0)} ms), ratio ${(l.tps / d.tps).toFixed(2)}`);
  }
} finally {
  await redis.stop();
}
say('\nN   direct tok/s  llmq tok/s  llmq/direct  TTFT direct ms  TTFT llmq ms  worker RSS MiB');
for (const r of rows) {
  say(`${String(r.n).padEnd(4)}${r.direct.tps.toFixed(1).padStart(12)}${r.llmq.tps.toFixed(1).padStart(12)}${r.ratio.toFixed(2).padStart(13)}${r.direct.ttft.toFixed(0).padStart(16)}${r.llmq.ttft.toFixed(0).padStart(14)}${(r.llmq.rss / 1048576).toFixed(0).padStart(16)}`);
}
const min = Math.min(...rows.map((r) => r.ratio));
say(`\nlowest llmq/direct ratio ${min.toFixed(2)} (target ≥ 0.95): ${min >= 0.95 ? 'meets' : 'BELOW'} target. TTFT for llmq is measured from the HTTP POST (enqueue, worker pickup, SSE), direct from the call.`);
mkdirSync('bench-results', { recursive: true });
writeFileSync('bench-results/llama.json', JSON.stringify({ bench: 'llama', model, threads: THREADS, tokens: TOKENS, context: CTX, rows, at: new Date().toISOString() }, null, 2));
say('written bench-results/llama.json');
