/**
 * The llama-cpp backend on real GGUF files: always the generated tiny model, and also the file
 * named by LLMQ_TEST_GGUF when it is set (a third-party model, for conformance).
 */
import { mkdtempSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, type GenerateOutput, type GenerationRequest, type Logger } from '@llmq/core';
import { generateTinyGguf, TINY_GGUF_TOKENS } from '@llmq/testing';
import type { LlamaContextSequence, LlamaModel } from 'node-llama-cpp';
import { LLAMA_GPU_SETTINGS, llamaCppBackend, llamaCppStats, type LlamaCppBackend, type LlamaCppConfig } from './index.js';
import type { SlotPool } from './slot-pool.js';

const templatesDir = resolve(dirname(fileURLToPath(import.meta.url)), '../../../config/templates');
const tinyPath = await generateTinyGguf();
const external = process.env.LLMQ_TEST_GGUF;
if (!external) {
  console.info('[backend-llama-cpp] LLMQ_TEST_GGUF is not set: the run on a third-party GGUF is SKIPPED (generated tiny model only)');
}
// LLMQ_TEST_GPU=cuda (or vulkan, metal, auto) runs the shared backend of the suites below on that GPU,
// every layer offloaded; unset, on the CPU, as in CI (no machine there has a GPU).
const gpuEnv = process.env.LLMQ_TEST_GPU;
if (gpuEnv !== undefined && !(LLAMA_GPU_SETTINGS as readonly string[]).includes(gpuEnv)) {
  throw new Error(`LLMQ_TEST_GPU must be one of ${LLAMA_GPU_SETTINGS.join(', ')}; got "${gpuEnv}"`);
}
const testGpu = (gpuEnv as (typeof LLAMA_GPU_SETTINGS)[number] | undefined) ?? false;
/** The device options of the backends the suites below share the model with: a backend on another device loads it again. */
const device = testGpu ? { gpu: testGpu, gpu_layers: 'max' as const } : { gpu: false as const };
if (!testGpu) console.info('[backend-llama-cpp] LLMQ_TEST_GPU is not set: the GPU run is SKIPPED (CPU only)');

interface LogEntry {
  level: string;
  obj: object | string;
  msg?: string | undefined;
}
const logs: LogEntry[] = [];
const logger: Logger = {
  debug: (obj, msg) => void logs.push({ level: 'debug', obj, msg }),
  info: (obj, msg) => void logs.push({ level: 'info', obj, msg }),
  warn: (obj, msg) => void logs.push({ level: 'warn', obj, msg }),
  error: (obj, msg) => void logs.push({ level: 'error', obj, msg }),
  child: () => logger,
};

async function createBackend(config: LlamaCppConfig, concurrency: number): Promise<LlamaCppBackend> {
  const ctx = { logger, signal: new AbortController().signal, configDir: tmpdir(), env: {} };
  return (await llamaCppBackend.create({ name: 'test', config, concurrency }, ctx)) as LlamaCppBackend;
}

interface JobRun {
  promise: Promise<GenerateOutput>;
  streamed: () => string;
  firstTokenAt: () => number | undefined;
  settledAt: () => number | undefined;
  controller: AbortController;
}

function startJob(backend: LlamaCppBackend, request: Omit<GenerationRequest, 'model'>, signal?: AbortSignal, onText?: () => void): JobRun {
  const controller = new AbortController();
  const chunks: string[] = [];
  let first: number | undefined;
  let settled: number | undefined;
  const promise = backend.generate({
    jobId: 'job',
    attempt: 1,
    model: 'test',
    request: { model: 'test', ...request },
    signal: signal ?? controller.signal,
    logger,
    onToken(text) {
      first ??= performance.now();
      chunks.push(text);
      onText?.();
    },
  });
  void promise.then(
    () => (settled = performance.now()),
    () => (settled = performance.now()),
  );
  return { promise, controller, streamed: () => chunks.join(''), firstTokenAt: () => first, settledAt: () => settled };
}

interface ObservedBatch {
  sequences: number;
  tokens: number;
  /** Sequence ids in the order they were added. */
  ids: number[];
}

/**
 * Records the sequences and tokens of each batch llama.cpp decodes for this backend, by wrapping
 * node-llama-cpp's native context object (a private of node-llama-cpp 3.22, which is pinned).
 */
function observeBatches(backend: LlamaCppBackend): { batches: ObservedBatch[]; stop(): void } {
  const context = (backend as unknown as { context: { _ctx: Record<string, unknown> } }).context;
  const native = context._ctx;
  const batches: ObservedBatch[] = [];
  const spy: Record<string, (...args: never[]) => unknown> = {
    initBatch: (...args) => {
      batches.push({ sequences: 0, tokens: 0, ids: [] });
      return (native.initBatch as (...a: never[]) => unknown).apply(native, args);
    },
    addToBatch: (...args) => {
      const batch = batches.at(-1);
      if (batch) {
        batch.sequences++;
        batch.tokens += (args[2] as ArrayLike<number>).length;
        batch.ids.push(args[0] as number);
      }
      return (native.addToBatch as (...a: never[]) => unknown).apply(native, args);
    },
  };
  context._ctx = new Proxy(native, {
    get(target, prop) {
      if (typeof prop === 'string' && prop in spy) return spy[prop];
      const value = target[prop as string];
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { batches, stop: () => void (context._ctx = native) };
}

async function run(backend: LlamaCppBackend, request: Omit<GenerationRequest, 'model'>) {
  const job = startJob(backend, request);
  const out = await job.promise;
  return { ...out, streamed: job.streamed() };
}

async function waitFor(what: string, cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

const failure = (p: Promise<unknown>) =>
  p.then(
    () => undefined,
    (e: unknown) => e as Error & { details?: Record<string, unknown> },
  );

/** The JSON schema the JSON tests ask for, and a validator for exactly that schema. */
const personSchema = {
  type: 'object',
  properties: {
    name: { type: 'string' },
    age: { type: 'integer' },
    tags: { type: 'array', items: { type: 'string' } },
    ok: { type: 'boolean' },
  },
  required: ['name', 'age', 'tags', 'ok'],
  additionalProperties: false,
};
function isPerson(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  return (
    Object.keys(o).sort().join(',') === 'age,name,ok,tags' &&
    typeof o.name === 'string' &&
    Number.isInteger(o.age) &&
    Array.isArray(o.tags) &&
    o.tags.every((t) => typeof t === 'string') &&
    typeof o.ok === 'boolean'
  );
}

/**
 * Shapes pydantic and hand-written schemas use that node-llama-cpp's grammar gets wrong unless
 * rewritten: an optional field (`anyOf` with null, read as always null), a `#/definitions/`
 * reference (read as any JSON) and a list of types with an object (read as always null).
 */
const ticketSchema = {
  type: 'object',
  definitions: { Level: { type: 'string', enum: ['low', 'high'] } },
  // Written in this order: the optional ones first, before closing mode (near max_tokens) favours null.
  properties: {
    meta: { type: ['object', 'null'], properties: { k: { type: 'boolean' } }, required: ['k'], additionalProperties: false },
    note: { anyOf: [{ type: 'string' }, { type: 'null' }] },
    level: { $ref: '#/definitions/Level' },
    n: { type: 'integer' },
  },
  required: ['note', 'level', 'n', 'meta'],
  additionalProperties: false,
};

const models = [
  { label: 'generated tiny GGUF', path: tinyPath, tiny: true },
  ...(external ? [{ label: `LLMQ_TEST_GGUF (${basename(external)})`, path: external, tiny: false }] : []),
];

describe.each(models)('llama-cpp backend on the $label', ({ path, tiny }) => {
  let backend: LlamaCppBackend;
  let loadsBefore: number;
  let contextsBefore: number;

  beforeAll(async () => {
    const stats = llamaCppStats();
    loadsBefore = stats.modelLoads;
    contextsBefore = stats.contextsCreated;
    // 2048 tokens a sequence: long enough that the cancel tests' jobs are still decoding when they
    // look. A sequence decodes ~680 tokens/s here with four at work, so filling one takes ~3 s; with
    // 1024 it took 1.5 s, and the timeout test's victim finished at its context limit about half the
    // time, just before its 1.5 s timeout.
    // One thread: on a shared 2-core machine llama.cpp's spinning threads make `threads: 2` up to
    // 100x slower for a model this small whenever the other core is busy (see the README).
    backend = await createBackend({ model_path: path, context_size: 2048, threads: 1, ...device, templates_dir: templatesDir }, 4);
  });
  afterAll(async () => {
    await backend.close();
  });

  // Read in the first tests after beforeAll, while the newest model this file loaded is this suite's.
  const readyLog = () => logs.filter((l) => l.msg === 'llama-cpp model ready').at(-1)?.obj as { gpu: unknown; gpu_layers: number; warm_up_ms: unknown; mmap: unknown } | undefined;

  it.runIf(testGpu)(`runs on the GPU (LLMQ_TEST_GPU=${String(testGpu)}), every layer offloaded`, () => {
    const ready = readyLog();
    if (testGpu === 'auto') expect(ready?.gpu).not.toBe(false);
    else expect(ready?.gpu).toBe(testGpu);
    expect(ready?.gpu_layers).toBeGreaterThan(0);
  });

  it('loads the model, decodes once before the first job, and passes check()', async () => {
    // The warm-up decode (see LlamaCppBackend.warmUp) ran and was timed.
    expect(readyLog()?.warm_up_ms).toEqual(expect.any(Number));
    await expect(backend.check()).resolves.toBeUndefined();
    expect(backend.contextSize).toBeGreaterThanOrEqual(2048);
    expect(llamaCppStats().modelLoads).toBe(loadsBefore + 1);
  });

  it('runs four concurrent jobs together on one model load and one context', async () => {
    const observed = observeBatches(backend);
    const jobs = [0, 1, 2, 3].map((i) => startJob(backend, { prompt: `Job number ${i}:`, max_tokens: 24, temperature: 0 }));
    const outs = await Promise.all(jobs.map((j) => j.promise)).finally(observed.stop);
    // The four prompts in one batch, then each step of generation one batch of all four sequences
    // (a token each): 23 steps. node-llama-cpp alone leaves one sequence out of nearly each (31–32 batches, mostly of 3).
    const [prompts, ...steps] = observed.batches;
    expect(prompts?.sequences).toBe(4);
    expect(steps).toHaveLength(23);
    expect(steps.filter((b) => b.sequences !== 4 || b.tokens !== 4)).toEqual([]);
    // In one run of consecutive sequence ids, the only layout llama.cpp decodes in one pass (its
    // per-sequence KV streams take only increasing, consecutive ids into a micro-batch): in the
    // order node-llama-cpp queued them, steps came as 2 or 3 passes (see SequenceOrder).
    const run = (ids: number[]) => ids.every((id, i) => i === 0 || id === ids[i - 1]! + 1);
    expect(observed.batches.filter((b) => !run(b.ids)).map((b) => b.ids)).toEqual([]);
    for (const out of outs) expect(out.usage.completion_tokens).toBe(24);
    // Decoded side by side: every job had its first token before any job finished.
    const lastFirst = Math.max(...jobs.map((j) => j.firstTokenAt() ?? Infinity));
    const firstDone = Math.min(...jobs.map((j) => j.settledAt() ?? -Infinity));
    expect(lastFirst).toBeLessThan(firstDone);
    const stats = llamaCppStats();
    expect(stats.modelLoads).toBe(loadsBefore + 1);
    expect(stats.contextsCreated).toBe(contextsBefore + 1);
    expect(backend.load).toEqual({ sequences: 4, busy: 0, waiting: 0 });
  });

  it('lays each decode batch out in sequence order, whatever order the sequences queued in', async () => {
    // Four sequences queue their prompts in the order 3, 1, 0, 2 (as they would when their
    // samplings finish in that order); node-llama-cpp lays a batch out in queue order, which
    // llama.cpp would decode in three passes.
    const internals = backend as unknown as { pool: SlotPool<{ index: number; sequence: LlamaContextSequence }>; model: LlamaModel };
    const signal = new AbortController().signal;
    const slots = [];
    for (let i = 0; i < 4; i++) slots.push(await internals.pool.acquire(signal));
    const observed = observeBatches(backend);
    try {
      const evaluations = [3, 1, 0, 2].map((i) => slots[i]!.sequence.evaluate(internals.model.tokenize(`Sequence ${i} says`), { temperature: 0 }));
      await Promise.all(evaluations.map((evaluation) => evaluation.next()));
      await Promise.all(evaluations.map((evaluation) => evaluation.return()));
    } finally {
      observed.stop();
      for (const slot of slots) {
        await slot.sequence.clearHistory();
        internals.pool.release(slot);
      }
    }
    // The slots' sequences were made in order: slot i holds sequence id i.
    expect(slots.map((slot) => slot.index)).toEqual([0, 1, 2, 3]);
    expect(observed.batches[0]?.ids).toEqual([0, 1, 2, 3]);
  });

  it('shares the loaded model with a second backend on the same file (with two threads)', async () => {
    const second = await createBackend({ model_path: path, context_size: 256, threads: 2, ...device }, 1);
    try {
      expect(llamaCppStats().modelLoads).toBe(loadsBefore + 1);
      const out = await run(second, { prompt: 'Shared', max_tokens: 4, temperature: 0 });
      expect(out.usage.completion_tokens).toBe(4);
    } finally {
      await second.close();
    }
    // Still loaded for the first backend.
    await expect(backend.check()).resolves.toBeUndefined();
    expect((await run(backend, { prompt: 'Still here', max_tokens: 2, temperature: 0 })).usage.completion_tokens).toBe(2);
  });

  it('reads the model into memory by default, and with mmap: true maps the file in a load of its own, with the same answers', async () => {
    /** Whether this process has the GGUF file mapped (Linux; undefined elsewhere). */
    const fileMapped = () => (process.platform === 'linux' ? readFileSync('/proc/self/maps', 'utf8').includes(realpathSync(path)) : undefined);
    const live = llamaCppStats().liveModels;
    // Same file and device as the suite's backend, default mmap: it shares that load.
    const read = await createBackend({ model_path: path, context_size: 256, threads: 1, ...device }, 1);
    expect(readyLog()).toMatchObject({ mmap: false, loaded: false });
    if (process.platform === 'linux') expect(fileMapped()).toBe(false);
    const mapped = await createBackend({ model_path: path, context_size: 256, threads: 1, ...device, mmap: true }, 1);
    try {
      expect(readyLog()).toMatchObject({ mmap: true, loaded: true });
      expect(llamaCppStats()).toMatchObject({ modelLoads: loadsBefore + 2, liveModels: live + 1 });
      if (process.platform === 'linux') expect(fileMapped()).toBe(true);
      // Same context shape on both: the greedy answer is the model's, however it was loaded.
      const greedy = { prompt: 'Mapped or read', max_tokens: 12, temperature: 0 };
      expect((await run(mapped, greedy)).text).toBe((await run(read, greedy)).text);
    } finally {
      await mapped.close();
      await read.close();
    }
    expect(llamaCppStats().liveModels).toBe(live);
    if (process.platform === 'linux') expect(fileMapped()).toBe(false);
    await expect(backend.check()).resolves.toBeUndefined();
  });

  it('asks for the next token before it works out and streams the text of the current one', async () => {
    // So llama.cpp decodes while JavaScript detokenizes, checks stop strings and streams. Checked
    // with one job on this 4-sequence context (node-llama-cpp starts the decode from an immediate)
    // and on a context of one sequence (it starts it at once).
    const single = await createBackend({ model_path: path, context_size: 256, threads: 1, ...device }, 1);
    try {
      for (const b of [backend, single]) {
        const observed = observeBatches(b);
        const begun: number[] = [];
        const job = startJob(b, { prompt: 'Count with me:', max_tokens: 12, temperature: 0 }, undefined, () => begun.push(observed.batches.length));
        await job.promise.finally(observed.stop);
        expect(begun.length).toBeGreaterThanOrEqual(6);
        // Batch 1 is the prompt's. When text k is streamed, batch k + 1 (the one that yields the
        // token after it) has begun; the last text has no token after it.
        begun.slice(0, -1).forEach((batches, i) => expect(batches, `batches begun when text ${i + 1} of ${begun.length} was streamed`).toBeGreaterThanOrEqual(i + 2));
      }
    } finally {
      await single.close();
    }
  });

  it('gives the same greedy answer every time, and the same sampled answer for the same seed', async () => {
    const greedy = { prompt: 'The capital of France is', max_tokens: 24, temperature: 0 };
    const a = await run(backend, greedy);
    const b = await run(backend, greedy);
    expect(a.text.length).toBeGreaterThan(0);
    expect(b.text).toBe(a.text);
    const sampled = { prompt: 'Once upon a time', max_tokens: 24, temperature: 1, top_k: 0, top_p: 1, min_p: 0 };
    const s1 = await run(backend, { ...sampled, seed: 11 });
    const s2 = await run(backend, { ...sampled, seed: 11 });
    const s3 = await run(backend, { ...sampled, seed: 12 });
    expect(s2.text).toBe(s1.text);
    expect(s3.text).not.toBe(s1.text);
  });

  it('takes top_p 0 as "only the most likely token": the greedy answer whatever the seed', async () => {
    const prompt = 'Once upon a time';
    const greedy = await run(backend, { prompt, max_tokens: 24, temperature: 0 });
    for (const seed of [11, 12, 13]) {
      const out = await run(backend, { prompt, max_tokens: 24, temperature: 1.5, top_k: 0, min_p: 0, top_p: 0, seed });
      expect(out.text, `seed ${seed}`).toBe(greedy.text);
    }
  });

  it('honours max_tokens and streams exactly the returned text', async () => {
    const out = await run(backend, { prompt: 'Count:', max_tokens: 7, temperature: 0 });
    expect(out.finish_reason).toBe('length');
    expect(out.usage.completion_tokens).toBe(7);
    expect(out.usage.prompt_tokens).toBe((await backend.preparePrompt({ prompt: 'Count:' })).tokens.length);
    expect(out.streamed).toBe(out.text);
  });

  it('stops at a stop string, which is neither returned nor streamed', async () => {
    const request = { prompt: 'Say something:', max_tokens: 40, temperature: 0 };
    const full = (await run(backend, request)).text;
    let at = -1;
    for (let i = 3; i + 2 <= full.length; i++) {
      const candidate = full.slice(i, i + 2);
      if (candidate.trim().length === 2 && !candidate.includes('\uFFFD') && full.indexOf(candidate) === i) {
        at = i;
        break;
      }
    }
    expect(at, `no usable stop string in ${JSON.stringify(full)}`).toBeGreaterThan(0);
    const stop = full.slice(at, at + 2);
    const out = await run(backend, { ...request, stop: ['\u0001never', stop] });
    expect(out.finish_reason).toBe('stop');
    expect(out.text).toBe(full.slice(0, at));
    expect(out.streamed).toBe(out.text);
  });

  it('answers a JSON-schema job with JSON that validates, even when max_tokens cuts it short', async () => {
    for (const [temperature, max_tokens, seed] of [
      [0, 64, 1],
      [1, 64, 2],
      [1, 6, 3],
      [1.5, 1, 4],
    ] as const) {
      const out = await run(backend, {
        prompt: 'Describe a person as JSON:',
        temperature,
        max_tokens,
        seed,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: personSchema } },
      });
      const value: unknown = JSON.parse(out.text);
      expect(isPerson(value), out.text).toBe(true);
      expect(out.streamed).toBe(out.text);
    }
  });

  it('honours anyOf and #/definitions/ references, and writes integers with plain digits', async () => {
    const answers: { note: unknown; meta: unknown }[] = [];
    for (const seed of [11, 12, 13, 14, 15, 16]) {
      const out = await run(backend, { prompt: 'Ticket:', temperature: 1, max_tokens: 96, seed, response_format: { type: 'json_schema', json_schema: { schema: ticketSchema } } });
      const value = JSON.parse(out.text) as { note: unknown; level: unknown; n: unknown; meta: unknown };
      expect(Object.keys(value).sort(), out.text).toEqual(['level', 'meta', 'n', 'note']);
      expect(['low', 'high'], out.text).toContain(value.level);
      expect(value.note === null || typeof value.note === 'string', out.text).toBe(true);
      const meta = value.meta as { k?: unknown } | null;
      expect(meta === null || (Object.keys(meta).join() === 'k' && typeof meta.k === 'boolean'), out.text).toBe(true);
      expect(out.text, 'an integer with an exponent').toMatch(/"n": ?-?\d+\s*[,}]/);
      answers.push(value);
    }
    // node-llama-cpp alone turns both into "always null".
    expect(answers.some((a) => typeof a.note === 'string'), JSON.stringify(answers)).toBe(true);
    expect(answers.some((a) => a.meta !== null), JSON.stringify(answers)).toBe(true);
  });

  it('leaves open what a schema leaves open: an Any field, a bare {}, an object without properties', async () => {
    // pydantic writes an `Any` field as a schema of annotations only; node-llama-cpp alone answers
    // it with null every time, a bare {} likewise, and { type: "object" } with {} every time.
    const kinds = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v);
    const seen = { field: new Set<string>(), bare: new Set<string>(), keys: 0 };
    for (const seed of [21, 22, 23, 24, 25, 26]) {
      const json = (schema: unknown) => run(backend, { prompt: 'JSON:', temperature: 1, max_tokens: 48, seed, response_format: { type: 'json_schema', json_schema: { schema } } });
      const field = await json({ type: 'object', properties: { a: { title: 'A' }, n: { type: 'integer' } }, required: ['a', 'n'] });
      const value = JSON.parse(field.text) as { a: unknown; n: unknown };
      expect(Object.keys(value).sort(), field.text).toEqual(['a', 'n']);
      expect(Number.isInteger(value.n), field.text).toBe(true);
      seen.field.add(kinds(value.a));
      const bare = await json({});
      seen.bare.add(kinds(JSON.parse(bare.text)));
      const object = await json({ type: 'object' });
      const parsed: unknown = JSON.parse(object.text);
      expect(kinds(parsed), object.text).toBe('object');
      seen.keys += Object.keys(parsed as object).length;
    }
    expect([...seen.field].filter((k) => k !== 'null').length, [...seen.field].join()).toBeGreaterThan(0);
    expect([...seen.bare].filter((k) => k !== 'null').length, [...seen.bare].join()).toBeGreaterThan(0);
    expect(seen.keys).toBeGreaterThan(0);
  });

  it('answers a json_object job with a JSON object', async () => {
    for (const [max_tokens, seed] of [
      [48, 5],
      [3, 6],
    ] as const) {
      const out = await run(backend, { prompt: 'JSON:', temperature: 1.2, max_tokens, seed, response_format: { type: 'json_object' } });
      const value: unknown = JSON.parse(out.text);
      expect(typeof value === 'object' && value !== null && !Array.isArray(value), out.text).toBe(true);
      // What a streaming client pieces together is the answer, without the grammar's trailing newlines.
      expect(out.streamed).toBe(out.text);
    }
  });

  it("renders chat through the model's own chat template", async () => {
    const messages = [{ role: 'user' as const, content: 'Hi there' }];
    const prompt = await backend.preparePrompt({ messages });
    expect(prompt.source).toBe('chat');
    expect(prompt.text).toContain('Hi there');
    expect(prompt.text).not.toBe((await backend.preparePrompt({ prompt: 'Hi there' })).text);
    if (tiny) {
      // The GGUF's ChatML template, with its control tokens as single tokens.
      expect(prompt.tokens).toContain(TINY_GGUF_TOKENS.imStart);
      expect(prompt.tokens).toContain(TINY_GGUF_TOKENS.imEnd);
    }
    const out = await run(backend, { messages, max_tokens: 5, temperature: 0 });
    expect(out.usage.prompt_tokens).toBe(prompt.tokens.length);
  });

  it('renders a named template from templates_dir', async () => {
    const chatml = await backend.preparePrompt({ prompt: 'Hi <|im_end|>', template: 'chatml' });
    expect(chatml.source).toBe('template:chatml');
    if (tiny) {
      // Template text became control tokens; the same text typed by the user did not.
      expect(chatml.tokens.filter((t) => t === TINY_GGUF_TOKENS.imEnd)).toHaveLength(1);
      expect(chatml.tokens.filter((t) => t === TINY_GGUF_TOKENS.imStart)).toHaveLength(2);
    }
    const phi3 = await backend.preparePrompt({ prompt: 'Hello', template: 'phi3' });
    // (SentencePiece vocabularies may show a space where text starts after a special token.)
    expect(phi3.text).toMatch(/<\|user\|>\n ?Hello ?<\|end\|>\n<\|assistant\|>\n$/);
    // Without those special tokens in the vocabulary it is all text, tokenized as one string.
    if (tiny) expect(phi3.text).toBe('<s><|system|>\n<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n');
    const out = await run(backend, { prompt: 'Hello', template: 'phi3', max_tokens: 3, temperature: 0 });
    expect(out.usage.prompt_tokens).toBe(phi3.tokens.length);
    const err = await failure(run(backend, { prompt: 'x', template: 'no-such-template' }));
    expect(errorCode(err)).toBe('ERR_REQUEST_INVALID');
  });

  it('rejects a prompt longer than the context without retrying, and keeps serving', async () => {
    const err = await failure(run(backend, { prompt: 'lorem ipsum dolor '.repeat(600), max_tokens: 4 }));
    expect(errorCode(err)).toBe('ERR_BACKEND_CONTEXT_LENGTH');
    expect(isRetryable(err)).toBe(false);
    expect(err?.details?.prompt_tokens).toBeGreaterThan(backend.contextSize);
    expect((await run(backend, { prompt: 'ok', max_tokens: 2, temperature: 0 })).usage.completion_tokens).toBe(2);
  });

  const VICTIM_TIMEOUT_MS = 1_500;
  for (const how of ['cancel', 'timeout'] as const) {
    it(`${how}: stops decoding at once and hands the sequence to the job queued behind`, async () => {
      const long = { max_tokens: 100_000, temperature: 0 };
      const others = [1, 2, 3].map((i) => startJob(backend, { prompt: `Busy ${i}`, ...long }));
      await waitFor('three jobs to decode', () => others.every((j) => j.firstTokenAt() !== undefined));
      const victimStart = performance.now();
      // Half the time the victim needs to fill its context (see beforeAll), with room for the checks below first.
      const victim = startJob(backend, { prompt: 'Victim', ...long }, how === 'timeout' ? AbortSignal.timeout(VICTIM_TIMEOUT_MS) : undefined);
      const queued = startJob(backend, { prompt: 'Queued', max_tokens: 3, temperature: 0 });
      await waitFor('the fourth job to hold a sequence', () => backend.load.busy === 4 && backend.load.waiting === 1);
      await new Promise((r) => setTimeout(r, 100));
      expect(queued.firstTokenAt()).toBeUndefined();
      expect(backend.load).toEqual({ sequences: 4, busy: 4, waiting: 1 });
      const reason = new Error('cancelled by the test');
      let abortedAt: number;
      if (how === 'cancel') {
        abortedAt = performance.now();
        victim.controller.abort(reason);
        expect(await failure(victim.promise)).toBe(reason);
      } else {
        const err = await failure(victim.promise);
        abortedAt = victimStart + VICTIM_TIMEOUT_MS;
        expect(err?.name).toBe('TimeoutError');
        expect(victim.settledAt()! - victimStart).toBeGreaterThanOrEqual(VICTIM_TIMEOUT_MS - 50);
      }
      // Rejected as soon as the signal fired, not after the decode loop noticed.
      expect(victim.settledAt()! - abortedAt).toBeLessThan(how === 'cancel' ? 100 : 500);
      const out = await queued.promise;
      expect(out.usage.completion_tokens).toBe(3);
      console.info(`[backend-llama-cpp] ${how}: queued job's first token ${Math.round(queued.firstTokenAt()! - abortedAt)} ms after the abort`);
      // The three others were still decoding: the queued job got the victim's sequence.
      expect(others.every((j) => j.settledAt() === undefined)).toBe(true);
      for (const j of others) j.controller.abort(reason);
      for (const j of others) expect(await failure(j.promise)).toBe(reason);
      await waitFor('all sequences to be free', () => backend.load.busy === 0);
    });
  }

  it('keeps its caches bounded however many different jobs it runs', async () => {
    const jobs = Array.from({ length: 60 }, (_, i) =>
      run(backend, {
        prompt: `Schema ${i}`,
        max_tokens: 4,
        temperature: 0,
        response_format: { type: 'json_schema', json_schema: { schema: { type: 'object', properties: { [`k${i}`]: { type: 'integer' } } } } },
      }),
    );
    for (const out of await Promise.all(jobs)) expect(() => JSON.parse(out.text)).not.toThrow();
    await Promise.all(Array.from({ length: 20 }, (_, i) => failure(run(backend, { prompt: 'x', template: `missing-${i}` }))));
    expect(backend.cacheSizes.grammars).toBeLessThanOrEqual(32);
    expect(backend.cacheSizes.templates).toBeLessThanOrEqual(2);
    // A JSON answer ends at the grammar's stop text while the token after it is still decoding;
    // its sequence is free once that decode is done.
    await waitFor('all sequences to be free', () => backend.load.busy === 0);
    expect(backend.load).toEqual({ sequences: 4, busy: 0, waiting: 0 });
  });

  it('never logs prompt text above debug level', () => {
    const leaked = logs.filter((l) => l.level !== 'debug' && JSON.stringify(l).includes('Victim'));
    expect(leaked).toEqual([]);
    expect(logs.some((l) => l.level === 'info' && l.msg === 'llama-cpp model ready')).toBe(true);
  });
});

describe('llama-cpp backend: min_tokens (generated model whose </s> is always the greedy choice)', () => {
  let backend: LlamaCppBackend;
  beforeAll(async () => {
    backend = await createBackend({ model_path: await generateTinyGguf({ eosBias: 12 }), context_size: 64, threads: 1, gpu: false }, 1);
  });
  afterAll(() => backend.close());

  it('ends at once without min_tokens, and not before min_tokens with it', async () => {
    const none = await run(backend, { prompt: 'Hi', temperature: 0, max_tokens: 20 });
    expect(none).toMatchObject({ text: '', finish_reason: 'stop', usage: { completion_tokens: 0 } });
    const five = await run(backend, { prompt: 'Hi', temperature: 0, max_tokens: 20, min_tokens: 5 });
    expect(five.finish_reason).toBe('stop');
    expect(five.usage.completion_tokens).toBe(5);
    expect(five.text.length).toBeGreaterThan(0);
    const capped = await run(backend, { prompt: 'Hi', temperature: 0, max_tokens: 5, min_tokens: 5 });
    expect(capped).toMatchObject({ finish_reason: 'length', usage: { completion_tokens: 5 } });
  });
});

describe('llama-cpp backend: JSON ended by the context, not by max_tokens', () => {
  it('closes a schema whose required keys take many tokens, with no max_tokens, on a small context', async () => {
    const keys = ['first_property_name', 'second_property_name', 'third_property_name', 'fourth_property_name', 'fifth_property_name', 'sixth_property_name'];
    const schema = { type: 'object', properties: Object.fromEntries(keys.map((k) => [k, { type: 'string' }])), required: keys };
    const b = await createBackend({ model_path: tinyPath, gpu: false, threads: 1, context_size: 256 }, 1);
    try {
      // Seed 5 ran out of context with a reserve of a quarter of the room (at most 64 tokens).
      for (const seed of [1, 2, 3, 4, 5, 6]) {
        const out = await run(b, { prompt: 'give json', temperature: 1, seed, response_format: { type: 'json_schema', json_schema: { schema } } });
        const value = JSON.parse(out.text) as Record<string, unknown>;
        expect(Object.keys(value), out.text).toEqual(keys);
      }
    } finally {
      await b.close();
    }
  });
});

describe('llama-cpp backend: a GGUF without a chat template', () => {
  it("warns at start-up that chat messages use node-llama-cpp's guess, and names it", async () => {
    const bare = await generateTinyGguf({ chatTemplate: null });
    const noted = () => logs.filter((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.startsWith('the GGUF has no chat template'));
    const before = noted().length;
    const b = await createBackend({ model_path: bare, gpu: false, threads: 1, context_size: 128 }, 1);
    try {
      const warned = noted().slice(before);
      expect(warned).toHaveLength(1);
      expect(warned[0]!.obj).toMatchObject({ model_path: bare, chat_format: expect.any(String) });
      expect(warned[0]!.msg).toContain((warned[0]!.obj as { chat_format: string }).chat_format);
      expect((await b.preparePrompt({ messages: [{ role: 'user', content: 'Hi' }] })).source).toBe('chat');
    } finally {
      await b.close();
    }
    // A GGUF with its own template gets no such warning.
    const withTemplate = await createBackend({ model_path: tinyPath, gpu: false, threads: 1, context_size: 128 }, 1);
    await withTemplate.close();
    expect(noted().length).toBe(before + 1);
  });
});

describe('llama-cpp backend: chat_template from config', () => {
  it("renders messages with it instead of the GGUF's template", async () => {
    const b = await createBackend(
      {
        model_path: tinyPath,
        gpu: false,
        threads: 1,
        context_size: 128,
        chat_template: "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]",
      },
      1,
    );
    try {
      const prompt = await b.preparePrompt({ messages: [{ role: 'user', content: 'Hi' }] });
      expect(prompt.source).toBe('chat_template');
      expect(prompt.text).toMatch(/^<s> ?\[user\] Hi\n\[assistant\]$/);
      expect(prompt.tokens).not.toContain(TINY_GGUF_TOKENS.imStart);
      // A prompt job is still raw completion.
      expect((await b.preparePrompt({ prompt: 'Hi' })).source).toBe('raw');
      expect((await run(b, { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, temperature: 0 })).usage.prompt_tokens).toBe(
        prompt.tokens.length,
      );
    } finally {
      await b.close();
    }
  });
});

describe('llama-cpp backend: start-up errors', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmq-llama-errors-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('names `llmq model pull <uri>` when the model file is missing', async () => {
    const err = await failure(createBackend({ model_path: join(dir, 'absent.gguf'), model_uri: 'hf:acme/tiny-GGUF:Q4_K_M' }, 1));
    expect(errorCode(err)).toBe('ERR_MODEL_FILE_MISSING');
    expect(err?.message).toContain('llmq model pull hf:acme/tiny-GGUF:Q4_K_M');
  });

  it('fails with ERR_MODEL_LOAD on a file that is not a GGUF, or a corrupt one, and leaks nothing', async () => {
    const before = llamaCppStats();
    const text = join(dir, 'notes.gguf');
    writeFileSync(text, 'just some text, not a model');
    expect(errorCode(await failure(createBackend({ model_path: text, gpu: false }, 1)))).toBe('ERR_MODEL_LOAD');
    const corrupt = join(dir, 'corrupt.gguf');
    writeFileSync(corrupt, Buffer.concat([Buffer.from('GGUF\x03\x00\x00\x00', 'latin1'), Buffer.alloc(64, 0xff)]));
    const err = await failure(createBackend({ model_path: corrupt, gpu: false }, 1));
    expect(errorCode(err)).toBe('ERR_MODEL_LOAD');
    // A download cut short: the message carries llama.cpp's reason, not only "Failed to load model".
    const cut = join(dir, 'cut.gguf');
    writeFileSync(cut, readFileSync(tinyPath).subarray(0, Math.floor(statSync(tinyPath).size * 0.6)));
    const cutErr = await failure(createBackend({ model_path: cut, model_uri: 'hf:acme/tiny-GGUF:Q4_K_M', gpu: false }, 1));
    expect(errorCode(cutErr)).toBe('ERR_MODEL_LOAD');
    expect(cutErr?.message).toMatch(/\(llama\.cpp: .*(corrupted or incomplete|file bounds).*; delete it and fetch it again with `llmq model pull hf:acme\/tiny-GGUF:Q4_K_M --dir [^`]+`\)$/);
    expect(cutErr?.message).toContain(`--dir ${dir}\``);
    expect(llamaCppStats()).toMatchObject({ liveModels: before.liveModels, liveContexts: before.liveContexts });
  });

  it('fails at start-up when the default template does not exist, releasing the model', async () => {
    const before = llamaCppStats();
    const err = await failure(createBackend({ model_path: tinyPath, gpu: false, context_size: 64, templates_dir: dir, template: 'phi3' }, 1));
    expect(errorCode(err)).toBe('ERR_CONFIG_INVALID');
    // One code, the one that says what to fix: not "ERR_CONFIG_INVALID: options.template: ERR_REQUEST_INVALID: …".
    expect(err?.message).toMatch(/^ERR_CONFIG_INVALID: options\.template: unknown template "phi3"/);
    expect(llamaCppStats()).toMatchObject({ liveModels: before.liveModels, liveContexts: before.liveContexts });
  });

  it('says at start-up which templates do not load, and serves the others', async () => {
    const templates = mkdtempSync(join(tmpdir(), 'llmq-llama-templates-'));
    writeFileSync(join(templates, 'good.template'), 'Q: {prompt}\nA:');
    writeFileSync(join(templates, 'bad.jinja'), '{% for m in messages %}{{ m.content }}');
    writeFileSync(join(templates, 'twin.template'), '{prompt}');
    writeFileSync(join(templates, 'twin.jinja'), '{{ messages[0].content }}');
    writeFileSync(join(templates, 'typo.jinja'), '{% for m in messages %}{{ m.contnet }}{% endfor %}');
    const noted = () => logs.filter((l) => l.level === 'warn' && (l.obj as { broken_templates?: unknown }).broken_templates !== undefined);
    const before = noted().length;
    const b = await createBackend({ model_path: tinyPath, gpu: false, threads: 1, context_size: 128, templates_dir: templates }, 1);
    try {
      const warned = noted().slice(before);
      expect(warned).toHaveLength(1);
      const broken = (warned[0]!.obj as { broken_templates: { name: string; error: string }[] }).broken_templates;
      expect(broken.map((t) => t.name)).toEqual(['bad', 'twin']);
      expect(broken[0]!.error).toMatch(/not valid Jinja/);
      expect(broken[1]!.error).toMatch(/ambiguous/);
      expect(warned[0]!.msg).toMatch(/^2 templates do not load \(bad, twin\)/);
      const dropping = logs.filter((l) => l.level === 'warn' && typeof l.msg === 'string' && l.msg.includes('leaves the job\'s text out'));
      expect(dropping.map((l) => (l.obj as { template: string }).template)).toEqual(['typo']);
      const messages = [{ role: 'user' as const, content: 'Hi' }];
      expect((await run(b, { messages, template: 'good', max_tokens: 2, temperature: 0 })).usage.completion_tokens).toBeGreaterThan(0);
      expect(errorCode(await failure(run(b, { messages, template: 'bad', max_tokens: 2 })))).toBe('ERR_CONFIG_INVALID');
    } finally {
      await b.close();
      rmSync(templates, { recursive: true, force: true });
    }
  });

  it('ends a running job with ERR_WORKER_SHUTDOWN on close(), and refuses jobs after it', async () => {
    const b = await createBackend({ model_path: tinyPath, gpu: false, context_size: 512, threads: 1 }, 1);
    const running = startJob(b, { prompt: 'long', max_tokens: 100_000, temperature: 0 });
    await waitFor('the job to decode', () => running.firstTokenAt() !== undefined);
    await b.close();
    expect(errorCode(await failure(running.promise))).toBe('ERR_WORKER_SHUTDOWN');
    expect(errorCode(await failure(run(b, { prompt: 'x', max_tokens: 1 })))).toBe('ERR_WORKER_SHUTDOWN');
    expect(errorCode(await failure(b.check()))).toBe('ERR_BACKEND_UNAVAILABLE');
  });
});
