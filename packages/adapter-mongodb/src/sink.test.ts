import { ObjectId } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { errorCode, isRetryable, type JobResult, type SinkWriteInput, type SourceRef } from '@llmq/core';
import { mongoSinkConfigSchema, mongoSourceConfigSchema, type MongoSinkConfigInput, type MongoSourceConfigInput } from './config.js';
import { documentToJob, writeBackOf } from './mapping.js';
import { createMongoSink, mongoSink } from './sink.js';
import { memoryLogger } from './test/context.js';
import { FakeMongoClient, FakeMongoError, ejson } from './test/fake-mongo.js';

const t0 = Date.UTC(2026, 0, 1);

function result(overrides: Partial<JobResult> = {}): JobResult {
  return {
    text: 'the answer',
    finish_reason: 'stop',
    usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
    model: 'echo',
    started_at: t0 + 1000,
    completed_at: t0 + 2000,
    ...overrides,
  };
}

function sourceFor(doc: Record<string, unknown>, overrides: Partial<MongoSourceConfigInput> = {}): { jobId: string; source: SourceRef } {
  const config = mongoSourceConfigSchema.parse({ url: 'mongodb://h', db: 'app', collection: 'requests', model: 'echo', ...overrides });
  const job = documentToJob(doc, config, { sourceName: 'reqs', ejson, write: writeBackOf(config) });
  // Through JSON, as it travels in job data.
  return { jobId: job.id, source: JSON.parse(JSON.stringify(job.source)) as SourceRef };
}

async function sinkWith(client: FakeMongoClient, options: Partial<MongoSinkConfigInput> = {}) {
  const logger = memoryLogger();
  const config = mongoSinkConfigSchema.parse({ url_env: 'MONGO', ...options });
  const sink = await createMongoSink({ name: 'results', config }, { logger, signal: new AbortController().signal, configDir: '.', env: {} }, { client, ejson });
  return { sink, logger };
}

function input(jobId: string, source: SourceRef | undefined, r: JobResult = result()): SinkWriteInput {
  return { jobId, model: 'echo', request: { model: 'echo', prompt: 'q' }, result: r, source, signal: new AbortController().signal, logger: memoryLogger() };
}

describe('mongodb sink: write-back onto the source document', () => {
  it('writes response, status, usage and timings, and clears claim and error fields', async () => {
    const client = new FakeMongoClient();
    const coll = client.db('app').collection('requests');
    const [id] = coll.insert({ prompt: 'q', status: 'queued', llmq_claimed_by: 'x', llmq_lease_until: new Date(), error: { message: 'old' } });
    const { jobId, source } = sourceFor({ _id: id, prompt: 'q' });
    const { sink } = await sinkWith(client);
    await sink.write(input(jobId, source));
    const doc = coll.get(id)!;
    expect(doc).toMatchObject({
      status: 'done',
      response: 'the answer',
      usage: { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 },
      finish_reason: 'stop',
      result_model: 'echo',
      llmq_job_id: jobId,
      started_at: new Date(t0 + 1000),
      completed_at: new Date(t0 + 2000),
    });
    expect(doc).not.toHaveProperty('llmq_claimed_by');
    expect(doc).not.toHaveProperty('llmq_lease_until');
    expect(doc).not.toHaveProperty('error');
  });

  it('uses the field mapping the source put on the job', async () => {
    const client = new FakeMongoClient();
    const coll = client.db('app').collection('requests');
    const [id] = coll.insert({ q: 'x', state: 'queued' });
    const { jobId, source } = sourceFor(
      { _id: id, q: 'x' },
      { fields: { prompt: 'q', response: 'out.text', usage: null, completed_at: 'out.finished' }, status: { field: 'state', done: 'complete' } },
    );
    const { sink } = await sinkWith(client);
    await sink.write(input(jobId, source));
    const doc = coll.get(id)!;
    expect(doc).toMatchObject({ state: 'complete', out: { text: 'the answer', finished: new Date(t0 + 2000) } });
    expect(doc).not.toHaveProperty('usage');
    expect(doc).not.toHaveProperty('status');
  });

  it('is idempotent: the same result written twice leaves the same document', async () => {
    const client = new FakeMongoClient();
    const coll = client.db('app').collection('requests');
    const [id] = coll.insert({ prompt: 'q', status: 'queued' });
    const { jobId, source } = sourceFor({ _id: id, prompt: 'q' });
    const { sink } = await sinkWith(client);
    await sink.write(input(jobId, source));
    const once = coll.get(id);
    await sink.write(input(jobId, source));
    expect(coll.get(id)).toEqual(once);
  });

  it('never replaces a result that finished later with an older, re-delivered one', async () => {
    const client = new FakeMongoClient();
    const coll = client.db('app').collection('requests');
    const [id] = coll.insert({ prompt: 'q', status: 'queued' });
    const { jobId, source } = sourceFor({ _id: id, prompt: 'q' });
    const { sink } = await sinkWith(client);
    const l = memoryLogger();
    await sink.write(input(jobId, source, result({ text: 'newer', completed_at: t0 + 9000 })));
    await sink.write({ ...input(jobId, source, result({ text: 'older', completed_at: t0 + 2000 })), logger: l });
    expect(coll.get(id)).toMatchObject({ response: 'newer', completed_at: new Date(t0 + 9000) });
    expect(l.entries.some((e) => /newer result/.test(e.msg))).toBe(true);
    const guard = client.calls.filter((c) => c.op === 'updateOne').at(-1)?.args[0];
    expect(guard).toMatchObject({ completed_at: { $not: { $gt: new Date(t0 + 2000) } } });
  });

  it('lets a success replace a failure, but never the other way round', async () => {
    const client = new FakeMongoClient();
    const coll = client.db('app').collection('requests');
    const [id] = coll.insert({ prompt: 'q', status: 'queued' });
    const { jobId, source } = sourceFor({ _id: id, prompt: 'q' });
    const { sink } = await sinkWith(client);

    expect(await sink.markFailed({ jobId, source, error: { message: 'backend down', code: 'ERR_BACKEND_UNAVAILABLE' } })).toBe(true);
    expect(coll.get(id)).toMatchObject({ status: 'failed', error: { code: 'ERR_BACKEND_UNAVAILABLE' }, failed_at: expect.any(Date), llmq_job_id: jobId });

    await sink.write(input(jobId, source));
    expect(coll.get(id)).toMatchObject({ status: 'done', response: 'the answer' });
    expect(coll.get(id)).not.toHaveProperty('error');

    expect(await sink.markFailed({ jobId, source, error: { message: 'late', code: 'ERR_INTERNAL' } })).toBe(false);
    expect(coll.get(id)?.status).toBe('done');
  });

  it('logs and moves on when the document was deleted', async () => {
    const client = new FakeMongoClient();
    const { jobId, source } = sourceFor({ _id: new ObjectId(), prompt: 'q' });
    const { sink } = await sinkWith(client);
    const i = input(jobId, source);
    await sink.write(i);
    expect((i.logger as ReturnType<typeof memoryLogger>).entries.some((e) => e.level === 'warn' && /no longer exists/.test(e.msg))).toBe(true);
  });

  it('throws a retryable ERR_SINK_WRITE when the write fails', async () => {
    const client = new FakeMongoClient();
    const [id] = client.db('app').collection('requests').insert({ prompt: 'q' });
    const { jobId, source } = sourceFor({ _id: id, prompt: 'q' });
    const { sink } = await sinkWith(client);
    client.failNext('updateOne', new FakeMongoError('not primary', 10107));
    const err = await sink.write(input(jobId, source)).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_SINK_WRITE');
    expect(isRetryable(err)).toBe(true);
    expect(String(err)).toMatch(/not primary/);
  });

  it('refuses, without retry, a job that has no mongodb document to write back to', async () => {
    const client = new FakeMongoClient();
    const { sink } = await sinkWith(client);
    const err = await sink.write(input('http-1', { type: 'http' })).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_SINK_WRITE');
    expect(isRetryable(err)).toBe(false);
  });
});

describe('mongodb sink: results collection', () => {
  it('upserts one document per job id, from any source, idempotently', async () => {
    const client = new FakeMongoClient();
    const { sink } = await sinkWith(client, { db: 'out', collection: 'results' });
    await sink.write(input('job-1', { type: 'http' }));
    await sink.write(input('job-1', { type: 'http' }));
    const docs = client.db('out').collection('results').all();
    expect(docs).toHaveLength(1);
    expect(docs[0]).toMatchObject({ _id: 'job-1', status: 'done', response: 'the answer', llmq_job_id: 'job-1', source: { type: 'http' } });
  });

  it('keeps the newer result when an older one arrives later', async () => {
    const client = new FakeMongoClient();
    const { sink } = await sinkWith(client, { db: 'out', collection: 'results' });
    await sink.write(input('job-1', undefined, result({ text: 'newer', completed_at: t0 + 9000 })));
    await sink.write(input('job-1', undefined, result({ text: 'older', completed_at: t0 + 1 })));
    expect(client.db('out').collection('results').get('job-1')).toMatchObject({ response: 'newer' });
  });

  it('needs db and collection together', () => {
    expect(mongoSinkConfigSchema.safeParse({ url: 'mongodb://h', collection: 'results' }).success).toBe(false);
    expect(mongoSink.type).toBe('mongodb');
    expect(mongoSink.kind).toBe('sink');
  });
});
