#!/usr/bin/env node
// `npm run bench`: the spine of llmq (enqueue → BullMQ → worker → result) against bare BullMQ,
// plus HTTP ingest through the gateway. One run, one private redis-server, nothing hard-coded:
// every figure printed here was measured in this run.
//
// Knobs (env): BENCH_JOBS (20000), BENCH_CONCURRENCY (50), BENCH_CHUNK (1000 jobs per bulk add),
// BENCH_ROUNDS (3: raw, raw-same, llmq, three times), BENCH_RATE (1000 jobs/s offered in the latency phase),
// BENCH_PACED_S (3), BENCH_MONITOR_JOBS (500; 0 skips the MONITOR command count),
// BENCH_HTTP_S (10), BENCH_HTTP_CONNECTIONS (50), BENCH_HTTP_BATCH (100),
// BENCH_HTTP_MODE (child | inprocess), BENCH_SKIP_HTTP=1, BENCH_OUT (bench-results/spine.json).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { Queue, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { loadConfig } from '@llmq/config';
import { createPlatform } from '@llmq/platform';
import { Producer, createLogger, createRedis, newJobIds, toBullId, waitReady } from '@llmq/queue';
import { startWorker } from '@llmq/worker';
import { serveGateway } from '@llmq/gateway';
import { startBenchRedis } from './lib-redis.mjs';
import { load, loadInChild } from './lib-load.mjs';

const env = process.env;
const int = (v, d) => (v === undefined || v === '' ? d : Math.max(0, Math.floor(Number(v))));
const N = int(env.BENCH_JOBS, 20_000);
const CONCURRENCY = int(env.BENCH_CONCURRENCY, 50);
const CHUNK = Math.max(1, int(env.BENCH_CHUNK, 1000));
const ROUNDS = Math.max(1, int(env.BENCH_ROUNDS, 3));
const RATE = Math.max(100, int(env.BENCH_RATE, 1000));
const PACED_S = Number(env.BENCH_PACED_S ?? 3);
const MONITOR_N = int(env.BENCH_MONITOR_JOBS, 500);
const HTTP_S = Math.max(1, int(env.BENCH_HTTP_S, 10));
const HTTP_WARMUP_S = 2;
const HTTP_CONNECTIONS = Math.max(1, int(env.BENCH_HTTP_CONNECTIONS, 50));
const HTTP_BATCH = Math.max(1, int(env.BENCH_HTTP_BATCH, 100));
const HTTP_MODE = env.BENCH_HTTP_MODE === 'inprocess' ? 'inprocess' : 'child';
const SKIP_HTTP = env.BENCH_SKIP_HTTP === '1';
// Three sides: `raw` (a bare script: auto ids, the echo answer only), `raw-same` (bare BullMQ with
// exactly llmq's payload: the job data llmq stores, llmq-style job ids, a result of llmq's shape) and
// `llmq`. Profiling aid: BENCH_ONLY=llmq (or raw, raw-same) runs one side only; no ratio then.
const ALL_SIDES = ['raw', 'raw-same', 'llmq'];
const SIDES = ALL_SIDES.includes(env.BENCH_ONLY) ? [env.BENCH_ONLY] : ALL_SIDES;
const OUT = resolve(env.BENCH_OUT ?? 'bench-results/spine.json');
const MODEL = 'echo';
const PROMPT = 'Summarise in one line: the quick brown fox jumps over the lazy dog while the old cat watches from the warm windowsill';
const TICK_MS = 10;

const require = createRequire(import.meta.url);
const quiet = createLogger({ level: 'warn', name: 'llmq-bench' });
const say = (...args) => console.log(...args);

// A whole bench that hangs is worse than one that fails.
setTimeout(() => {
  console.error('bench: still running after 6 minutes; giving up');
  process.exit(2);
}, 360_000).unref();

// ---------------------------------------------------------------- helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function percentile(sorted, q) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

function summarise(latencies) {
  const s = Float64Array.from(latencies).sort();
  return { count: s.length, p50: percentile(s, 0.5), p90: percentile(s, 0.9), p99: percentile(s, 0.99), max: percentile(s, 1) };
}

/** `INFO commandstats` → { cmd: { calls, usec } }. Counts include commands run inside Lua scripts. */
function parseCommandStats(info) {
  const out = {};
  for (const line of info.split('\n')) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line.trim());
    if (m) out[m[1]] = { calls: Number(m[2]), usec: Number(m[3]) };
  }
  return out;
}

/** Redis process CPU seconds and its socket reads/writes (Redis ≥ 6), read before and after a phase. */
async function redisCounters(admin) {
  const info = await admin.info();
  const num = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? NaN);
  return { cpu: num('used_cpu_user') + num('used_cpu_sys'), reads: num('total_reads_processed'), writes: num('total_writes_processed') };
}

function redisDelta(a, b, n) {
  return { redis_cpu_us: round(((b.cpu - a.cpu) * 1e6) / n, 1), redis_reads: round((b.reads - a.reads) / n, 2), redis_writes: round((b.writes - a.writes) / n, 2) };
}

/** Commands per job from commandstats; includes the commands run inside Lua scripts. */
function perJob(stats, n) {
  let calls = 0;
  for (const [cmd, { calls: c }] of Object.entries(stats)) if (!cmd.startsWith('config') && cmd !== 'info') calls += c;
  return { commands: round(calls / n, 2) };
}

/** Profiling aid: a script that imports this bench may set globalThis.llmqBenchHooks.phase(side, name, 'start' | 'end'). */
const hook = async (side, name, edge) => globalThis.llmqBenchHooks?.phase?.(side, name, edge);

const round = (x, d = 0) => (x === null || x === undefined || Number.isNaN(x) ? null : Math.round(x * 10 ** d) / 10 ** d);

function echoAnswer(prompt) {
  const words = prompt.split(/\s+/).filter((w) => w.length > 0);
  return { text: words.join(' '), finish_reason: 'stop', usage: { prompt_tokens: words.length, completion_tokens: words.length, total_tokens: 2 * words.length } };
}

/** Counts 'completed' events until a target, failing loudly on any failed job. */
function completionCounter(worker) {
  let count = 0;
  let target = Infinity;
  let settle;
  let failure;
  worker.on('completed', () => {
    count++;
    if (count >= target && settle) {
      settle.resolve();
      settle = undefined;
    }
  });
  worker.on('failed', (job, err) => {
    failure ??= new Error(`job ${job?.id} failed during the bench: ${err?.message}`);
    settle?.reject(failure);
  });
  return {
    /** Resolves once `n` more jobs completed than at the time of the call. */
    waitFor(n, timeoutMs) {
      if (failure) return Promise.reject(failure);
      target = count + n;
      if (count >= target) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${count - (target - n)} of ${n} jobs completed within ${timeoutMs} ms`)), timeoutMs);
        settle = {
          resolve: () => (clearTimeout(timer), resolve()),
          reject: (e) => (clearTimeout(timer), reject(e)),
        };
      });
    },
  };
}

// ---------------------------------------------------------------- the two sides

/**
 * Job options of the raw side. By default the same as llmq's defaults (config/default.yaml:
 * 3 attempts, exponential backoff, completed jobs kept 1 day / 10,000, failed 7 days / 50,000),
 * so both sides ask Redis for the same retention work and the ratio measures llmq's own layer.
 * BENCH_RAW_RETENTION=none gives raw `removeOnComplete: true` (what a bare script might do).
 */
const RAW_OPTS =
  env.BENCH_RAW_RETENTION === 'none'
    ? { removeOnComplete: true }
    : {
        attempts: 3,
        backoff: { type: 'exponential', delay: 1000 },
        removeOnComplete: { age: 86_400, count: 10_000 },
        removeOnFail: { age: 604_800, count: 50_000 },
      };

/**
 * Bare BullMQ: Queue.addBulk + Worker, an echo processor. With `samePayload`, each job carries what
 * llmq stores ({ request, created_at, source }), an id of llmq's form, and the processor returns a
 * result of llmq's shape (usage with total, model, timings, worker): the "same payload" baseline.
 */
async function rawSide(redis, prefix, samePayload = false) {
  const connection = { host: redis.host, port: redis.port, maxRetriesPerRequest: null };
  const queue = new Queue(MODEL, { connection, prefix });
  queue.on('error', (err) => console.error('raw queue error:', err.message));
  await queue.waitUntilReady();
  return {
    name: samePayload ? 'raw-same' : 'raw',
    queue,
    async enqueue(count) {
      const jobs = new Array(count);
      if (samePayload) {
        const ids = newJobIds(count);
        for (let i = 0; i < count; i++) jobs[i] = { name: 'llm', data: { request: { model: MODEL, prompt: PROMPT }, created_at: Date.now(), source: { type: 'http' } }, opts: { ...RAW_OPTS, jobId: toBullId(ids[i]) } };
      } else {
        for (let i = 0; i < count; i++) jobs[i] = { name: 'llm', data: { request: { model: MODEL, prompt: PROMPT }, created_at: Date.now() }, opts: RAW_OPTS };
      }
      await queue.addBulk(jobs);
    },
    async startWorker() {
      const workerId = `${os.hostname()}:${process.pid}`;
      const processor = samePayload
        ? async (job) => {
            const startedAt = Date.now();
            const answer = echoAnswer(job.data.request.prompt);
            return { ...answer, model: MODEL, started_at: startedAt, first_token_at: startedAt, completed_at: Date.now(), worker: workerId };
          }
        : async (job) => echoAnswer(job.data.request.prompt);
      const worker = new Worker(MODEL, processor, { connection, prefix, concurrency: CONCURRENCY });
      worker.on('error', (err) => console.error('raw worker error:', err.message));
      await worker.waitUntilReady();
      return { worker, close: () => worker.close() };
    },
    async close() {
      await queue.close();
    },
  };
}

function llmqConfig(url, prefix) {
  return loadConfig({
    inline: {
      log_level: 'warn',
      redis: { url, prefix },
      worker: { metrics_port: 0 },
      gateway: { batch_limit: Math.max(1000, HTTP_BATCH) },
      models: [{ name: MODEL, backend: 'echo', concurrency: CONCURRENCY, options: { delay_ms: 0 } }],
    },
    env: {},
  });
}

/** llmq: Producer.enqueueBatch (the gateway's batch path) + ModelWorker via startWorker. */
async function llmqSide(redis, prefix) {
  const platform = await createPlatform(llmqConfig(redis.url, prefix));
  const connection = createRedis(redis.url, 'producer');
  connection.on('error', (err) => console.error('llmq producer connection error:', err.message));
  await waitReady(connection);
  const producer = new Producer(platform.config, connection, quiet);
  const queue = producer.queue(MODEL);
  await queue.waitUntilReady();
  return {
    name: 'llmq',
    queue,
    async enqueue(count) {
      const requests = new Array(count);
      for (let i = 0; i < count; i++) requests[i] = { model: MODEL, prompt: PROMPT };
      const results = await producer.enqueueBatch(requests, { source: { type: 'http' } });
      const bad = results.find((r) => 'error' in r);
      if (bad) throw new Error(`llmq enqueueBatch rejected a job: ${bad.error?.message ?? bad.error}`);
    },
    async startWorker() {
      const handle = await startWorker({ platform, logger: quiet, env: {} });
      // The BullMQ Worker inside ModelWorker, only to observe 'active'/'completed' exactly as on
      // the raw side; nothing is changed on it.
      const worker = handle.workers[0]?.worker;
      if (!worker || typeof worker.on !== 'function') throw new Error('cannot observe ModelWorker: its BullMQ Worker is not at .worker any more; update test/bench/spine.mjs');
      await worker.waitUntilReady();
      return { worker, close: () => handle.close(5_000) };
    },
    async close() {
      await producer.close();
      connection.disconnect();
    },
  };
}

// ---------------------------------------------------------------- one measured run

/**
 * 1. enqueue N jobs in bulks of CHUNK into a paused queue (no consumer competes);
 * 2. start the worker, resume, time until all N completed (drain throughput);
 * 3. with the worker idle, offer RATE jobs/s for PACED_S seconds in small bulks every 10 ms
 *    and record enqueue→start latency (job.timestamp → the Worker's 'active' event, which BullMQ
 *    emits right before it calls the processor).
 */
async function runSide(kind, redis, admin, { n, paced, monitor }) {
  const prefix = `bench-${kind}-${Math.random().toString(36).slice(2, 8)}`;
  await admin.flushall();
  const side = kind === 'llmq' ? await llmqSide(redis, prefix) : await rawSide(redis, prefix, kind === 'raw-same');
  await side.queue.pause();

  let phase = 'setup';
  const counts = {};
  if (monitor) {
    monitor.onCommand = (source, cmd) => {
      const bucket = (counts[phase] ??= { client: {}, lua: {} })[source === 'lua' ? 'lua' : 'client'];
      bucket[cmd] = (bucket[cmd] ?? 0) + 1;
    };
  }

  // RESETSTAT zeroes commandstats and the read/write counters (not the CPU), so read after it.
  await admin.config('RESETSTAT');
  const cpu0 = process.cpuUsage();
  const rc0 = await redisCounters(admin);
  if (monitor) {
    await monitor.settle();
    phase = 'enqueue';
  }
  await hook(kind, 'enqueue', 'start');
  const e0 = performance.now();
  for (let done = 0; done < n; done += CHUNK) await side.enqueue(Math.min(CHUNK, n - done));
  const e1 = performance.now();
  await hook(kind, 'enqueue', 'end');
  if (monitor) {
    await monitor.settle();
    phase = 'setup';
  }
  const enqueueStats = parseCommandStats(await admin.info('commandstats'));
  const cpu1 = process.cpuUsage(cpu0);
  const rc1 = await redisCounters(admin);

  const started = await side.startWorker();
  const worker = started.worker;
  const done = completionCounter(worker);
  let latencies = null;
  worker.on('active', (job) => {
    if (latencies) latencies.push(Date.now() - job.timestamp);
  });
  const drained = done.waitFor(n, 120_000);
  await admin.config('RESETSTAT');
  const cpu2base = process.cpuUsage();
  const rc2 = await redisCounters(admin);
  if (monitor) {
    await monitor.settle();
    phase = 'process';
  }
  await hook(kind, 'process', 'start');
  const p0 = performance.now();
  await side.queue.resume();
  await drained;
  const p1 = performance.now();
  await hook(kind, 'process', 'end');
  if (monitor) {
    await monitor.settle();
    phase = 'setup';
  }
  const processStats = parseCommandStats(await admin.info('commandstats'));
  const cpu3 = process.cpuUsage(cpu2base);
  const rc3 = await redisCounters(admin);

  let pacedResult = null;
  if (paced) {
    const perTick = Math.max(1, Math.round((RATE * TICK_MS) / 1000));
    const ticks = Math.max(1, Math.round((PACED_S * 1000) / TICK_MS));
    const total = perTick * ticks;
    latencies = [];
    const finished = done.waitFor(total, 120_000);
    const pending = [];
    const t0 = performance.now();
    for (let i = 0; i < ticks; i++) {
      const wait = t0 + i * TICK_MS - performance.now();
      if (wait > 0) await sleep(wait);
      pending.push(side.enqueue(perTick));
    }
    await Promise.all(pending);
    await finished;
    const t1 = performance.now();
    pacedResult = { offered_jobs_per_s: RATE, jobs: total, achieved_jobs_per_s: round(total / ((t1 - t0) / 1000)), latency_ms: summarise(latencies) };
    latencies = null;
  }

  await started.close();
  await side.close();

  const enqueueS = (e1 - e0) / 1000;
  const processS = (p1 - p0) / 1000;
  return {
    side: kind,
    prefix,
    jobs: n,
    enqueue_jobs_per_s: round(n / enqueueS),
    process_jobs_per_s: round(n / processS),
    end_to_end_jobs_per_s: round(n / (enqueueS + processS)),
    enqueue_s: round(enqueueS, 3),
    process_s: round(processS, 3),
    per_job: {
      enqueue: { ...perJob(enqueueStats, n), node_cpu_us: round((cpu1.user + cpu1.system) / n, 1), ...redisDelta(rc0, rc1, n) },
      process: { ...perJob(processStats, n), node_cpu_us: round((cpu3.user + cpu3.system) / n, 1), ...redisDelta(rc2, rc3, n) },
    },
    commandstats: { enqueue: enqueueStats, process: processStats },
    paced: pacedResult,
    monitor: monitor ? counts : undefined,
  };
}

// ---------------------------------------------------------------- MONITOR: commands per job

/** One MONITOR connection; commands from `ignore` (the bench's own admin client) are skipped. */
async function startMonitor(redis, ignoreAddr) {
  const client = new Redis(redis.url);
  const mon = await client.monitor();
  const state = { onCommand: null, last: 0 };
  mon.on('monitor', (_time, args, source) => {
    state.last = performance.now();
    if (source === ignoreAddr) return;
    state.onCommand?.(source, String(args[0]).toLowerCase());
  });
  return {
    set onCommand(fn) {
      state.onCommand = fn;
    },
    /** Waits until the monitor stream went quiet, so the next phase starts with a clean slate. */
    async settle() {
      const start = performance.now();
      do await sleep(50);
      while (performance.now() - state.last < 100 && performance.now() - start < 2_000);
    },
    async stop() {
      mon.disconnect();
      client.disconnect();
    },
  };
}

function monitorPerJob(counts, n) {
  const rows = {};
  let client = 0;
  let lua = 0;
  for (const [phase, { client: c = {}, lua: l = {} } = {}] of Object.entries(counts).filter(([p]) => p !== 'setup')) {
    for (const [cmd, k] of Object.entries(c)) {
      rows[`${phase} ${cmd}`] = round(k / n, 3);
      client += k;
    }
    for (const k of Object.values(l)) lua += k;
  }
  return { client_per_job: round(client / n, 2), in_lua_per_job: round(lua / n, 2), client_by_command: rows };
}

// ---------------------------------------------------------------- HTTP ingest

async function httpIngest(redis, admin) {
  await admin.flushall();
  const platform = await createPlatform(llmqConfig(redis.url, 'bench-http'));
  // 'error': the gateway's "no API keys" warning is expected here and would only clutter the output.
  const served = await serveGateway({ platform, logger: createLogger({ level: 'error', name: 'llmq-bench-gateway' }), port: 0, host: '127.0.0.1' });
  const queue = served.gateway.producer.queue(MODEL);
  const run = HTTP_MODE === 'child' ? loadInChild : load;
  const single = JSON.stringify({ model: MODEL, prompt: PROMPT });
  const batch = JSON.stringify({ jobs: Array.from({ length: HTTP_BATCH }, () => ({ model: MODEL, prompt: PROMPT })) });
  const out = {};
  try {
    for (const [name, path, body, jobsPerRequest] of [
      ['POST /v1/jobs', '/v1/jobs', single, 1],
      [`POST /v1/jobs/batch (${HTTP_BATCH}/req)`, '/v1/jobs/batch', batch, HTTP_BATCH],
    ]) {
      const url = `${served.url}${path}`;
      await run({ url, body, connections: HTTP_CONNECTIONS, duration: HTTP_WARMUP_S });
      const before = await queue.getWaitingCount();
      const cpu0 = process.cpuUsage();
      const r = await run({ url, body, connections: HTTP_CONNECTIONS, duration: HTTP_S });
      const cpu = process.cpuUsage(cpu0);
      const inRedis = (await queue.getWaitingCount()) - before;
      out[name] = {
        ...r,
        requests_per_s: round(r.ok_2xx / r.duration_s),
        jobs_per_s: round((r.ok_2xx * jobsPerRequest) / r.duration_s),
        jobs_in_redis: inRedis,
        jobs_in_redis_per_s: round(inRedis / r.duration_s),
        gateway_process_cpu_s: round((cpu.user + cpu.system) / 1e6, 2),
      };
      await admin.flushall();
    }
  } finally {
    await served.close();
  }
  return out;
}

// ---------------------------------------------------------------- main

function fmt(x, d = 0) {
  if (x === null || x === undefined) return '-';
  return typeof x === 'number' ? x.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }) : String(x);
}

function table(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ')).join('\n');
}

function gitCommit() {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}

async function main() {
  const startedAt = Date.now();
  const redis = await startBenchRedis();
  const admin = new Redis(redis.url);
  const adminAddr = /addr=(\S+)/.exec(await admin.client('INFO'))?.[1];
  const meta = {
    at: new Date(startedAt).toISOString(),
    commit: gitCommit(),
    node: process.version,
    bullmq: require('bullmq/package.json').version,
    redis: redis.version,
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model ?? null,
    jobs: N,
    concurrency: CONCURRENCY,
    bulk: CHUNK,
    rounds: ROUNDS,
    paced: { offered_jobs_per_s: RATE, seconds: PACED_S },
    http: { mode: HTTP_MODE, seconds: HTTP_S, connections: HTTP_CONNECTIONS, batch: HTTP_BATCH },
  };
  say(`llmq spine bench — node ${meta.node}, bullmq ${meta.bullmq}, redis ${meta.redis} (private, port ${redis.port}, no persistence), ${meta.cpus} CPUs`);
  say(`${N} jobs per run, concurrency ${CONCURRENCY}, bulks of ${CHUNK}; rounds: ${Array.from({ length: ROUNDS }, () => SIDES.join(', ')).join(', ')}\n`);

  const runs = [];
  try {
    for (let round_ = 1; round_ <= ROUNDS; round_++) {
      for (const kind of SIDES) {
        const r = await runSide(kind, redis, admin, { n: N, paced: true });
        r.round = round_;
        runs.push(r);
        say(
          `  round ${round_} ${kind.padEnd(8)}: enqueue ${fmt(r.enqueue_jobs_per_s)} jobs/s, process ${fmt(r.process_jobs_per_s)} jobs/s, ` +
            `end-to-end ${fmt(r.end_to_end_jobs_per_s)} jobs/s; paced ${fmt(r.paced.achieved_jobs_per_s)} jobs/s → start p50 ${fmt(r.paced.latency_ms.p50)} ms, p99 ${fmt(r.paced.latency_ms.p99)} ms`,
        );
      }
    }

    if (SIDES.length === 1) {
      say(`\nBENCH_ONLY=${SIDES[0]}: one side only, no comparison.`);
      say(JSON.stringify(runs.map(({ commandstats: _c, ...r }) => r)));
      return;
    }
    // Best of the rounds, metric by metric (highest rate, lowest latency); every run is in the JSON.
    const best = (kind) => {
      const rs = runs.filter((r) => r.side === kind);
      const max = (f) => Math.max(...rs.map(f));
      const min = (f) => Math.min(...rs.map(f));
      return {
        enqueue_jobs_per_s: max((r) => r.enqueue_jobs_per_s),
        process_jobs_per_s: max((r) => r.process_jobs_per_s),
        end_to_end_jobs_per_s: max((r) => r.end_to_end_jobs_per_s),
        paced_p50_ms: min((r) => r.paced.latency_ms.p50),
        paced_p99_ms: min((r) => r.paced.latency_ms.p99),
        enqueue_commands_per_job: rs[0].per_job.enqueue.commands,
        process_commands_per_job: rs[0].per_job.process.commands,
        enqueue_redis_cpu_us_per_job: min((r) => r.per_job.enqueue.redis_cpu_us),
        process_redis_cpu_us_per_job: min((r) => r.per_job.process.redis_cpu_us),
        enqueue_redis_reads_per_job: rs[0].per_job.enqueue.redis_reads,
        process_redis_reads_per_job: rs[0].per_job.process.redis_reads,
        enqueue_node_cpu_us_per_job: min((r) => r.per_job.enqueue.node_cpu_us),
        process_node_cpu_us_per_job: min((r) => r.per_job.process.node_cpu_us),
      };
    };
    const raw = best('raw');
    const same = best('raw-same');
    const llmq = best('llmq');
    const ratiosTo = (base) => {
      const ratio = (k) => round(llmq[k] / base[k], 2);
      return { enqueue: ratio('enqueue_jobs_per_s'), process: ratio('process_jobs_per_s'), end_to_end: ratio('end_to_end_jobs_per_s') };
    };
    // The target (≥ 0.9× raw BullMQ with the same payload) is judged against raw-same; the ratios
    // to the minimal script are printed next to them, and the two raw columns show what llmq's
    // payload (its ids, source, result fields) costs BullMQ and Redis by itself.
    const ratios = ratiosTo(same);
    const ratiosMinimal = ratiosTo(raw);

    let monitor = null;
    if (MONITOR_N > 0) {
      say(`\n  counting Redis commands per job with MONITOR (${MONITOR_N} jobs per side, not timed)…`);
      monitor = {};
      for (const kind of ALL_SIDES) {
        const mon = await startMonitor(redis, adminAddr);
        const r = await runSide(kind, redis, admin, { n: MONITOR_N, paced: false, monitor: mon });
        await mon.stop();
        monitor[kind] = monitorPerJob(r.monitor, MONITOR_N);
      }
    }

    let http = null;
    if (!SKIP_HTTP) {
      say(`\n  HTTP ingest: gateway in this process, autocannon ${HTTP_MODE === 'child' ? 'in a child process' : 'in this process'}, ${HTTP_CONNECTIONS} connections, ${HTTP_WARMUP_S} s warm-up + ${HTTP_S} s per endpoint, no worker…`);
      http = await httpIngest(redis, admin);
    }

    // ------------------------------------------------------------ report
    say('\nSpine: bare BullMQ vs llmq (best of ' + ROUNDS + ' rounds per metric: highest rate, lowest latency)\n');
    say(
      table([
        ['metric', 'raw BullMQ', 'raw, same payload', 'llmq', 'llmq/raw same', 'llmq/raw'],
        ['enqueue jobs/s (bulk ' + CHUNK + ', paused queue)', fmt(raw.enqueue_jobs_per_s), fmt(same.enqueue_jobs_per_s), fmt(llmq.enqueue_jobs_per_s), fmt(ratios.enqueue, 2), fmt(ratiosMinimal.enqueue, 2)],
        ['process jobs/s (drain ' + N + ', conc ' + CONCURRENCY + ')', fmt(raw.process_jobs_per_s), fmt(same.process_jobs_per_s), fmt(llmq.process_jobs_per_s), fmt(ratios.process, 2), fmt(ratiosMinimal.process, 2)],
        ['end-to-end jobs/s (enqueue + drain)', fmt(raw.end_to_end_jobs_per_s), fmt(same.end_to_end_jobs_per_s), fmt(llmq.end_to_end_jobs_per_s), fmt(ratios.end_to_end, 2), fmt(ratiosMinimal.end_to_end, 2)],
        ...[
          [`enqueue→start p50 ms (@${RATE} jobs/s)`, 'paced_p50_ms', 0],
          [`enqueue→start p99 ms (@${RATE} jobs/s)`, 'paced_p99_ms', 0],
          ['Redis commands/job, enqueue (incl. in Lua)', 'enqueue_commands_per_job', 1],
          ['Redis commands/job, process (incl. in Lua)', 'process_commands_per_job', 1],
          ['Redis socket reads/job, enqueue', 'enqueue_redis_reads_per_job', 2],
          ['Redis socket reads/job, process', 'process_redis_reads_per_job', 2],
          ['Redis CPU µs/job, enqueue', 'enqueue_redis_cpu_us_per_job', 1],
          ['Redis CPU µs/job, process', 'process_redis_cpu_us_per_job', 1],
          ['Node CPU µs/job, enqueue', 'enqueue_node_cpu_us_per_job', 1],
          ['Node CPU µs/job, process', 'process_node_cpu_us_per_job', 1],
        ].map(([label, k, d]) => [label, fmt(raw[k], d), fmt(same[k], d), fmt(llmq[k], d), '', '']),
      ]),
    );
    const verdict = ratios.end_to_end >= 0.9 && ratios.process >= 0.9 ? 'meets' : 'is BELOW';
    say(`\nllmq ${verdict} the 0.9× target against raw BullMQ with the same payload (end-to-end ${fmt(ratios.end_to_end, 2)}×, process ${fmt(ratios.process, 2)}×, enqueue ${fmt(ratios.enqueue, 2)}×).`);
    say(`Against the minimal raw script: end-to-end ${fmt(ratiosMinimal.end_to_end, 2)}×, process ${fmt(ratiosMinimal.process, 2)}×, enqueue ${fmt(ratiosMinimal.enqueue, 2)}× (the gap between the two raw columns is what llmq's payload costs BullMQ and Redis).`);
    say(`Raw: Queue.addBulk + Worker, auto ids, job options ${JSON.stringify(RAW_OPTS)}, data { request: { model, prompt }, created_at }, returns { text, finish_reason, usage }.`);
    say('Raw, same payload: the same, with data { request, created_at, source } as llmq stores it, llmq-style job ids, and a result of llmq\'s shape (usage.total_tokens, model, started_at, first_token_at, completed_at, worker).');
    say("llmq: Producer.enqueueBatch (ids, hash, defaults, attempts/backoff/retention opts) + ModelWorker via startWorker (events, metrics, timeout, cancel tracking, default retention).");

    if (monitor) {
      say(`\nRedis commands per job sent by clients (MONITOR, ${MONITOR_N} jobs; commands inside Lua scripts counted apart)\n`);
      const cmds = [...new Set([...Object.keys(monitor.raw.client_by_command), ...Object.keys(monitor.llmq.client_by_command)])].sort();
      say(
        table([
          ['phase command', 'raw', 'raw-same', 'llmq'],
          ...cmds.map((c) => [c, ...ALL_SIDES.map((k) => fmt(monitor[k].client_by_command[c] ?? 0, 3))]),
          ['total sent by clients', ...ALL_SIDES.map((k) => fmt(monitor[k].client_per_job, 2))],
          ['run inside Lua scripts', ...ALL_SIDES.map((k) => fmt(monitor[k].in_lua_per_job, 2))],
        ]),
      );
    }

    if (http) {
      say(`\nHTTP ingest (gateway + Redis + load generator share ${meta.cpus} CPUs; autocannon ${HTTP_MODE === 'child' ? 'in a child process' : 'in the gateway process'})\n`);
      say(
        table([
          ['endpoint', 'req/s', 'jobs/s', 'jobs in Redis', 'p50 ms', 'p99 ms', 'non-2xx', 'errors'],
          ...Object.entries(http).map(([name, r]) => [name, fmt(r.requests_per_s), fmt(r.jobs_per_s), fmt(r.jobs_in_redis), fmt(r.latency_ms.p50), fmt(r.latency_ms.p99), fmt(r.non_2xx), fmt(r.errors + r.timeouts)]),
        ]),
      );
    }

    const result = {
      bench: 'spine',
      meta: { ...meta, duration_s: round((Date.now() - startedAt) / 1000, 1), summary: 'best of rounds per metric (max rate, min latency)' },
      raw,
      raw_same_payload: same,
      llmq,
      ratio: ratios,
      ratio_to_minimal_raw: ratiosMinimal,
      meets_target_0_9: ratios.end_to_end >= 0.9 && ratios.process >= 0.9,
      runs: runs.map(({ commandstats, monitor: _m, ...r }) => ({ ...r, commandstats })),
      commands_per_job_monitor: monitor,
      http,
    };
    mkdirSync(dirname(OUT), { recursive: true });
    writeFileSync(OUT, `${JSON.stringify(result, null, 2)}\n`);
    say(`\nwritten ${OUT} (${result.meta.duration_s} s)`);
    say(JSON.stringify({ bench: 'spine', raw, raw_same_payload: same, llmq, ratio: ratios, ratio_to_minimal_raw: ratiosMinimal, meets_target_0_9: result.meets_target_0_9, commands_per_job_monitor: monitor && Object.fromEntries(Object.entries(monitor).map(([k, m]) => [k, { client: m.client_per_job, lua: m.in_lua_per_job }])), http: http && Object.fromEntries(Object.entries(http).map(([k, r]) => [k, { requests_per_s: r.requests_per_s, jobs_per_s: r.jobs_per_s, p50_ms: r.latency_ms.p50, p99_ms: r.latency_ms.p99, non_2xx: r.non_2xx }])), meta: result.meta }));
  } finally {
    admin.disconnect();
    await redis.stop();
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error('bench failed:', err);
    process.exit(1);
  },
);
