import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { MongoClient, type Collection, type Document, type ObjectId } from 'mongodb';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startRedis, type TestRedis } from '@llmq/testing';
import { ALL_STATES, CONNECTOR_MAIN, WORKER_MAIN, e2eBaseConfig, killAll, sleep, spawnApp, waitUntil, type Proc } from './helpers/processes.js';
import { TEST_PLUGIN_SOURCE } from './helpers/plugin-source.js';

/*
 * The whole MongoDB path against a real server, with real processes: documents inserted into a
 * collection → the connector (a child process: its kill -9 is real) → Redis → a worker child
 * serving `echo` → the mongodb sink writing each answer back onto its document. 1,000 documents
 * per run; the connector is SIGKILLed after it enqueued some but not all and then restarted.
 * Asserted: every document answered with the echo of its own prompt, nothing missing, each job
 * run and written exactly once (re-delivered documents collapse onto their job id).
 *
 * Change-stream mode runs when the server is a replica set (or mongos); poll mode, with two
 * connectors sharing the collection, runs on any server. Needs a build (`npm run build`).
 */

const url = process.env.MONGODB_URL;
if (!url) {
  console.warn(
    '\n!!! MONGODB_URL is not set: SKIPPING the MongoDB end-to-end suite (test/mongodb.int.test.ts).\n' +
      '!!! It runs connector and worker processes against a real server, with a kill -9 of the connector mid-run.\n' +
      "!!! To run it: npm run build && MONGODB_URL='mongodb://localhost:27017/?replicaSet=rs0' npx vitest run test/mongodb.int.test.ts\n" +
      "!!! (the compose `sources` profile from the host: MONGODB_URL='mongodb://localhost:27017/?directConnection=true'; see README, Test it).\n" +
      '!!! A standalone server runs the poll-mode test only; change streams need a replica set.\n',
  );
}

const N = 1000;
/** Documents inserted before the kill is allowed: the kill always comes before the last one is even written. */
const BEFORE_KILL = 500;
/** The connector is killed once this many jobs are in Redis. */
const KILL_AT = 100;
describe.skipIf(!url)('MongoDB end to end: connector and worker processes against a real server (MONGODB_URL)', () => {
  let mongo: MongoClient | undefined;
  let redis: TestRedis | undefined;
  let replicaSet = false;
  let connected = false;
  const db = `llmq_e2e_${randomUUID().slice(0, 8)}`;
  let dir = '';
  const procs: Proc[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    for (const main of [CONNECTOR_MAIN, WORKER_MAIN]) {
      if (!existsSync(main)) throw new Error(`${main} is missing: run \`npm run build\` before this suite`);
    }
    dir = mkdtempSync(join(tmpdir(), 'llmq-mongo-e2e-'));
    redis = await startRedis();
    mongo = new MongoClient(url!);
    await mongo.connect();
    connected = true;
    const hello = await mongo.db('admin').command({ hello: 1 });
    replicaSet = typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
  });

  afterEach(async () => {
    await stopAll();
    for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => undefined);
  });

  afterAll(async () => {
    await stopAll();
    for (const cleanup of cleanups.splice(0)) await cleanup().catch(() => undefined);
    try {
      if (connected) await mongo!.db(db).dropDatabase();
    } catch (err) {
      console.warn(`could not drop the test database ${db}: ${(err as Error).message}`);
    }
    await mongo?.close().catch(() => undefined);
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const stopAll = () => killAll(procs);

  function spawnLlmq(name: string, main: string, configPath: string, prefix: string, ready: string): Promise<Proc> {
    const env = { LLMQ_CONFIG: configPath, REDIS_URL: redis!.url, LLMQ_REDIS_PREFIX: prefix, LLMQ_LOG_LEVEL: 'info', LLMQ_METRICS_PORT: '0', MONGODB_URL: url! };
    return spawnApp({ name, main, env, ready, procs });
  }

  async function logged(proc: Proc, text: string, timeoutMs = 30_000): Promise<void> {
    await waitUntil(`${proc.name} to log "${text}"`, async () => proc.output().includes(text), timeoutMs, () => proc.output().slice(-4000));
  }

  async function kill9(proc: Proc): Promise<void> {
    proc.child.kill('SIGKILL');
    await proc.exited;
  }

  interface Run {
    collection: Collection;
    coll: string;
    prefix: string;
    queue: Queue;
    recordFile: string;
    prompt(i: number): string;
    jobId(id: ObjectId): string;
    writeConfig(file: string, extra: Record<string, unknown>): string;
    worker(): Promise<Proc>;
    connector(configPath: string, name: string): Promise<Proc>;
    /** Inserts documents 0..BEFORE_KILL-1 at a steady pace, waits for `gate`, then the rest. */
    feed(gate: Promise<void>): Promise<ObjectId[]>;
    jobCount(): Promise<number>;
    jobsNow(): Promise<{ id: string; sourceName: string | undefined }[]>;
    statusCounts(): Promise<Record<string, number>>;
    progress(): Promise<string>;
  }

  async function prepare(coll: string): Promise<Run> {
    const tag = randomUUID().slice(0, 8);
    const prefix = `e2e${tag}`;
    const collection = mongo!.db(db).collection(coll);
    await collection.createIndex({ status: 1, _id: 1 });
    const connection = new Redis(redis!.url, { maxRetriesPerRequest: null });
    const queue = new Queue('echo', { connection, prefix });
    cleanups.push(async () => {
      await queue.close();
      connection.disconnect();
    });
    const recordFile = join(dir, `${coll}-sink-writes.txt`);
    const plugin = join(dir, 'recorder-plugin.mjs');
    writeFileSync(plugin, TEST_PLUGIN_SOURCE);
    const base = e2eBaseConfig(redis!.url, prefix);
    const run: Run = {
      collection,
      coll,
      prefix,
      queue,
      recordFile,
      prompt: (i) => `item ${i} of ${coll} ${tag}`,
      jobId: (id) => `mongodb:${db}.${coll}:${id.toHexString()}`,
      writeConfig(file, extra) {
        const path = join(dir, file);
        // YAML is a superset of JSON.
        writeFileSync(path, JSON.stringify({ ...base, ...extra }, null, 2));
        return path;
      },
      worker() {
        const config = run.writeConfig(`${coll}-worker.yaml`, {
          plugins: [plugin],
          sinks: [
            // Writes status, response, … back onto each source document.
            { name: 'write-back', type: 'mongodb', sources: ['mongodb'], options: { url_env: 'MONGODB_URL', server_selection_timeout_ms: 10_000 } },
            // Counts writes per job: "answered exactly once" seen from the sink side.
            { name: 'recorder', type: 'test-sink', sources: ['mongodb'], options: { record_file: recordFile } },
          ],
        });
        return spawnLlmq(`worker (${coll})`, WORKER_MAIN, config, prefix, 'worker ready');
      },
      connector(configPath, name) {
        return spawnLlmq(name, CONNECTOR_MAIN, configPath, prefix, 'connector ready');
      },
      async feed(gate) {
        const ids: ObjectId[] = [];
        const chunk = 20;
        for (let from = 0; from < N; from += chunk) {
          if (from === BEFORE_KILL) await gate;
          const docs: Document[] = Array.from({ length: Math.min(chunk, N - from) }, (_, k) => ({ prompt: run.prompt(from + k), status: 'pending' }));
          const res = await collection.insertMany(docs);
          for (let k = 0; k < docs.length; k++) ids.push(res.insertedIds[k] as ObjectId);
          await sleep(20);
        }
        return ids;
      },
      async jobCount() {
        const counts = await queue.getJobCounts(...ALL_STATES);
        return Object.values(counts).reduce((a, b) => a + b, 0);
      },
      async jobsNow() {
        const jobs = await queue.getJobs([...ALL_STATES], 0, -1);
        const byId = new Map<string, string | undefined>();
        for (const job of jobs) if (job?.id) byId.set(decodeURIComponent(job.id), (job.data as { source?: { name?: string } }).source?.name);
        return [...byId].map(([id, sourceName]) => ({ id, sourceName }));
      },
      async statusCounts() {
        const rows = await collection.aggregate<{ _id: string; n: number }>([{ $group: { _id: '$status', n: { $sum: 1 } } }]).toArray();
        return Object.fromEntries(rows.map((r) => [String(r._id), r.n]));
      },
      async progress() {
        const counts = await queue.getJobCounts(...ALL_STATES).catch((e: Error) => e.message);
        const tails = procs.map((p) => `--- ${p.name} (exit ${p.child.exitCode ?? p.child.signalCode ?? 'running'}):\n${p.output().slice(-3000)}`).join('\n');
        return `documents by status: ${JSON.stringify(await run.statusCounts())}; jobs: ${JSON.stringify(counts)}\n${tails}`;
      },
    };
    return run;
  }

  /** Everything a user would check once the run settled; `ids` are the inserted documents. */
  async function assertAnsweredExactlyOnce(run: Run, ids: ObjectId[]): Promise<void> {
    expect(ids).toHaveLength(N);
    await waitUntil(
      `all ${N} documents to be answered`,
      async () => (await run.collection.countDocuments({ status: 'done' })) === N && (await run.queue.getCompletedCount()) === N,
      240_000,
      () => run.progress(),
    );
    // Documents: each answered with the echo of its own prompt, by its own job, claim fields gone.
    const docs = await run.collection.find({}).toArray();
    expect(docs).toHaveLength(N);
    const byId = new Map(docs.map((d) => [(d._id as ObjectId).toHexString(), d]));
    const wrong: string[] = [];
    ids.forEach((id, i) => {
      const d = byId.get(id.toHexString());
      const expected = { status: 'done', response: run.prompt(i), llmq_job_id: run.jobId(id) };
      if (!d) wrong.push(`${id.toHexString()}: missing`);
      else if (d.status !== expected.status || d.response !== expected.response || d.llmq_job_id !== expected.llmq_job_id || 'error' in d || 'llmq_claimed_by' in d || 'llmq_lease_until' in d) {
        wrong.push(`${id.toHexString()}: ${JSON.stringify({ status: d.status, response: d.response, llmq_job_id: d.llmq_job_id, error: d.error, llmq_claimed_by: d.llmq_claimed_by })}, expected ${JSON.stringify(expected)}`);
      }
      if (d && !(d.completed_at instanceof Date && d.started_at instanceof Date)) wrong.push(`${id.toHexString()}: no started_at/completed_at dates`);
    });
    expect(wrong.slice(0, 20), `${wrong.length} documents not answered as expected`).toEqual([]);

    // BullMQ: exactly one job per document, every one completed once, none failed.
    const counts = await run.queue.getJobCounts(...ALL_STATES);
    expect(counts).toMatchObject({ completed: N, failed: 0, active: 0, waiting: 0, delayed: 0, prioritized: 0 });
    const completed = await run.queue.getJobs(['completed'], 0, -1);
    const jobIds = new Set(completed.map((j) => decodeURIComponent(j.id ?? '')));
    const expectedIds = ids.map((id) => run.jobId(id));
    expect(expectedIds.filter((id) => !jobIds.has(id)).slice(0, 20), 'documents without a completed job').toEqual([]);
    const mixedUp = completed.filter((j) => {
      const i = expectedIds.indexOf(decodeURIComponent(j.id ?? ''));
      return (j.returnvalue as { text?: string } | undefined)?.text !== run.prompt(i);
    });
    expect(mixedUp.map((j) => `${j.id}: ${JSON.stringify(j.returnvalue)}`).slice(0, 20), 'jobs whose answer is not the echo of their own prompt').toEqual([]);

    // The sink side: one write per job.
    const writes = new Map<string, string[]>();
    for (const line of readFileSync(run.recordFile, 'utf8').split('\n').filter(Boolean)) {
      const at = line.indexOf(' ');
      const id = line.slice(0, at);
      writes.set(id, [...(writes.get(id) ?? []), line.slice(at + 1)]);
    }
    const duplicates = [...writes].filter(([, texts]) => texts.length > 1);
    expect(duplicates.slice(0, 20).map(([id, texts]) => `${id} written ${texts.length} times`), `${duplicates.length} jobs written more than once`).toEqual([]);
    expect(expectedIds.filter((id) => !writes.has(id)).slice(0, 20), 'jobs never written by the sink').toEqual([]);
    expect(writes.size).toBe(N);
  }

  it(`change stream: ${N} inserts, the connector killed -9 mid-run and restarted; every document answered exactly once`, async (ctx) => {
    if (!replicaSet) {
      console.warn('!!! MONGODB_URL is a standalone server: change streams need a replica set; SKIPPING the change-stream test (poll mode still runs).');
      ctx.skip();
    }
    const run = await prepare('stream_requests');
    const source = {
      name: 'stream-in',
      type: 'mongodb',
      options: {
        url_env: 'MONGODB_URL',
        db,
        collection: run.coll,
        mode: 'change_stream',
        model: 'echo',
        batch_size: 20,
        max_await_ms: 200,
        // Only the start-up scan and the stream (resumed from its token) find documents.
        scan_interval_ms: 0,
        // The killed connector never releases its watch lock: the restarted one takes it after the TTL.
        lock_ttl_ms: 3000,
        lock_renew_ms: 500,
        restart_backoff_ms: 200,
        server_selection_timeout_ms: 10_000,
      },
    };
    const config = run.writeConfig('stream-connector.yaml', { sources: [source] });
    await run.worker();
    const first = await run.connector(config, 'connector (first)');
    // Stream open and start-up scan done: from here on documents arrive as change events.
    await logged(first, 'catch-up scan finished');

    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    const feeding = run.feed(gate);
    feeding.catch(() => openGate());
    await waitUntil(`${KILL_AT} jobs in Redis`, async () => (await run.jobCount()) >= KILL_AT, 60_000, () => run.progress());
    await kill9(first);
    const atKill = await run.jobsNow();
    const statuses = await run.statusCounts();
    openGate();
    console.log(`[mongodb e2e] change stream: connector killed -9 with ${atKill.length} of ${N} jobs enqueued; documents by status then: ${JSON.stringify(statuses)}`);
    expect(atKill.length).toBeGreaterThan(0);
    expect(atKill.length).toBeLessThan(N);

    const second = await run.connector(config, 'connector (restarted)');
    const ids = await feeding;
    await assertAnsweredExactlyOnce(run, ids);
    // The restarted connector picked the stream up where the killed one checkpointed it.
    expect(second.output()).toContain('change stream resumed after the stored token');
  }, 360_000);

  it(`poll mode: two connectors share ${N} documents, one killed -9 mid-run and restarted; every document answered exactly once`, async () => {
    const run = await prepare('poll_requests');
    const source = (name: string) => ({
      name,
      type: 'mongodb',
      options: {
        url_env: 'MONGODB_URL',
        db,
        collection: run.coll,
        mode: 'poll',
        model: 'echo',
        batch_size: 20,
        poll_interval_ms: 50,
        // Documents the killed connector had claimed but not enqueued are taken again after this.
        lease_ms: 2000,
        restart_backoff_ms: 200,
        server_selection_timeout_ms: 10_000,
      },
    });
    // A source name per connector: a job's source.name says which connector enqueued it.
    const configA = run.writeConfig('poll-a.yaml', { sources: [source('poll-a')] });
    const configB = run.writeConfig('poll-b.yaml', { sources: [source('poll-b')] });
    await run.worker();
    const a = await run.connector(configA, 'connector A');
    await run.connector(configB, 'connector B');

    let openGate!: () => void;
    const gate = new Promise<void>((r) => (openGate = r));
    const feeding = run.feed(gate);
    feeding.catch(() => openGate());
    await waitUntil(`${KILL_AT} jobs in Redis`, async () => (await run.jobCount()) >= KILL_AT, 60_000, () => run.progress());
    await kill9(a);
    const atKill = await run.jobsNow();
    const statuses = await run.statusCounts();
    openGate();
    const byA = atKill.filter((j) => j.sourceName === 'poll-a').length;
    console.log(`[mongodb e2e] poll: connector A killed -9 with ${atKill.length} of ${N} jobs enqueued (${byA} by A); documents by status then: ${JSON.stringify(statuses)}`);
    expect(byA, 'connector A had enqueued nothing when it was killed').toBeGreaterThan(0);
    expect(atKill.length).toBeLessThan(N);

    await run.connector(configA, 'connector A (restarted)');
    const ids = await feeding;
    await assertAnsweredExactlyOnce(run, ids);
    const sources = new Set((await run.queue.getJobs(['completed'], 0, -1)).map((j) => (j.data as { source?: { name?: string } }).source?.name));
    expect([...sources].sort(), 'both connectors enqueued documents').toEqual(['poll-a', 'poll-b']);
  }, 360_000);
});
