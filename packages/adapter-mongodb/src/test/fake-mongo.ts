import { BSON, ObjectId } from 'mongodb';
import type {
  ChangeEvent,
  ChangeStreamLike,
  CollectionLike,
  DbLike,
  Document,
  EjsonLike,
  FindCursorLike,
  MongoClientLike,
  UpdateResultLike,
  WatchOptions,
} from '../driver.js';

/*
 * A recording fake of exactly the driver surface in ../driver.ts: an in-memory collection
 * with the query operators the adapters use (and an error for any other, so a test can never
 * pass on an operator the fake ignores), an oplog that change streams read with resume tokens
 * and post-batch tokens the way the driver reports them, and failures on request.
 */

export const ejson: EjsonLike = {
  stringify: (value) => BSON.EJSON.stringify(value, { relaxed: false }),
  parse: (text) => BSON.EJSON.parse(text, { relaxed: false }),
};

export interface FakeCall {
  op: string;
  collection?: string;
  args: unknown[];
}

export class FakeMongoError extends Error {
  readonly code: number | undefined;
  constructor(message: string, code?: number) {
    super(message);
    this.name = 'MongoServerError';
    this.code = code;
  }
}

// ------------------------------------------------------------------ values

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date) && !(v instanceof ObjectId);
}

function clone<T>(v: T): T {
  if (Array.isArray(v)) return v.map(clone) as T;
  if (v instanceof Date) return new Date(v.getTime()) as T;
  if (isPlainObject(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, clone(x)])) as T;
  return v;
}

function typeRank(v: unknown): number {
  if (v === undefined || v === null) return 0;
  if (typeof v === 'number' || typeof v === 'bigint') return 1;
  if (typeof v === 'string') return 2;
  if (isPlainObject(v)) return 3;
  if (Array.isArray(v)) return 4;
  if (v instanceof ObjectId) return 7;
  if (typeof v === 'boolean') return 8;
  if (v instanceof Date) return 9;
  return 10;
}

export function compare(a: unknown, b: unknown): number {
  const ra = typeRank(a);
  const rb = typeRank(b);
  if (ra !== rb) return ra - rb;
  if (a instanceof Date && b instanceof Date) return a.getTime() - b.getTime();
  if (a instanceof ObjectId && b instanceof ObjectId) return a.toHexString() < b.toHexString() ? -1 : a.toHexString() > b.toHexString() ? 1 : 0;
  if ((typeof a === 'number' || typeof a === 'bigint') && (typeof b === 'number' || typeof b === 'bigint')) return Number(a) - Number(b);
  if (typeof a === 'string' && typeof b === 'string') return a < b ? -1 : a > b ? 1 : 0;
  const sa = ejson.stringify(a);
  const sb = ejson.stringify(b);
  return sa < sb ? -1 : sa > sb ? 1 : 0;
}

function equal(a: unknown, b: unknown): boolean {
  if ((a === undefined || a === null) && (b === undefined || b === null)) return true;
  return typeRank(a) === typeRank(b) && compare(a, b) === 0;
}

export function getPath(doc: unknown, path: string): unknown {
  let cur = doc;
  for (const part of path.split('.')) {
    if (!isPlainObject(cur)) return undefined;
    cur = cur[part];
  }
  return cur;
}

function setPath(doc: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let cur: Record<string, unknown> = doc;
  for (const part of parts.slice(0, -1)) {
    if (!isPlainObject(cur[part])) cur[part] = {};
    cur = cur[part] as Record<string, unknown>;
  }
  cur[parts.at(-1)!] = clone(value);
}

function unsetPath(doc: Record<string, unknown>, path: string): void {
  const parts = path.split('.');
  let cur: unknown = doc;
  for (const part of parts.slice(0, -1)) {
    if (!isPlainObject(cur)) return;
    cur = cur[part];
  }
  if (isPlainObject(cur)) delete cur[parts.at(-1)!];
}

function matchOperators(value: unknown, ops: Record<string, unknown>): boolean {
  for (const [op, arg] of Object.entries(ops)) {
    switch (op) {
      case '$in':
        if (!(arg as unknown[]).some((x) => equal(value, x))) return false;
        break;
      case '$ne':
        if (equal(value, arg)) return false;
        break;
      case '$lt':
        if (value === undefined || value === null || typeRank(value) !== typeRank(arg) || compare(value, arg) >= 0) return false;
        break;
      case '$gt':
        if (value === undefined || value === null || typeRank(value) !== typeRank(arg) || compare(value, arg) <= 0) return false;
        break;
      case '$not':
        if (matchOperators(value, arg as Record<string, unknown>)) return false;
        break;
      case '$exists':
        if ((value !== undefined) !== arg) return false;
        break;
      default:
        throw new Error(`fake mongo: query operator ${op} is not implemented`);
    }
  }
  return true;
}

export function matches(doc: Document, filter: Document): boolean {
  for (const [key, cond] of Object.entries(filter)) {
    if (key === '$or') {
      if (!(cond as Document[]).some((f) => matches(doc, f))) return false;
      continue;
    }
    if (key.startsWith('$')) throw new Error(`fake mongo: top-level operator ${key} is not implemented`);
    const value = getPath(doc, key);
    if (isPlainObject(cond) && Object.keys(cond).some((k) => k.startsWith('$'))) {
      if (!matchOperators(value, cond)) return false;
    } else if (!equal(value, cond)) {
      return false;
    }
  }
  return true;
}

function applyUpdate(doc: Record<string, unknown>, update: Document): void {
  for (const [op, fields] of Object.entries(update)) {
    if (op === '$set') for (const [path, value] of Object.entries(fields as Document)) setPath(doc, path, value);
    else if (op === '$unset') for (const path of Object.keys(fields as Document)) unsetPath(doc, path);
    else throw new Error(`fake mongo: update operator ${op} is not implemented`);
  }
}

function sortDocs(docs: Document[], sort: Document | undefined): Document[] {
  if (!sort) return docs;
  const entries = Object.entries(sort) as [string, number][];
  return [...docs].sort((a, b) => {
    for (const [path, dir] of entries) {
      const c = compare(getPath(a, path), getPath(b, path));
      if (c !== 0) return dir * c;
    }
    return 0;
  });
}

// ------------------------------------------------------------------ failures

type FailureRule = { op: string; error: Error; times: number };

class Failures {
  private readonly rules: FailureRule[] = [];
  add(op: string, error: Error, times: number): void {
    this.rules.push({ op, error, times });
  }
  check(op: string): void {
    const i = this.rules.findIndex((r) => r.op === op);
    if (i < 0) return;
    const rule = this.rules[i]!;
    rule.times--;
    if (rule.times <= 0) this.rules.splice(i, 1);
    throw rule.error;
  }
}

// ------------------------------------------------------------------ oplog

interface OplogEntry {
  seq: number;
  ns: string;
  operationType: 'insert' | 'update' | 'replace';
  id: unknown;
}

export function tokenOf(seq: number): { _data: string } {
  return { _data: seq.toString(16).padStart(16, '0') };
}

function seqOf(token: unknown): number {
  const data = (token as { _data?: unknown } | null)?._data;
  if (typeof data !== 'string') throw new FakeMongoError('fake mongo: malformed resume token', 260);
  return parseInt(data, 16);
}

// ------------------------------------------------------------------ client

export class FakeMongoClient implements MongoClientLike {
  readonly calls: FakeCall[] = [];
  readonly failures = new Failures();
  /** What `hello` answers: a replica-set member by default. */
  hello: Document = { isWritablePrimary: true, setName: 'rs0' };
  readonly oplog: OplogEntry[] = [];
  /** Oplog entries before this sequence number are gone (as on a server that rolled over). */
  oplogStart = 0;
  /** How long an empty getMore waits for events (the fake's maxAwaitTimeMS, capped). */
  awaitMs = 5;
  closed = false;
  private seq = 0;
  private readonly dbs = new Map<string, FakeDb>();
  private waiters = new Set<() => void>();

  db(name: string): FakeDb {
    let db = this.dbs.get(name);
    if (!db) {
      db = new FakeDb(this, name);
      this.dbs.set(name, db);
    }
    return db;
  }

  async close(): Promise<void> {
    this.calls.push({ op: 'close', args: [] });
    this.closed = true;
  }

  /** Makes the next `times` calls of `op` (e.g. `findOneAndUpdate`, `tryNext`, `command`) throw. */
  failNext(op: string, error: Error, times = 1): void {
    this.failures.add(op, error, times);
  }

  /** Drops the oplog up to now: resuming from an older token then fails with code 286. */
  truncateOplog(): void {
    this.oplogStart = this.seq + 1;
  }

  /** @internal */
  record(entry: Omit<OplogEntry, 'seq'>): void {
    this.seq++;
    this.oplog.push({ ...entry, seq: this.seq });
    for (const wake of this.waiters) wake();
  }

  /** @internal */
  get lastSeq(): number {
    return this.seq;
  }

  /** @internal */
  waitForEvent(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }
}

export class FakeDb implements DbLike {
  private readonly collections = new Map<string, FakeCollection>();
  constructor(
    readonly client: FakeMongoClient,
    readonly name: string,
  ) {}

  collection(name: string): FakeCollection {
    let c = this.collections.get(name);
    if (!c) {
      c = new FakeCollection(this.client, `${this.name}.${name}`);
      this.collections.set(name, c);
    }
    return c;
  }

  async command(command: Document): Promise<Document> {
    this.client.calls.push({ op: 'command', args: [command] });
    this.client.failures.check('command');
    if ('hello' in command) return { ...this.client.hello, ok: 1 };
    if ('ping' in command) return { ok: 1 };
    throw new Error(`fake mongo: command ${Object.keys(command)[0]} is not implemented`);
  }
}

export class FakeCollection implements CollectionLike {
  readonly docs = new Map<string, Record<string, unknown>>();
  readonly streams: FakeChangeStream[] = [];

  constructor(
    readonly client: FakeMongoClient,
    readonly ns: string,
  ) {}

  private call(op: string, args: unknown[]): void {
    this.client.calls.push({ op, collection: this.ns, args: clone(args) });
    this.client.failures.check(op);
  }

  /** Test helper (not used by the adapters): inserts documents, each an `insert` event. */
  insert(...docs: Document[]): unknown[] {
    return docs.map((d) => {
      const doc = clone(d) as Record<string, unknown>;
      doc._id ??= new ObjectId();
      const key = ejson.stringify(doc._id);
      if (this.docs.has(key)) throw new FakeMongoError('E11000 duplicate key error', 11000);
      this.docs.set(key, doc);
      this.client.record({ ns: this.ns, operationType: 'insert', id: doc._id });
      return doc._id;
    });
  }

  /** Test helper: the stored document (a copy). */
  get(id: unknown): Record<string, unknown> | undefined {
    const d = this.docs.get(ejson.stringify(id));
    return d && clone(d);
  }

  all(): Record<string, unknown>[] {
    return [...this.docs.values()].map(clone);
  }

  /** Test helper: updates behind the adapters' back (e.g. a user resetting a document). */
  set(id: unknown, fields: Document): void {
    const doc = this.docs.get(ejson.stringify(id));
    if (!doc) throw new Error('fake mongo: no such document');
    applyUpdate(doc, { $set: fields });
    this.client.record({ ns: this.ns, operationType: 'update', id });
  }

  /** @internal */
  lookup(id: unknown): Record<string, unknown> | null {
    const d = this.docs.get(ejson.stringify(id));
    return d ? clone(d) : null;
  }

  watch(pipeline: Document[], options: WatchOptions): FakeChangeStream {
    this.call('watch', [pipeline, options]);
    const stream = new FakeChangeStream(this, pipeline, options);
    this.streams.push(stream);
    return stream;
  }

  find(filter: Document): FindCursorLike {
    this.call('find', [filter]);
    let sort: Document | undefined;
    let limit = Number.POSITIVE_INFINITY;
    const cursor: FindCursorLike = {
      sort: (s) => {
        sort = s;
        return cursor;
      },
      limit: (n) => {
        limit = n;
        return cursor;
      },
      toArray: async () => {
        this.client.failures.check('toArray');
        const found = [...this.docs.values()].filter((d) => matches(d, filter));
        return sortDocs(found, sort).slice(0, limit).map(clone);
      },
    };
    return cursor;
  }

  async findOne(filter: Document): Promise<Document | null> {
    this.call('findOne', [filter]);
    const d = [...this.docs.values()].find((x) => matches(x, filter));
    return d ? clone(d) : null;
  }

  async findOneAndUpdate(filter: Document, update: Document, options: { sort?: Document; returnDocument: 'after' | 'before' }): Promise<Document | null> {
    this.call('findOneAndUpdate', [filter, update, options]);
    // Atomic: no await between the match and the write, as on the server.
    const [doc] = sortDocs([...this.docs.values()].filter((d) => matches(d, filter)), options.sort);
    if (!doc) return null;
    const before = clone(doc);
    applyUpdate(doc, update);
    this.client.record({ ns: this.ns, operationType: 'update', id: doc._id });
    return options.returnDocument === 'after' ? clone(doc) : before;
  }

  async updateOne(filter: Document, update: Document, options: { upsert?: boolean } = {}): Promise<UpdateResultLike> {
    this.call('updateOne', [filter, update, options]);
    const doc = [...this.docs.values()].find((d) => matches(d, filter));
    if (doc) {
      applyUpdate(doc, update);
      this.client.record({ ns: this.ns, operationType: 'update', id: doc._id });
      return { matchedCount: 1, modifiedCount: 1 };
    }
    if (options.upsert) {
      const _id = filter._id;
      if (_id !== undefined && this.docs.has(ejson.stringify(_id))) throw new FakeMongoError('E11000 duplicate key error collection', 11000);
      const fresh: Record<string, unknown> = { _id: _id ?? new ObjectId() };
      applyUpdate(fresh, update);
      this.docs.set(ejson.stringify(fresh._id), fresh);
      this.client.record({ ns: this.ns, operationType: 'insert', id: fresh._id });
      return { matchedCount: 0, modifiedCount: 0, upsertedCount: 1 };
    }
    return { matchedCount: 0, modifiedCount: 0 };
  }

  async updateMany(filter: Document, update: Document): Promise<UpdateResultLike> {
    this.call('updateMany', [filter, update]);
    let n = 0;
    for (const doc of this.docs.values()) {
      if (!matches(doc, filter)) continue;
      applyUpdate(doc, update);
      this.client.record({ ns: this.ns, operationType: 'update', id: doc._id });
      n++;
    }
    return { matchedCount: n, modifiedCount: n };
  }
}

/**
 * Reads the collection's oplog entries as change events. Like the server: a resume token
 * older than the oplog fails with code 286 on the first getMore; `fullDocument: updateLookup`
 * is the document as it is when the batch is fetched; `resumeToken` is the event's token, or
 * the post-batch token once the buffer is empty.
 */
export class FakeChangeStream implements ChangeStreamLike {
  closed = false;
  /** Events returned to the caller, in order. */
  readonly delivered: ChangeEvent[] = [];
  private position: number | undefined;
  private buffer: ChangeEvent[] = [];
  private postBatchToken: unknown;
  private token: unknown;
  private readonly match: Document;

  constructor(
    private readonly collection: FakeCollection,
    readonly pipeline: Document[],
    readonly options: WatchOptions,
  ) {
    const stage = pipeline[0];
    if (pipeline.length !== 1 || !stage || !('$match' in stage)) throw new Error('fake mongo: only a single $match stage is implemented');
    this.match = stage.$match as Document;
    this.token = options.resumeAfter;
  }

  get resumeToken(): unknown {
    return this.token;
  }

  bufferedCount(): number {
    return this.buffer.length;
  }

  async tryNext(): Promise<ChangeEvent | null> {
    const client = this.collection.client;
    if (this.closed) throw new FakeMongoError('ChangeStream is closed');
    client.failures.check('tryNext');
    if (this.position === undefined) {
      // Opening the cursor: from the resume token, or from now.
      if (this.options.resumeAfter !== undefined) {
        const seq = seqOf(this.options.resumeAfter);
        if (seq + 1 < client.oplogStart) {
          this.closed = true;
          throw new FakeMongoError('Resume of change stream was not possible, as the resume point may no longer be in the oplog.', 286);
        }
        this.position = seq;
      } else {
        this.position = client.lastSeq;
      }
    }
    if (this.buffer.length === 0) {
      this.fetch();
      if (this.buffer.length === 0) {
        await client.waitForEvent(Math.min(this.options.maxAwaitTimeMS, client.awaitMs));
        if (this.closed) throw new FakeMongoError('ChangeStream is closed');
        this.fetch();
      }
    }
    const event = this.buffer.shift();
    if (!event) {
      this.token = this.postBatchToken ?? this.token;
      return null;
    }
    this.token = this.buffer.length === 0 ? this.postBatchToken : event._id;
    this.delivered.push(event);
    return event;
  }

  private fetch(): void {
    const client = this.collection.client;
    const from = this.position ?? 0;
    for (const entry of client.oplog) {
      if (entry.seq <= from) continue;
      if (this.buffer.length >= this.options.batchSize) break;
      this.position = entry.seq;
      if (entry.ns !== this.collection.ns) continue;
      const event: ChangeEvent = {
        _id: tokenOf(entry.seq),
        operationType: entry.operationType,
        documentKey: { _id: entry.id },
        fullDocument: this.collection.lookup(entry.id),
      };
      if (matches(event, this.match)) this.buffer.push(event);
    }
    this.position = Math.max(this.position ?? 0, from);
    this.postBatchToken = tokenOf(this.position);
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
