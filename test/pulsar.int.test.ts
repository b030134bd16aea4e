import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '@llmq/testing';
import { ALL_STATES, CONNECTOR_MAIN, WORKER_MAIN, e2eBaseConfig, killAll, sleep, spawnApp, waitUntil, type Proc } from './helpers/processes.js';

/*
 * The whole Pulsar path against a real broker, with real processes: messages produced to a topic
 * → the connector (a child process on a Shared subscription: its kill -9 is real) → Redis → a
 * worker child serving `echo` → the pulsar sink producing each answer to a reply topic, read
 * here with the real pulsar-client. 1,000 messages per run; the connector is SIGKILLed after it
 * enqueued some but not all and then restarted. Asserted: every message answered once, with the
 * echo of its own prompt, under its own correlation id; nothing missing; nothing left unacked.
 * Needs a build (`npm run build`) and pulsar-client (`npm install pulsar-client`).
 */

const url = process.env.PULSAR_URL;
if (!url) {
  console.warn(
    '\n!!! PULSAR_URL is not set: SKIPPING the Pulsar end-to-end suite (test/pulsar.int.test.ts).\n' +
      '!!! It runs connector and worker processes against a real broker, with a kill -9 of the connector mid-run.\n' +
      '!!! To run it: npm install pulsar-client && npm run build && PULSAR_URL=pulsar://localhost:6650 npx vitest run test/pulsar.int.test.ts\n',
  );
}

const N = 1000;
/** Messages produced before the kill is allowed: the kill always comes before the last one is even sent. */
const BEFORE_KILL = 500;
/** The connector is killed once this many jobs are in Redis. */
const KILL_AT = 100;
/** Settles within `ms` whatever `work` does: cleanup must not hang on an unreachable broker. */
async function bounded(work: Promise<unknown> | undefined, ms = 10_000): Promise<void> {
  if (!work) return;
  await Promise.race([work.catch(() => undefined), sleep(ms)]);
}

// The part of pulsar-client used here (it is an optional native dependency, loaded at run time).
interface PulsarMessage {
  getData(): Buffer;
  getProperties(): Record<string, string>;
}
interface PulsarConsumer {
  receive(timeoutMs: number): Promise<PulsarMessage>;
  acknowledge(message: PulsarMessage): Promise<unknown>;
  close(): Promise<unknown>;
}
interface PulsarProducer {
  send(message: { data: Buffer; properties?: Record<string, string> }): Promise<{ toString(): string }>;
  flush(): Promise<unknown>;
  close(): Promise<unknown>;
}
interface PulsarClient {
  subscribe(config: { topic: string; subscription: string; subscriptionType: 'Shared' | 'Exclusive'; subscriptionInitialPosition: 'Earliest' | 'Latest'; receiverQueueSize?: number }): Promise<PulsarConsumer>;
  createProducer(config: { topic: string; sendTimeoutMs: number }): Promise<PulsarProducer>;
  close(): Promise<unknown>;
}
interface PulsarModule {
  Client: new (config: { serviceUrl: string; operationTimeoutSeconds: number; log?: (...args: unknown[]) => void }) => PulsarClient;
}

/** What the pulsar sink produces (packages/adapter-pulsar: PulsarReply). */
interface Reply {
  job_id: string;
  correlation_id: string;
  model: string;
  result: { text: string; finish_reason: string; model: string };
}

describe.skipIf(!url)('Pulsar end to end: connector and worker processes against a real broker (PULSAR_URL)', () => {
  let Pulsar: PulsarModule;
  let client: PulsarClient | undefined;
  let redis: TestRedis | undefined;
  let connection: Redis | undefined;
  let queue: Queue | undefined;
  let producer: PulsarProducer | undefined;
  let replies: PulsarConsumer | undefined;
  let dir = '';
  /** The reply reader runs while this is true. */
  let reading = false;
  const procs: Proc[] = [];

  beforeAll(async () => {
    for (const main of [CONNECTOR_MAIN, WORKER_MAIN]) {
      if (!existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` before this suite`);
    }
    // A variable specifier: the file must load (and skip) where pulsar-client is not installed.
    const specifier = 'pulsar-client';
    try {
      const mod = (await import(/* @vite-ignore */ specifier)) as { default?: PulsarModule } & PulsarModule;
      Pulsar = mod.default ?? mod;
    } catch (err) {
      throw new Error(
        `PULSAR_URL is set but pulsar-client could not be loaded (${(err as Error).message}). ` +
          'Install it with `npm install pulsar-client` (a native addon over the Pulsar C++ client library, libpulsar), or unset PULSAR_URL to skip this suite.',
      );
    }
    dir = mkdtempSync(join(tmpdir(), 'llmq-pulsar-e2e-'));
    redis = await startRedis();
    // The C++ client logs every connection to stdout; keep only warnings and errors.
    client = new Pulsar.Client({ serviceUrl: url!, operationTimeoutSeconds: 30, log: (level, file, line, message) => void ((level as number) >= 2 && console.warn(`[pulsar-client] ${String(file)}:${String(line)} ${String(message)}`)) });
  });

  afterAll(async () => {
    reading = false;
    await killAll(procs);
    await bounded(replies?.close());
    await bounded(producer?.close());
    await bounded(client?.close());
    await queue?.close().catch(() => undefined);
    connection?.disconnect();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function spawnLlmq(name: string, main: string, configPath: string, prefix: string, ready: string): Promise<Proc> {
    const env = { LLMQ_CONFIG: configPath, REDIS_URL: redis!.url, LLMQ_REDIS_PREFIX: prefix, LLMQ_LOG_LEVEL: 'info', LLMQ_METRICS_PORT: '0', PULSAR_URL: url! };
    return spawnApp({ name, main, env, ready, procs, readyTimeoutMs: 60000 });
  }

  it(`${N} messages, the connector killed -9 mid-run and restarted: every message answered exactly once on the reply topic`, async () => {
    const tag = randomUUID().slice(0, 8);
    const prefix = `e2e${tag}`;
    const topic = `persistent://public/default/llmq-e2e-${tag}`;
    const replyTopic = `persistent://public/default/llmq-e2e-${tag}-replies`;
    const subscription = `llmq-e2e-${tag}`;
    const prompt = (i: number) => `message ${i} of ${tag}`;
    const correlation = (i: number) => `c-${tag}-${i}`;

    connection = new Redis(redis!.url, { maxRetriesPerRequest: null });
    queue = new Queue('echo', { connection, prefix });
    const jobCount = async () => Object.values(await queue!.getJobCounts(...ALL_STATES)).reduce((a, b) => a + b, 0);

    // Replies are read from the start, so none is missed and a late duplicate is still seen.
    replies = await client!.subscribe({ topic: replyTopic, subscription: 'e2e-check', subscriptionType: 'Exclusive', subscriptionInitialPosition: 'Earliest', receiverQueueSize: 1000 });
    const got = new Map<string, { reply: Reply; properties: Record<string, string> }[]>();
    reading = true;
    const unreadable: string[] = [];
    const reader = (async () => {
      while (reading) {
        let message: PulsarMessage;
        try {
          message = await replies!.receive(1000);
        } catch (err) {
          if (/timeout/i.test((err as Error).message)) continue;
          if (reading) console.warn(`[pulsar e2e] receiving a reply failed: ${(err as Error).message}`);
          await sleep(200);
          continue;
        }
        try {
          const reply = JSON.parse(message.getData().toString('utf8')) as Reply;
          const properties = message.getProperties();
          const key = properties.correlation_id ?? '(none)';
          got.set(key, [...(got.get(key) ?? []), { reply, properties }]);
        } catch (err) {
          unreadable.push((err as Error).message);
        }
        await replies!.acknowledge(message);
      }
    })();

    const base = e2eBaseConfig(redis!.url, prefix);
    const write = (file: string, extra: Record<string, unknown>) => {
      const path = join(dir, file);
      // YAML is a superset of JSON.
      writeFileSync(path, JSON.stringify({ ...base, ...extra }, null, 2));
      return path;
    };
    const workerConfig = write('worker.yaml', {
      sinks: [{ name: 'replies', type: 'pulsar', sources: ['pulsar'], options: { service_url_env: 'PULSAR_URL', topic: replyTopic } }],
    });
    const connectorConfig = write('connector.yaml', {
      sources: [
        {
          name: 'pulsar-in',
          type: 'pulsar',
          options: {
            service_url_env: 'PULSAR_URL',
            topic,
            subscription,
            ack: 'after_enqueue',
            model: 'echo',
            batch_size: 20,
            receiver_queue_size: 100,
            nack_redelivery_ms: 1000,
            restart_backoff_ms: 200,
          },
        },
      ],
    });
    const progress = async () => {
      const counts = await queue!.getJobCounts(...ALL_STATES).catch((e: Error) => e.message);
      const tails = procs.map((p) => `--- ${p.name} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'}):\n${p.output().slice(-3000)}`).join('\n');
      return `replies for ${got.size}/${N} correlation ids; jobs: ${JSON.stringify(counts)}\n${tails}`;
    };

    await spawnLlmq('worker', WORKER_MAIN, workerConfig, prefix, 'worker ready');
    const first = await spawnLlmq('connector (first)', CONNECTOR_MAIN, connectorConfig, prefix, 'connector ready');

    producer = await client!.createProducer({ topic, sendTimeoutMs: 30_000 });
    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    const producing = (async () => {
      const chunk = 20;
      for (let from = 0; from < N; from += chunk) {
        if (from === BEFORE_KILL) await gate;
        const sends = Array.from({ length: Math.min(chunk, N - from) }, (_, k) =>
          producer!.send({ data: Buffer.from(JSON.stringify({ prompt: prompt(from + k) })), properties: { correlation_id: correlation(from + k) } }),
        );
        await producer!.flush();
        await Promise.all(sends);
        await sleep(20);
      }
    })();
    producing.catch(() => openGate());

    await waitUntil(`${KILL_AT} jobs in Redis`, async () => (await jobCount()) >= KILL_AT, 120_000, progress);
    first.child.kill('SIGKILL');
    await first.exited;
    const atKill = await jobCount();
    openGate();
    console.log(`[pulsar e2e] connector killed -9 with ${atKill} of ${N} jobs enqueued`);
    expect(atKill).toBeGreaterThan(0);
    expect(atKill).toBeLessThan(N);

    const second = await spawnLlmq('connector (restarted)', CONNECTOR_MAIN, connectorConfig, prefix, 'connector ready');
    await producing;
    await waitUntil(`replies for all ${N} correlation ids`, async () => got.size >= N, 300_000, progress);
    // A duplicate would come late (a re-delivered message run again): keep reading a while.
    await sleep(5000);
    reading = false;
    await reader;

    expect(unreadable, 'replies that are not JSON').toEqual([]);
    const expected = new Map(Array.from({ length: N }, (_, i) => [correlation(i), prompt(i)]));
    const missing = [...expected.keys()].filter((c) => !got.has(c));
    expect(missing.slice(0, 20), `${missing.length} messages never answered`).toEqual([]);
    const duplicates = [...got].filter(([, list]) => list.length > 1);
    expect(
      duplicates.slice(0, 20).map(([c, list]) => `${c}: ${list.length} replies (jobs ${list.map((r) => r.reply.job_id).join(', ')})`),
      `${duplicates.length} messages answered more than once`,
    ).toEqual([]);
    const strangers = [...got.keys()].filter((c) => !expected.has(c));
    expect(strangers.slice(0, 20), 'replies for correlation ids never sent').toEqual([]);
    const wrong = [...got]
      .filter(([c, [r]]) => r!.reply.result.text !== expected.get(c) || r!.reply.correlation_id !== c || r!.properties.llmq_job_id !== r!.reply.job_id || !r!.reply.job_id.startsWith(`pulsar:${topic}:`))
      .map(([c, [r]]) => `${c}: ${JSON.stringify(r!.reply)} ${JSON.stringify(r!.properties)}; expected text ${JSON.stringify(expected.get(c))}`);
    expect(wrong.slice(0, 20), `${wrong.length} replies that are not the echo of their own message`).toEqual([]);
    expect(new Set([...got.values()].map(([r]) => r!.reply.job_id)).size, 'one job per message').toBe(N);

    // Re-deliveries collapsed onto the job ids: one job per message in Redis, each completed once.
    expect(await queue.getJobCounts(...ALL_STATES)).toMatchObject({ completed: N, failed: 0, active: 0, waiting: 0, delayed: 0, prioritized: 0 });

    // Nothing left unacked: once the connector stopped, its subscription has nothing to give.
    second.child.kill('SIGTERM');
    const code = await Promise.race([second.exited, sleep(30_000).then(() => 'still running')]);
    expect(code, `connector did not shut down cleanly:\n${second.output().slice(-3000)}`).toBe(0);
    const check = await client!.subscribe({ topic, subscription, subscriptionType: 'Shared', subscriptionInitialPosition: 'Earliest', receiverQueueSize: 10 });
    try {
      const leftover = await check.receive(5000).then(
        (m) => m.getProperties().correlation_id ?? '(no correlation id)',
        () => null,
      );
      expect(leftover, 'a message was left unacknowledged on the subscription').toBeNull();
    } finally {
      await bounded(check.close());
    }
  }, 480_000);
});
