import { Redis } from 'ioredis';
import { afterEach, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from './redis-server.js';

const started: TestRedis[] = [];
afterEach(async () => {
  await Promise.all(started.splice(0).map((r) => r.stop()));
});

async function serverPid(url: string): Promise<number> {
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    return Number(/process_id:(\d+)/.exec(await client.info('server'))?.[1]);
  } finally {
    client.disconnect();
  }
}

describe('startRedis', () => {
  it('gives concurrent suites distinct servers, each answering with its own process', async () => {
    const servers = await Promise.all(Array.from({ length: 4 }, () => startRedis()));
    started.push(...servers);
    if (!servers[0]!.owned) return; // REDIS_URL fallback: nothing private to check
    expect(new Set(servers.map((s) => s.port)).size).toBe(4);
    for (const s of servers) expect(await serverPid(s.url)).toBe(s.pid);
  });

  it('refuses a port another redis-server holds instead of handing out that server', async () => {
    const a = await startRedis();
    started.push(a);
    if (!a.owned) return;
    await expect(startRedis({ port: a.port })).rejects.toThrow(/could not start on port|served by another redis-server/);
    // The first server is untouched.
    expect(await serverPid(a.url)).toBe(a.pid);
  });

  it('restarts on its own port', async () => {
    const a = await startRedis();
    started.push(a);
    if (!a.owned) return;
    const before = a.pid;
    await a.restart();
    expect(a.pid).not.toBe(before);
    expect(await serverPid(a.url)).toBe(a.pid);
  });
});

describe('startRedis against a frozen server', () => {
  it('does not hang on a port whose server accepts connections but never answers', async () => {
    const a = await startRedis();
    started.push(a);
    if (!a.owned) return;
    a.freeze();
    try {
      const t0 = Date.now();
      await expect(startRedis({ port: a.port })).rejects.toThrow();
      expect(Date.now() - t0).toBeLessThan(12_000);
    } finally {
      a.unfreeze();
    }
  }, 20_000);
});
