import { ObjectId } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { mongoSourceConfigSchema, type MongoSourceConfigInput } from './config.js';
import { documentToJob, writeBackOf } from './mapping.js';
import { ejson } from './test/fake-mongo.js';

function map(doc: Record<string, unknown>, overrides: Partial<MongoSourceConfigInput> = {}) {
  const config = mongoSourceConfigSchema.parse({ url: 'mongodb://h', db: 'app', collection: 'reqs', ...overrides });
  return documentToJob(doc, config, { sourceName: 'src', ejson, write: writeBackOf(config) });
}

describe('documentToJob', () => {
  const _id = new ObjectId('65a1b2c3d4e5f60718293a4b');

  it('builds mongodb:<db>.<coll>:<_id hex> and a ref the sink can find the document with', () => {
    const job = map({ _id, prompt: 'hi', model: 'm1' });
    expect(job.id).toBe('mongodb:app.reqs:65a1b2c3d4e5f60718293a4b');
    expect(job.source.ref).toMatchObject({ db: 'app', collection: 'reqs', id: '65a1b2c3d4e5f60718293a4b' });
    expect(ejson.parse(String(job.source.ref?.id_ejson))).toEqual(_id);
    expect(job.source.ref?.write).toMatchObject({ status: 'status', done: 'done', response: 'response', completed_at: 'completed_at' });
  });

  it('uses string and numeric _ids as they are', () => {
    expect(map({ _id: 'order-7', prompt: 'x', model: 'm' }).id).toBe('mongodb:app.reqs:order-7');
    expect(map({ _id: 42, prompt: 'x', model: 'm' }).id).toBe('mongodb:app.reqs:42');
  });

  it('merges source params under the document params and applies fixed template and timeout', () => {
    const job = map(
      { _id, prompt: 'p', params: { temperature: 0.5, max_tokens: 9 } },
      { model: 'phi3', template: 'phi3.template', params: { max_tokens: 100, min_tokens: 5 }, timeout_ms: 30_000 },
    );
    expect(job.request).toEqual({ model: 'phi3', prompt: 'p', max_tokens: 9, min_tokens: 5, temperature: 0.5, template: 'phi3.template', timeout_ms: 30_000 });
  });

  it("lets the document's model override the source's, unless fields.model is null", () => {
    expect(map({ _id, prompt: 'p', model: 'doc-model' }, { model: 'fixed' }).request.model).toBe('doc-model');
    expect(map({ _id, prompt: 'p', model: 'doc-model' }, { model: 'fixed', fields: { model: null } }).request.model).toBe('fixed');
  });

  it('reads messages when the document has them, and custom nested field names', () => {
    const messages = [{ role: 'user', content: 'hello' }];
    expect(map({ _id, prompt: 'ignored', messages, model: 'm' }).request).toEqual({ model: 'm', messages });
    const job = map({ _id, input: { text: 'nested' }, llm: 'm2' }, { fields: { prompt: 'input.text', model: 'llm' } });
    expect(job.request).toEqual({ model: 'm2', prompt: 'nested' });
  });

  it('rejects documents that are not requests, naming the field', () => {
    expect(() => map({ _id, model: 'm' })).toThrow(/ERR_REQUEST_INVALID/);
    expect(() => map({ _id, prompt: 'p' })).toThrow(/no model/);
    expect(() => map({ _id, prompt: 'p', model: 'm', params: 'hot' })).toThrow(/document\.params: expected an object/);
    expect(() => map({ _id, prompt: 'p', model: 'm', params: { bogus: 1 } })).toThrow(/bogus/);
  });
});
