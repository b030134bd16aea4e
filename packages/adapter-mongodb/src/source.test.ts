import { ObjectId } from 'mongodb';
import { afterEach, describe, expect, it } from 'vitest';
import { LlmqError, type SourceKv } from '@llmq/core';
import { createFakeKv } from '../../testing/src/fake-kv.js';
import { mongoSourceConfigSchema, type MongoSourceConfigInput } from './config.js';
import { createMongoSource, mongoSource, type MongoSource } from './source.js';
import { FakeMongoClient, FakeMongoError, ejson, tokenOf, type FakeChangeStream, type FakeCollection } from './test/fake-mongo.js';
import { eventually, testContext, type TestContext } from './test/context.js';

const base = {
  url: 'mongodb://user:secret@db.example:27017',
  db: 'app',
  collection: 'requests',
  model: 'echo',
  max_await_ms: 5,
  restart_backoff_ms: 10,
  scan_interval_ms: 0,
  idle_checkpoint_ms: 0,
} satisfies MongoSourceConfigInput;

const open: MongoSource[] = [];
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
});

async function startSource(
  client: FakeMongoClient,
  t: TestContext,
  overrides: Partial<MongoSourceConfigInput> = {},
  owner = 'instance-a',
): Promise<MongoSource> {
  const config = mongoSourceConfigSchema.parse({ ...base, ...overrides });
  const source = await createMongoSource({ name: 'requests', config }, t.ctx, { client, ejson, owner });
  open.push(source);
  await source.start();
  return source;
}

function jobId(id: unknown): string {
  return `mongodb:app.requests:${(id as ObjectId).toHexString()}`;
}

function requests(client: FakeMongoClient): FakeCollection {
  return client.db('app').collection('requests');
}

function watches(client: FakeMongoClient) {
  return client.calls.filter((c) => c.op === 'watch');
}

function checkpoints(t: TestContext): string[] {
  return t.timeline.flatMap((e) => (e.t === 'kv:set' && e.key.startsWith('resume-token:') ? [e.value] : []));
}

describe('mongodb source: change stream', () => {
  it('scans pending documents at start-up, then enqueues inserts with a deterministic id and marks them queued', async () => {
    const client = new FakeMongoClient();
    const coll = requests(client);
    const [early] = coll.insert({ prompt: 'written before start', status: 'pending' });
    coll.insert({ prompt: 'already done', status: 'done' });
    const t = testContext();
    await startSource(client, t);

    await eventually(() => expect(t.enqueue.jobs.has(jobId(early))).toBe(true));
    const [late] = coll.insert({ prompt: 'hello world', status: 'pending', params: { max_tokens: 7 } });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(late))).toBe(true));

    const job = t.enqueue.jobs.get(jobId(late))!;
    expect(job.request).toEqual({ model: 'echo', prompt: 'hello world', max_tokens: 7 });
    expect(job.source).toMatchObject({ type: 'mongodb', name: 'requests', ref: { db: 'app', collection: 'requests', id: (late as ObjectId).toHexString() } });
    expect(t.enqueue.jobs.size).toBe(2);
    await eventually(() => expect(coll.get(late)).toMatchObject({ status: 'queued', queued_at: expect.any(Date) }));
    expect(coll.get(early)?.status).toBe('queued');

    const [watch] = watches(client);
    expect(watch?.args[0]).toEqual([
      { $match: { operationType: { $in: ['insert', 'update', 'replace'] }, 'fullDocument.status': 'pending' } },
    ]);
    expect(watch?.args[1]).toMatchObject({ fullDocument: 'updateLookup' });
    expect(watch?.args[1]).not.toHaveProperty('resumeAfter');
  });

  it('stores the resume token only after enqueue resolved', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    await startSource(client, t);
    await eventually(() => expect(watches(client)).toHaveLength(1));
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true)); // start-up scan done

    t.enqueue.hold();
    const before = checkpoints(t).length;
    const [id] = requests(client).insert({ prompt: 'p', status: 'pending' });
    try {
      await eventually(() => expect(t.enqueue.waiting()).toBe(1));
      await new Promise((r) => setTimeout(r, 50)); // the stream keeps running meanwhile
      expect(checkpoints(t)).toHaveLength(before);
    } finally {
      t.enqueue.release();
    }
    await eventually(() => expect(checkpoints(t).length).toBeGreaterThan(before));
    const start = t.timeline.findIndex((e) => e.t === 'enqueue:start' && e.ids.includes(jobId(id)));
    const done = t.timeline.findIndex((e) => e.t === 'enqueue:done' && e.ids.includes(jobId(id)));
    const isCheckpoint = (e: (typeof t.timeline)[number]) => e.t === 'kv:set' && e.key.startsWith('resume-token:');
    expect(start).toBeGreaterThanOrEqual(0);
    expect(done).toBeGreaterThan(start);
    expect(t.timeline.slice(start, done).filter(isCheckpoint)).toEqual([]);
    expect(t.timeline.slice(done).some(isCheckpoint)).toBe(true);
  });

  it('does not checkpoint when enqueue fails, and processes the event again', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    await startSource(client, t);
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true));
    const [warm] = requests(client).insert({ prompt: 'first', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(warm))).toBe(true));
    await eventually(() => expect(checkpoints(t).length).toBeGreaterThan(0));
    const stored = checkpoints(t).at(-1)!;

    t.enqueue.failNext(1);
    const [id] = requests(client).insert({ prompt: 'second', status: 'pending' });
    await eventually(() => expect(t.timeline.some((e) => e.t === 'enqueue:failed')).toBe(true));
    const failedAt = t.timeline.findIndex((e) => e.t === 'enqueue:failed');

    await eventually(() => expect(t.enqueue.jobs.has(jobId(id))).toBe(true));
    // Between the failure and the successful retry no token was stored.
    const retried = t.timeline.findIndex((e, i) => i > failedAt && e.t === 'enqueue:done' && e.ids.includes(jobId(id)));
    expect(t.timeline.slice(failedAt, retried).filter((e) => e.t === 'kv:set')).toEqual([]);
    // The retry came from the stream, resumed after the last stored token.
    const reopened = watches(client).at(-1)!;
    expect(watches(client).length).toBeGreaterThanOrEqual(2);
    expect(ejson.stringify((reopened.args[1] as { resumeAfter: unknown }).resumeAfter)).toBe(stored);
    expect(t.enqueue.batches.filter((b) => b.includes(jobId(id))).length).toBeGreaterThanOrEqual(2);
    expect(t.logger.entries.some((e) => e.level === 'warn' && /restarting it from the last checkpoint/.test(e.msg))).toBe(true);
  });

  it('resumes with resumeAfter and the same pipeline after a restart, and picks up what changed meanwhile', async () => {
    const client = new FakeMongoClient();
    const kv = createFakeKv();
    const first = testContext({ kv });
    const a = await startSource(client, first);
    const [one] = requests(client).insert({ prompt: 'one', status: 'pending' });
    await eventually(() => expect(first.enqueue.jobs.has(jobId(one))).toBe(true));
    await eventually(() => expect(checkpoints(first).length).toBeGreaterThan(0));
    await a.close();
    const stored = kv.peek('resume-token:app.requests');
    expect(stored).toBeTruthy();

    // While no source runs: a new request, and a draft turned into a request.
    const [two] = requests(client).insert({ prompt: 'two', status: 'pending' });
    const [draft] = requests(client).insert({ prompt: 'draft', status: 'draft' });
    requests(client).set(draft, { status: 'pending' });

    const second = testContext({ kv });
    await startSource(client, second, { scan_interval_ms: 0 });
    await eventually(() => expect(second.enqueue.jobs.has(jobId(two))).toBe(true));
    await eventually(() => expect(second.enqueue.jobs.has(jobId(draft))).toBe(true));

    const [w1, w2] = watches(client);
    expect(w2?.args[0]).toEqual(w1?.args[0]);
    expect(ejson.stringify((w2?.args[1] as { resumeAfter: unknown }).resumeAfter)).toBe(stored);
    // Both came through the resumed stream (the start-up scan may also have found them).
    const stream = requests(client).streams.at(-1) as FakeChangeStream;
    const seen = stream.delivered.map((e) => ejson.stringify(e.fullDocument?._id));
    expect(seen).toEqual(expect.arrayContaining([ejson.stringify(two), ejson.stringify(draft)]));
    expect(second.enqueue.jobs.has(jobId(one))).toBe(false);
  });

  it('ignores updates that do not leave a document pending', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    await startSource(client, t);
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true));
    const [id] = requests(client).insert({ prompt: 'x', status: 'draft' });
    requests(client).set(id, { note: 'still a draft' });
    const [marker] = requests(client).insert({ prompt: 'y', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(marker))).toBe(true));
    expect(t.enqueue.jobs.has(jobId(id))).toBe(false);
  });

  it('falls back to a scan, loudly, when the resume token fell off the oplog (code 286)', async () => {
    const client = new FakeMongoClient();
    const kv = createFakeKv();
    await kv.set('resume-token:app.requests', ejson.stringify(tokenOf(1)));
    const ids = requests(client).insert(...Array.from({ length: 5 }, (_, i) => ({ prompt: `p${i}`, status: 'pending' })));
    client.truncateOplog();
    const t = testContext({ kv });
    await startSource(client, t);

    await eventually(() => expect(t.enqueue.jobs.size).toBe(5));
    expect([...t.enqueue.jobs.keys()].sort()).toEqual(ids.map(jobId).sort());
    const loud = t.logger.entries.filter((e) => e.level === 'error' && e.obj.code === 286);
    expect(loud).toHaveLength(1);
    expect(loud[0]?.msg).toMatch(/HISTORY LOST/);
    expect(loud[0]?.msg).toMatch(/full scan/);
    const [first, second] = watches(client);
    expect(first?.args[1]).toHaveProperty('resumeAfter');
    expect(second?.args[1]).not.toHaveProperty('resumeAfter');
    // The stream keeps working afterwards.
    const [later] = requests(client).insert({ prompt: 'later', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(later))).toBe(true));
  });

  it('handles 286 raised by a running stream the same way', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    await startSource(client, t);
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true));
    const finds = client.calls.filter((c) => c.op === 'find').length;
    client.failNext('tryNext', new FakeMongoError('history lost', 286));
    await eventually(() => expect(client.calls.filter((c) => c.op === 'find').length).toBeGreaterThan(finds));
    expect(t.logger.entries.some((e) => e.level === 'error' && e.obj.code === 286)).toBe(true);
    expect(t.kv.peek('resume-token:app.requests') ?? '').toBe('');
    expect(watches(client).at(-1)?.args[1]).not.toHaveProperty('resumeAfter');
  });

  it('scans periodically for documents the stream did not deliver', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    await startSource(client, t, { scan_interval_ms: 30 });
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true));
    // A pending document that produces no event the stream sees (written straight to the
    // collection, as after a restore).
    const id = new ObjectId();
    requests(client).docs.set(ejson.stringify(id), { _id: id, prompt: 'restored', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(id))).toBe(true));
  });

  it('marks a document that is not a valid request failed instead of enqueueing it', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    await startSource(client, t);
    const [bad] = requests(client).insert({ status: 'pending', params: { max_tokens: -3 }, prompt: 'x' });
    await eventually(() => expect(requests(client).get(bad)?.status).toBe('failed'));
    expect(requests(client).get(bad)?.error).toMatchObject({ code: 'ERR_REQUEST_INVALID', message: expect.stringContaining('max_tokens') });
    expect(t.enqueue.jobs.size).toBe(0);
  });
});

describe('mongodb source: a job the queue refuses for good', () => {
  const unknownModel = (job: { request: { model: string } }) =>
    job.request.model === 'nope' ? new LlmqError('ERR_MODEL_NOT_FOUND', 'model "nope" does not exist', { param: 'model' }) : undefined;

  it('marks only that document failed; the rest of its batch is enqueued and the stream moves on', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    t.enqueue.refuse(unknownModel);
    await startSource(client, t);
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true));
    const [good, bad] = requests(client).insert({ prompt: 'a', status: 'pending' }, { prompt: 'b', model: 'nope', status: 'pending' });
    await eventually(() => expect(requests(client).get(bad)?.status).toBe('failed'));
    expect(requests(client).get(bad)?.error).toEqual({ code: 'ERR_MODEL_NOT_FOUND', message: 'model "nope" does not exist' });
    expect(t.enqueue.jobs.has(jobId(good))).toBe(true);
    expect(requests(client).get(good)?.status).toBe('queued');
    const [later] = requests(client).insert({ prompt: 'c', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(later))).toBe(true));
    expect(watches(client)).toHaveLength(1);
  });

  it('in polling mode too, instead of releasing and reclaiming the batch forever', async () => {
    const client = new FakeMongoClient();
    const [good, bad] = requests(client).insert({ prompt: 'a', status: 'pending' }, { prompt: 'b', model: 'nope', status: 'pending' });
    const t = testContext();
    t.enqueue.refuse(unknownModel);
    await startSource(client, t, { mode: 'poll', poll_interval_ms: 10 });
    await eventually(() => expect(requests(client).get(bad)?.status).toBe('failed'));
    expect(requests(client).get(good)?.status).toBe('queued');
    await new Promise((r) => setTimeout(r, 40));
    expect(t.enqueue.jobs.size).toBe(1);
  });
});

describe('mongodb source: one watcher per collection', () => {
  /** A kv that stops answering when `dead` is set, as when a process loses Redis or dies. */
  function severable(kv: SourceKv) {
    const state = { dead: false };
    const guard = <T>(fn: () => Promise<T>) => (state.dead ? Promise.reject(new Error('connection lost')) : fn());
    const wrapped: SourceKv = {
      get: (k) => guard(() => kv.get(k)),
      set: (k, v, t) => guard(() => kv.set(k, v, t)),
      acquire: (k, o, t) => guard(() => kv.acquire(k, o, t)),
      renew: (k, o, t) => guard(() => kv.renew(k, o, t)),
      release: (k, o) => guard(() => kv.release(k, o)),
    };
    return { state, kv: wrapped };
  }

  it('runs one active watcher; a standby takes over once the holder stops renewing for a TTL', async () => {
    const kv = createFakeKv();
    const clientA = new FakeMongoClient();
    const clientB = new FakeMongoClient();
    const a = testContext({ kv });
    const link = severable(a.ctx.kv);
    a.ctx.kv = link.kv;
    const b = testContext({ kv });
    const ttl = 300;
    await startSource(clientA, a, { lock_ttl_ms: ttl, lock_renew_ms: 30 }, 'instance-a');
    await eventually(() => expect(watches(clientA)).toHaveLength(1));
    await startSource(clientB, b, { lock_ttl_ms: ttl, lock_renew_ms: 30 }, 'instance-b');

    await new Promise((r) => setTimeout(r, ttl + 100));
    expect(watches(clientB)).toHaveLength(0);
    expect(kv.peek('watch-lock:app.requests')).toBe('instance-a');
    expect(kv.calls.filter((c) => c.op === 'acquire' && c.owner === 'instance-b' && c.result === false).length).toBeGreaterThan(1);

    const severedAt = Date.now();
    link.state.dead = true;
    await eventually(() => expect(watches(clientB)).toHaveLength(1), 3000);
    const tookOver = Date.now();
    // Not before the holder's last renewal had lapsed.
    expect(tookOver - severedAt).toBeGreaterThanOrEqual(ttl - 40);
    expect(kv.peek('watch-lock:app.requests')).toBe('instance-b');
    // The old holder stopped its stream: it can no longer know it is the only watcher.
    await eventually(() => expect(requests(clientA).streams.every((s) => s.closed)).toBe(true));
    expect(a.logger.entries.some((e) => e.level === 'warn' && /within its TTL/.test(e.msg))).toBe(true);
  });

  it('stops watching when another instance holds the lock at renewal, and hands over at once on close', async () => {
    const kv = createFakeKv();
    const clientA = new FakeMongoClient();
    const clientB = new FakeMongoClient();
    const a = testContext({ kv });
    const b = testContext({ kv });
    const sa = await startSource(clientA, a, { lock_ttl_ms: 5000, lock_renew_ms: 20 }, 'instance-a');
    await eventually(() => expect(watches(clientA)).toHaveLength(1));
    await startSource(clientB, b, { lock_ttl_ms: 5000, lock_renew_ms: 20 }, 'instance-b');

    await sa.close();
    expect(kv.calls.some((c) => c.op === 'release' && c.owner === 'instance-a' && c.result === true)).toBe(true);
    await eventually(() => expect(watches(clientB)).toHaveLength(1), 1000);

    // Someone else overwrote the lock (e.g. B froze past its TTL and C took it).
    await kv.set('watch-lock:app.requests', 'instance-c', 5000);
    await eventually(() => expect(requests(clientB).streams.every((s) => s.closed)).toBe(true));
    expect(b.logger.entries.some((e) => e.level === 'warn' && /lost the watch lock/.test(e.msg))).toBe(true);
  });
});

describe('mongodb source: polling claims', () => {
  it('uses polling on a server that is not a replica set (mode auto)', async () => {
    const client = new FakeMongoClient();
    client.hello = { isWritablePrimary: true };
    const t = testContext();
    const source = await startSource(client, t, { poll_interval_ms: 10 });
    const [id] = requests(client).insert({ prompt: 'p', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(id))).toBe(true));
    expect(source.status().mode).toBe('poll');
    expect(watches(client)).toHaveLength(0);
    expect(requests(client).get(id)).toMatchObject({ status: 'queued', queued_at: expect.any(Date) });
    expect(requests(client).get(id)).not.toHaveProperty('llmq_claimed_by');
  });

  it('never lets two connectors take the same document', async () => {
    const client = new FakeMongoClient();
    const ids = requests(client).insert(...Array.from({ length: 120 }, (_, i) => ({ prompt: `p${i}`, status: 'pending' })));
    const kv = createFakeKv();
    const a = testContext({ kv });
    const b = testContext({ kv });
    await Promise.all([
      startSource(client, a, { mode: 'poll', batch_size: 7, poll_interval_ms: 10 }, 'a'),
      startSource(client, b, { mode: 'poll', batch_size: 7, poll_interval_ms: 10 }, 'b'),
    ]);
    await eventually(() => expect(a.enqueue.jobs.size + b.enqueue.jobs.size).toBe(120));
    const byA = new Set(a.enqueue.batches.flat());
    const byB = new Set(b.enqueue.batches.flat());
    expect([...byA].filter((id) => byB.has(id))).toEqual([]);
    expect(byA.size).toBeGreaterThan(0);
    expect(byB.size).toBeGreaterThan(0);
    expect(new Set([...byA, ...byB])).toEqual(new Set(ids.map(jobId)));
    await eventually(() => expect(requests(client).all().every((d) => d.status === 'queued')).toBe(true));
    // Claims are conditional, atomic updates with a lease.
    const claim = client.calls.find((c) => c.op === 'findOneAndUpdate');
    expect(claim?.args[0]).toMatchObject({ $or: [{ status: 'pending' }, { status: 'claimed', llmq_lease_until: { $lt: expect.any(Date) } }] });
    expect(claim?.args[1]).toMatchObject({ $set: { status: 'claimed', llmq_claimed_by: expect.any(String), llmq_lease_until: expect.any(Date) } });
  });

  it('reclaims a document whose lease expired, and leaves a live claim alone', async () => {
    const client = new FakeMongoClient();
    const now = Date.now();
    const [expired, live] = requests(client).insert(
      { prompt: 'orphaned', status: 'claimed', llmq_claimed_by: 'dead', llmq_lease_until: new Date(now - 1000) },
      { prompt: 'in hand', status: 'claimed', llmq_claimed_by: 'alive', llmq_lease_until: new Date(now + 60_000) },
    );
    const t = testContext();
    await startSource(client, t, { mode: 'poll', poll_interval_ms: 10 }, 'reclaimer');
    await eventually(() => expect(t.enqueue.jobs.has(jobId(expired))).toBe(true));
    await new Promise((r) => setTimeout(r, 50));
    expect(t.enqueue.jobs.has(jobId(live))).toBe(false);
    expect(requests(client).get(live)).toMatchObject({ status: 'claimed', llmq_claimed_by: 'alive' });
    expect(requests(client).get(expired)?.status).toBe('queued');
  });

  it('releases its claims when enqueue fails, and enqueues them on a later round', async () => {
    const client = new FakeMongoClient();
    const [id] = requests(client).insert({ prompt: 'p', status: 'pending' });
    const t = testContext();
    t.enqueue.failNext(1);
    await startSource(client, t, { mode: 'poll', poll_interval_ms: 10 });
    await eventually(() => expect(t.enqueue.jobs.has(jobId(id))).toBe(true));
    const release = client.calls.find((c) => c.op === 'updateMany' && JSON.stringify(c.args[1]).includes('"pending"'));
    expect(release?.args[0]).toMatchObject({ status: 'claimed', llmq_claimed_by: 'instance-a' });
    expect(t.enqueue.batches).toEqual([[jobId(id)], [jobId(id)]]);
    expect(requests(client).get(id)?.status).toBe('queued');
  });

  it('stops all timers and calls on close', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    const source = await startSource(client, t, { mode: 'poll', poll_interval_ms: 10 });
    await new Promise((r) => setTimeout(r, 40));
    await source.close();
    const calls = client.calls.length;
    await new Promise((r) => setTimeout(r, 60));
    expect(client.calls.length).toBe(calls);
  });
});

describe('mongodb source definition', () => {
  it('is type mongodb and rejects unknown or conflicting keys', () => {
    expect(mongoSource.kind).toBe('source');
    expect(mongoSource.type).toBe('mongodb');
    expect(mongoSourceConfigSchema.safeParse({ ...base, colection: 'x' }).success).toBe(false);
    expect(mongoSourceConfigSchema.safeParse({ ...base, url_env: 'DB_URI' }).success).toBe(false);
    const { url: _url, ...noUrl } = base;
    expect(mongoSourceConfigSchema.safeParse(noUrl).success).toBe(false);
    expect(mongoSourceConfigSchema.safeParse({ ...base, lock_ttl_ms: 1000, lock_renew_ms: 1000 }).success).toBe(false);
  });

  it('applies documented defaults', () => {
    const { url: _url, ...rest } = base;
    const config = mongoSourceConfigSchema.parse({ ...rest, url_env: 'DB_URI', max_await_ms: 1000 });
    expect(config).toMatchObject({
      mode: 'auto',
      batch_size: 100,
      lease_ms: 60_000,
      lock_ttl_ms: 30_000,
      status: { field: 'status', pending: 'pending', claimed: 'claimed', queued: 'queued', done: 'done', failed: 'failed' },
      fields: { prompt: 'prompt', messages: 'messages', response: 'response', completed_at: 'completed_at', queued_at: 'queued_at' },
    });
  });

  it('names a missing url_env variable without revealing anything else', async () => {
    const { url: _url, ...rest } = base;
    const config = mongoSourceConfigSchema.parse({ ...rest, url_env: 'LLMQ_TEST_MONGO_URL' });
    const t = testContext({ env: {} });
    await expect(mongoSource.create({ name: 'requests', config }, t.ctx)).rejects.toThrow(/ERR_CONFIG_INVALID: .*url_env names LLMQ_TEST_MONGO_URL, which is not set/);
  });

  it('never logs the connection string', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    const source = await startSource(client, t);
    requests(client).insert({ prompt: 'p', status: 'pending' });
    await eventually(() => expect(t.enqueue.jobs.size).toBe(1));
    await source.close();
    expect(JSON.stringify(t.logger.entries)).not.toContain('secret');
  });
});

describe('mongodb source shutdown', () => {
  it('on host abort and close(), finishes the batch in hand and checkpoints it before resolving', async () => {
    const client = new FakeMongoClient();
    const t = testContext();
    const source = await startSource(client, t);
    await eventually(() => expect(client.calls.some((c) => c.op === 'find')).toBe(true));
    t.enqueue.hold();
    const [id] = requests(client).insert({ prompt: 'p', status: 'pending' });
    await eventually(() => expect(t.enqueue.waiting()).toBe(1));

    t.host.abort();
    let closed = false;
    const closing = source.close().then(() => {
      closed = true;
    });
    await new Promise((r) => setTimeout(r, 30));
    expect(closed).toBe(false);
    t.enqueue.release();
    await closing;
    expect(t.enqueue.jobs.has(jobId(id))).toBe(true);
    const done = t.timeline.findIndex((e) => e.t === 'enqueue:done');
    expect(t.timeline.slice(done).some((e) => e.t === 'kv:set' && e.key.startsWith('resume-token:'))).toBe(true);
    expect(t.kv.calls.some((c) => c.op === 'release' && c.result === true)).toBe(true);
  });
});
