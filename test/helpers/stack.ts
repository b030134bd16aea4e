import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { loadConfig } from '@llmq/config';
import { silentLogger, type Logger } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { readSseEvents } from '@llmq/cli';
import { serveGateway, type ServedGateway } from '@llmq/gateway';
import { startRedis, type TestRedis } from '@llmq/testing';
import { TEST_PLUGIN_SOURCE } from './plugin-source.js';
import { WORKER_MAIN } from './processes.js';

export { REPO } from './processes.js';

export interface WorkerProcess {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  kill(signal?: NodeJS.Signals): void;
}

export interface Stack {
  redis: TestRedis;
  dir: string;
  configPath: string;
  prefix: string;
  gateway: ServedGateway;
  /** What the gateway logged at warn and above. */
  gatewayLogs: { level: string; obj: Record<string, unknown>; msg: string | undefined }[];
  url: string;
  workers: WorkerProcess[];
  spawnWorker(env?: Record<string, string>): Promise<WorkerProcess>;
  http(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any; headers: Headers }>;
  waitFor(id: string, statuses: string[], timeoutMs?: number): Promise<any>;
  close(): Promise<void>;
}

export interface StackOptions {
  /** Config merged over the defaults below (models replace the defaults when given). */
  config?: Record<string, unknown>;
  redis?: TestRedis;
  workers?: number;
  env?: Record<string, string>;
}

/** Writes the test plugin outside the workspace and returns its path. */
export function writeTestPlugin(dir: string): string {
  const path = join(dir, 'scripted-plugin.mjs');
  writeFileSync(path, TEST_PLUGIN_SOURCE);
  return path;
}

/**
 * A whole llmq on a private redis-server: the gateway in this process, workers as child
 * processes (so kill -9 is real), one temp dir with config and plugin.
 */
export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const redis = options.redis ?? (await startRedis());
  const dir = mkdtempSync(join(tmpdir(), 'llmq-stack-'));
  const prefix = `t${Math.random().toString(36).slice(2, 8)}`;
  const plugin = writeTestPlugin(dir);
  const base = {
    log_level: 'warn',
    redis: { url: redis.url, prefix },
    gateway: { port: 0, host: '127.0.0.1' },
    worker: { metrics_port: 0, shutdown_grace_ms: 10_000, watchdog_ms: 0 },
    queue: { backoff_ms: 50, lock_duration_ms: 3_000, stalled_interval_ms: 1_000, max_stalled_count: 10 },
    plugins: [plugin],
    models: [
      { name: 'echo', backend: 'echo', concurrency: 16 },
      { name: 'echo-slow', backend: 'echo', concurrency: 4, options: { delay_ms: 0, tokens_per_second: 20 } },
      { name: 'scripted', backend: 'test-scripted', concurrency: 8, attempts: 3 },
    ],
  };
  const merged: Record<string, any> = { ...base, ...options.config };
  for (const key of ['redis', 'gateway', 'worker', 'queue'] as const) {
    merged[key] = { ...(base as any)[key], ...((options.config?.[key] as object | undefined) ?? {}) };
  }
  const configPath = join(dir, 'llmq.yaml');
  // YAML is a superset of JSON.
  writeFileSync(configPath, JSON.stringify(merged, null, 2));
  const config = loadConfig({ path: configPath, env: {} });
  const platform = await createPlatform(config);
  const gatewayLogs: Stack['gatewayLogs'] = [];
  const recorder = (level: string) => (obj: object | string, msg?: string) =>
    void gatewayLogs.push(typeof obj === 'string' ? { level, obj: {}, msg: obj } : { level, obj: obj as Record<string, unknown>, msg });
  const gatewayLogger: Logger = { ...silentLogger, warn: recorder('warn'), error: recorder('error'), child: () => gatewayLogger };
  const gateway = await serveGateway({ platform, logger: gatewayLogger, registry: new Registry() });
  const workers: WorkerProcess[] = [];

  const spawnWorker = async (env: Record<string, string> = {}): Promise<WorkerProcess> => {
    const child = spawn(process.execPath, [WORKER_MAIN], {
      env: { ...process.env, LLMQ_CONFIG: configPath, LLMQ_LOG_LEVEL: 'info', LLMQ_METRICS_PORT: '0', ...options.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const proc: WorkerProcess = { child, output: () => out, exited, kill: (s = 'SIGKILL') => void child.kill(s) };
    workers.push(proc);
    const deadline = Date.now() + 20_000;
    while (!out.includes('worker ready')) {
      if (child.exitCode !== null) throw new Error(`worker exited during start-up:\n${out}`);
      if (Date.now() > deadline) throw new Error(`worker not ready in 20 s:\n${out}`);
      await new Promise((r) => setTimeout(r, 25));
    }
    return proc;
  };

  for (let i = 0; i < (options.workers ?? 1); i++) await spawnWorker();

  const http: Stack['http'] = async (method, path, body, headers = {}) => {
    const res = await fetch(gateway.url + path, {
      method,
      headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed as any, headers: res.headers };
  };

  const waitFor: Stack['waitFor'] = async (id, statuses, timeoutMs = 15_000) => {
    const deadline = Date.now() + timeoutMs;
    let last: any;
    while (Date.now() < deadline) {
      const r = await http('GET', `/v1/jobs/${id}`);
      last = r.body;
      if (r.status === 200 && statuses.includes(r.body.status)) return r.body;
      await new Promise((res) => setTimeout(res, 50));
    }
    throw new Error(`job ${id} not ${statuses.join('|')} within ${timeoutMs} ms; last: ${JSON.stringify(last)}`);
  };

  return {
    redis,
    dir,
    configPath,
    prefix,
    gateway,
    gatewayLogs,
    url: gateway.url,
    workers,
    spawnWorker,
    http,
    waitFor,
    async close() {
      for (const w of workers) if (w.child.exitCode === null) w.kill('SIGKILL');
      await Promise.all(workers.map((w) => w.exited));
      await gateway.close();
      if (!options.redis) await redis.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Reads an SSE stream into events until it ends or `timeoutMs` passes. */
export async function readSse(url: string, timeoutMs = 15_000, onEvent?: (e: { event: string; data: any }) => void): Promise<{ event: string; data: any; at: number }[]> {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeoutMs);
  const events: { event: string; data: any; at: number }[] = [];
  try {
    const res = await fetch(url, { signal: ctrl.signal, headers: { accept: 'text/event-stream' } });
    if (!res.ok || !res.body) throw new Error(`SSE answered ${res.status}`);
    for await (const { event, data } of readSseEvents(res.body as unknown as AsyncIterable<Uint8Array>)) {
      const e = { event, data, at: Date.now() };
      events.push(e);
      onEvent?.(e);
    }
  } catch (err) {
    if (!ctrl.signal.aborted) throw err;
  } finally {
    clearTimeout(timer);
  }
  return events;
}
