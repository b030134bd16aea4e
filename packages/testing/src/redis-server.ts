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

/** Whether nothing listens on the port now (it can still be taken right after). */
function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/**
 * A port for a test server: random, below Linux's ephemeral range (32768–60999), so the kernel
 * never hands it to another process's outgoing connection or `listen(0)` while the server is
 * down for a restart; only another test picking the same number can collide, and that is caught
 * by {@link waitForOwnServer}.
 */
async function serverPort(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await canListen(port)) return port;
  }
  return freePort();
}

/**
 * One request on a fresh connection: the raw reply, or undefined on error, on a close before the
 * whole reply, or after 1 s (a frozen server still accepts connections and never answers).
 */
function ask(port: number, command: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let done = false;
    const finish = (reply: string | undefined) => {
      if (done) return;
      done = true;
      socket.destroy();
      resolve(reply);
    };
    socket.setTimeout(1_000, () => finish(undefined));
    socket.once('connect', () => socket.write(command));
    socket.on('data', (data: Buffer) => {
      chunks.push(data);
      const reply = Buffer.concat(chunks);
      // PING answers one line; INFO a bulk string ($len, CRLF, body, CRLF): wait for all of it.
      const head = reply.indexOf('\r\n');
      if (head < 0) return;
      if (reply[0] !== 0x24 /* $ */) return finish(reply.toString());
      const length = Number(reply.subarray(1, head).toString());
      if (reply.length >= head + 2 + length + 2) finish(reply.toString());
    });
    socket.once('error', () => finish(undefined));
    socket.once('close', () => finish(undefined));
  });
}

class PortTakenError extends Error {}

/**
 * Waits until the redis-server we spawned answers on the port. A server that cannot bind exits at
 * once; another test's server answering on the same port is told apart by its process id. Either
 * way the caller learns the port is taken, rather than two suites silently sharing one server
 * (and one suite's restart or freeze stalling the other's).
 */
async function waitForOwnServer(port: number, child: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) throw new PortTakenError(`redis-server could not start on port ${port} (exit ${child.exitCode ?? child.signalCode})`);
    if ((await ask(port, 'PING\r\n'))?.startsWith('+PONG')) {
      const info = await ask(port, 'INFO server\r\n');
      const pid = info === undefined ? undefined : Number(/process_id:(\d+)/.exec(info)?.[1]);
      if (pid === child.pid) return;
      if (pid !== undefined && !Number.isNaN(pid)) {
        // Ours is exiting (bind failed) or about to: either way, this port belongs to someone else.
        throw new PortTakenError(`port ${port} is served by another redis-server (pid ${pid})`);
      }
    }
    if (Date.now() > deadline) throw new Error(`redis-server on port ${port} did not start within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface StartRedisOptions {
  /** Turn AOF on (appendfsync always) so data survives restart(). */
  persistent?: boolean;
  /** This port rather than a random free one (start fails if another server holds it). */
  port?: number;
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
  const dir = mkdtempSync(join(tmpdir(), 'llmq-redis-'));
  let child: ChildProcess | undefined;
  let port = 0;
  const args = () => [
    '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--dir', dir,
    '--appendonly', options.persistent ? 'yes' : 'no', '--appendfsync', 'always',
    '--maxmemory-policy', 'noeviction', '--loglevel', 'warning',
  ];
  const start = async () => {
    const c = spawn('redis-server', args(), { stdio: 'ignore' });
    child = c;
    try {
      await waitForOwnServer(port, c, 10_000);
    } catch (err) {
      c.kill('SIGKILL');
      child = undefined;
      throw err;
    }
  };
  const kill = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await exited;
  };
  // A port another test took between our check and our bind: try another.
  for (let attempt = 1; ; attempt++) {
    port = options.port ?? (await serverPort());
    try {
      await start();
      break;
    } catch (err) {
      if (!(err instanceof PortTakenError) || options.port !== undefined || attempt >= 5) {
        rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }
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
