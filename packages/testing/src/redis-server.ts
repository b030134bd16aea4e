import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TestRedis {
  url: string;
  port: number;
  /** False when falling back to REDIS_URL: restart/freeze are then unavailable. */
  owned: boolean;
  /** The server's process id while it runs (undefined when not owned), for CPU and memory readings. */
  readonly pid: number | undefined;
  /** SIGKILL the server (clients see a dead socket). */
  kill(): Promise<void>;
  /** Start it again on the same port (data survives only with `appendonly`). */
  start(): Promise<void>;
  restart(): Promise<void>;
  /** SIGSTOP: the socket stays open but nothing answers (a frozen server). */
  freeze(): void;
  unfreeze(): void;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function hasRedisServer(): boolean {
  return spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
}

async function waitForPort(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = createConnection({ port, host: '127.0.0.1' });
      socket.once('connect', () => {
        socket.write('PING\r\n');
      });
      socket.once('data', (data) => {
        socket.destroy();
        resolve(data.toString().startsWith('+PONG'));
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface StartRedisOptions {
  /** Turn AOF on (appendfsync always) so data survives restart(). */
  persistent?: boolean;
}

/**
 * Starts a private redis-server on a free port, so a test can restart, kill or freeze it and
 * never touches anyone's data. Falls back to REDIS_URL (no restart/freeze) when redis-server
 * is not installed.
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<TestRedis> {
  if (!hasRedisServer()) {
    const url = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
    const unsupported = async () => {
      throw new Error('redis-server is not installed: this test needs a private server');
    };
    console.warn(`[llmq testing] redis-server not found; using REDIS_URL ${url} (restart/freeze tests cannot run)`);
    return {
      url,
      port: Number(new URL(url).port || 6379),
      owned: false,
      pid: undefined,
      kill: unsupported,
      start: unsupported,
      restart: unsupported,
      freeze: () => void unsupported(),
      unfreeze: () => void unsupported(),
      stop: async () => {},
    };
  }
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'llmq-redis-'));
  let child: ChildProcess | undefined;
  const args = [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir,
    '--appendonly', options.persistent ? 'yes' : 'no', '--appendfsync', 'always',
    '--maxmemory-policy', 'noeviction', '--loglevel', 'warning',
  ];
  const start = async () => {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    await waitForPort(port, 10_000);
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await exited;
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    owned: true,
    get pid() {
      return child?.pid;
    },
    kill,
    start,
    async restart() {
      await kill();
      await start();
    },
    freeze() {
      child?.kill('SIGSTOP');
    },
    unfreeze() {
      child?.kill('SIGCONT');
    },
    async stop() {
      await kill();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
