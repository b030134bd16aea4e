import { randomUUID } from 'node:crypto';
import { MongoClient } from 'mongodb';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JobResult, SinkWriteInput } from '@llmq/core';
import { mongoSinkConfigSchema, mongoSourceConfigSchema, type MongoSourceConfigInput } from './config.js';
import { createMongoSink } from './sink.js';
import { createMongoSource, type MongoSource } from './source.js';
import { eventually, memoryLogger, testContext } from './test/context.js';

/*
 * The full source path against a real server: 1,000 documents in, 1,000 jobs out, through a
 * real driver and a real `ctx.enqueue` that records into a Map. Runs only when MONGODB_URL is
 * set (a replica set, e.g. mongodb://localhost:27017/?replicaSet=rs0, also exercises change
 * streams; a standalone server runs the polling tests only).
 */

const url = process.env.MONGODB_URL;
if (!url) {
  console.warn(
    '\n!!! MONGODB_URL is not set: SKIPPING the MongoDB integration suite (packages/adapter-mongodb/src/source.int.test.ts).\n' +
      '!!! Set MONGODB_URL=mongodb://localhost:27017/?replicaSet=rs0 to run it against a real server.\n',
  );
}

const N = 1000;

describe.skipIf(!url)('mongodb source against a real server (MONGODB_URL)', () => {
  let client: MongoClient;
  let replicaSet = false;
  const db = `llmq_int_${randomUUID().slice(0, 8)}`;
  const sources: MongoSource[] = [];

  beforeAll(async () => {
    client = new MongoClient(url!);
    await client.connect();
    const hello = await client.db(db).command({ hello: 1 });
    replicaSet = typeof hello.setName === 'string' || hello.msg === 'isdbgrid';
  });

  afterAll(async () => {
    await Promise.all(sources.map((s) => s.close()));
    await client.db(db).dropDatabase();
    await client.close();
  });

  async function start(collection: string, overrides: Partial<MongoSourceConfigInput>, t = testContext({ env: { MONGODB_URL: url! } }), owner?: string) {
    const config = mongoSourceConfigSchema.parse({ url_env: 'MONGODB_URL', db, collection, model: 'echo', max_await_ms: 200, scan_interval_ms: 0, ...overrides });
    const source = await createMongoSource({ name: collection, config }, t.ctx, owner ? { owner } : {});
    sources.push(source);
    await source.start();
    return { source, t };
  }

  function docs(n: number, from = 0) {
    return Array.from({ length: n }, (_, i) => ({ prompt: `request ${from + i}`, status: 'pending', params: { max_tokens: 4 } }));
  }

  it(`polling: two connectors enqueue ${N} documents, each exactly once, and mark them queued`, async () => {
    const coll = client.db(db).collection('poll_requests');
    await coll.createIndex({ status: 1, _id: 1 });
    await coll.insertMany(docs(N));
    const a = await start('poll_requests', { mode: 'poll', batch_size: 50, poll_interval_ms: 50 }, undefined, 'int-a');
    const b = await start('poll_requests', { mode: 'poll', batch_size: 50, poll_interval_ms: 50 }, undefined, 'int-b');
    await eventually(() => expect(a.t.enqueue.jobs.size + b.t.enqueue.jobs.size).toBe(N), 60_000);
    const byA = new Set(a.t.enqueue.batches.flat());
    expect(b.t.enqueue.batches.flat().filter((id) => byA.has(id))).toEqual([]);
    await eventually(async () => expect(await coll.countDocuments({ status: 'queued' })).toBe(N), 30_000);
  });

  it(`change stream: ${N} inserts enqueued, a restart resumes from the stored token, results written back`, async (ctx) => {
    if (!replicaSet) {
      console.warn('!!! MONGODB_URL is a standalone server: change streams need a replica set; skipping this test.');
      ctx.skip();
    }
    const coll = client.db(db).collection('stream_requests');
    const first = await start('stream_requests', { mode: 'change_stream', batch_size: 100 });
    await eventually(() => expect(first.source.status().leader).toBe(true), 10_000);
    await coll.insertMany(docs(N / 2));
    await eventually(() => expect(first.t.enqueue.jobs.size).toBe(N / 2), 60_000);
    await first.source.close();

    await coll.insertMany(docs(N / 2, N / 2));
    const second = await start('stream_requests', { mode: 'change_stream', batch_size: 100 }, testContext({ kv: first.t.kv, env: { MONGODB_URL: url! } }));
    await eventually(() => expect(first.t.enqueue.jobs.size + second.t.enqueue.jobs.size).toBeGreaterThanOrEqual(N), 60_000);
    const all = new Set([...first.t.enqueue.jobs.keys(), ...second.t.enqueue.jobs.keys()]);
    expect(all.size).toBe(N);

    // Results back onto the documents through the sink.
    const sinkConfig = mongoSinkConfigSchema.parse({ url_env: 'MONGODB_URL' });
    const sink = await createMongoSink({ name: 'back', config: sinkConfig }, { logger: memoryLogger(), signal: new AbortController().signal, configDir: '.', env: { MONGODB_URL: url! } });
    const now = Date.now();
    for (const job of [...first.t.enqueue.jobs.values(), ...second.t.enqueue.jobs.values()]) {
      const result: JobResult = { text: 'ok', finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 }, model: 'echo', started_at: now, completed_at: now + 1 };
      const input: SinkWriteInput = { jobId: job.id, model: 'echo', request: job.request, result, source: job.source, signal: new AbortController().signal, logger: memoryLogger() };
      await sink.write(input);
      await sink.write(input);
    }
    await sink.close();
    expect(await coll.countDocuments({ status: 'done', response: 'ok' })).toBe(N);
  });
});
