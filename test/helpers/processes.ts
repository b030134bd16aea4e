import { spawn, type ChildProcess } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Helpers for suites that run llmq's apps as real child processes (so kill -9 is real). */

export const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const CONNECTOR_MAIN = join(REPO, 'apps/connector/dist/main.js');
export const WORKER_MAIN = join(REPO, 'apps/worker/dist/main.js');
/** Every BullMQ job state, for counts that must add up to the number of jobs. */
export const ALL_STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed', 'paused', 'waiting-children'] as const;

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every 25 ms; on timeout the error says what was awaited and `detail()`. */
export async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number, detail: () => Promise<string> | string = () => ''): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}. ${await detail()}`);
    await sleep(25);
  }
}

export interface Proc {
  name: string;
  child: ChildProcess;
  /** stdout and stderr so far (the last 200-400 kB). */
  output(): string;
  exited: Promise<number | null>;
}

export interface SpawnAppOptions {
  name: string;
  main: string;
  env: Record<string, string>;
  /** Text of the log line that says the app is ready. */
  ready: string;
  readyTimeoutMs?: number;
  /** The new process is pushed here, so the suite can kill whatever is left. */
  procs: Proc[];
}

/** Starts an app with `node <main>` in the repo and waits for its ready line. */
export async function spawnApp(o: SpawnAppOptions): Promise<Proc> {
  const child = spawn(process.execPath, [o.main], { cwd: REPO, env: { ...process.env, ...o.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (d: Buffer) => {
    out += d.toString();
    if (out.length > 400_000) out = out.slice(-200_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const proc: Proc = { name: o.name, child, output: () => out, exited };
  o.procs.push(proc);
  const timeoutMs = o.readyTimeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  while (!out.includes(o.ready)) {
    if (child.exitCode !== null) throw new Error(`${o.name} exited during start-up:\n${out.slice(-4000)}`);
    if (Date.now() > deadline) throw new Error(`${o.name} did not log "${o.ready}" within ${timeoutMs / 1000} s:\n${out.slice(-4000)}`);
    await sleep(25);
  }
  return proc;
}

/** SIGKILLs every process still running and waits for them. */
export async function killAll(procs: Proc[]): Promise<void> {
  for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
  await Promise.all(procs.splice(0).map((p) => p.exited));
}

/** Config shared by the end-to-end suites: info logs (their ready lines), no metrics port, an `echo` model of concurrency 8. */
export function e2eBaseConfig(redisUrl: string, prefix: string): Record<string, unknown> {
  return {
    log_level: 'info',
    redis: { url: redisUrl, prefix },
    worker: { metrics_port: 0, watchdog_ms: 0 },
    queue: { backoff_ms: 100 },
    models: [{ name: 'echo', backend: 'echo', concurrency: 8 }],
  };
}

/**
 * Keys that appear more than once at the top level of a JSON log line (a child logger binding a
 * key its parent already bound). Valid JSON to most parsers, but a log store such as Elasticsearch
 * rejects the whole line.
 */
export function repeatedLogKeys(line: string): string[] {
  const seen = new Set<string>();
  const repeated: string[] = [];
  let depth = 0;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
    else if (c === '"') {
      let end = i + 1;
      while (end < line.length && line[end] !== '"') end += line[end] === '\\' ? 2 : 1;
      const text = line.slice(i + 1, end);
      i = end;
      let next = i + 1;
      while (line[next] === ' ') next++;
      if (depth === 1 && line[next] === ':') {
        if (seen.has(text)) repeated.push(text);
        seen.add(text);
      }
    }
  }
  return repeated;
}

/** The JSON lines of a process's output that repeat a key, with the keys. */
export function linesWithRepeatedKeys(output: string): string[] {
  return output
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .flatMap((line) => {
      const keys = repeatedLogKeys(line);
      return keys.length > 0 ? [`${keys.join(', ')}: ${line}`] : [];
    });
}
