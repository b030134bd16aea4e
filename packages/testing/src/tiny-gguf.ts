/**
 * Writes a tiny, deterministic GGUF model (llama architecture, seeded random F32 weights, a small
 * SentencePiece-style vocabulary with byte fallback) that llama.cpp loads and runs in
 * milliseconds. Tests use it because no model can be downloaded here; it produces gibberish,
 * but real gibberish: real tokenizer, real decode, real sampling.
 */
import { createHash } from 'node:crypto';
import { mkdir, rename, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface TinyGgufOptions {
  /**
   * Directory the file is written to (created when missing).
   * @defaultValue `<os tmpdir>/llmq-tiny-gguf`
   */
  dir?: string;
  /**
   * Seed of the weights.
   * @defaultValue 42
   */
  seed?: number;
  /**
   * Number of tokens. The base vocabulary (3 specials, 256 byte tokens, 2 chat tokens, `▁` and
   * the 94 printable ASCII characters: 356) is always there; the rest are merged pieces.
   * @defaultValue 384
   */
  vocabSize?: number;
  /**
   * Embedding width (`llama.embedding_length`); a multiple of `heads`.
   * @defaultValue 64
   */
  embeddingLength?: number;
  /**
   * Transformer blocks.
   * @defaultValue 2
   */
  layers?: number;
  /**
   * Attention heads.
   * @defaultValue 4
   */
  heads?: number;
  /**
   * Key/value heads (grouped-query attention when fewer than `heads`).
   * @defaultValue 2
   */
  headsKv?: number;
  /**
   * Width of the feed-forward layer.
   * @defaultValue 128
   */
  feedForwardLength?: number;
  /**
   * Context the model claims it was trained on (`llama.context_length`).
   * @defaultValue 2048
   */
  contextLength?: number;
  /**
   * `tokenizer.chat_template` (a Hugging Face style Jinja template); `null` leaves it out.
   * @defaultValue {@link TINY_GGUF_CHAT_TEMPLATE}
   */
  chatTemplate?: string | null;
  /**
   * Logit the end-of-sequence token `</s>` gets on top of its random one (roughly; the model keeps
   * one hidden dimension constant to carry it). 0 makes `</s>` rare, so greedy generations run to
   * `max_tokens`; 12 makes it the greedy choice at every step (for `min_tokens` tests).
   * @defaultValue 0
   */
  eosBias?: number;
  /**
   * `general.alignment`: the data section and every tensor start at a multiple of it in the file.
   * With 32 (the GGUF default) this generator's tensors all start 32 bytes past a 64-byte line
   * (its header ends there, and every tensor's size is a multiple of 64); 64 puts them on a line.
   * A power of two, at least 8.
   * @defaultValue 32
   */
  alignment?: number;
}

/** A ChatML-style template using the model's `<|im_start|>` / `<|im_end|>` control tokens. */
export const TINY_GGUF_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}" +
  '{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}';

/** Token ids of the tiny vocabulary's special tokens. */
export const TINY_GGUF_TOKENS = { unk: 0, bos: 1, eos: 2, imStart: 259, imEnd: 260 } as const;

/** Bumped whenever the file layout changes, so cached files of an older layout are not reused. */
const FORMAT_VERSION = 2;
const BASE_VOCAB = 3 + 256 + 2 + 1 + 94;

// llama.cpp token types
const TOKEN_NORMAL = 1;
const TOKEN_UNKNOWN = 2;
const TOKEN_CONTROL = 3;
const TOKEN_BYTE = 6;

// GGUF metadata value types
const GGUF_UINT32 = 4;
const GGUF_INT32 = 5;
const GGUF_FLOAT32 = 6;
const GGUF_BOOL = 7;
const GGUF_STRING = 8;
const GGUF_ARRAY = 9;

type MetaValue =
  | { type: 'u32'; value: number }
  | { type: 'f32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'string[]'; value: string[] }
  | { type: 'f32[]'; value: number[] }
  | { type: 'i32[]'; value: number[] };

interface TensorSpec {
  name: string;
  /** ggml order: ne[0] (the contiguous dimension) first. */
  dims: number[];
  /** Fills the tensor; `random` gives uniform numbers in [-1, 1). */
  fill(view: Float32Array, random: () => number): void;
}

type Resolved = Required<Omit<TinyGgufOptions, 'dir' | 'chatTemplate'>> & { chatTemplate: string | null };

function resolveOptions(options: TinyGgufOptions): Resolved {
  const r: Resolved = {
    seed: options.seed ?? 42,
    vocabSize: options.vocabSize ?? 384,
    embeddingLength: options.embeddingLength ?? 64,
    layers: options.layers ?? 2,
    heads: options.heads ?? 4,
    headsKv: options.headsKv ?? 2,
    feedForwardLength: options.feedForwardLength ?? 128,
    contextLength: options.contextLength ?? 2048,
    chatTemplate: options.chatTemplate === undefined ? TINY_GGUF_CHAT_TEMPLATE : options.chatTemplate,
    eosBias: options.eosBias ?? 0,
    alignment: options.alignment ?? 32,
  };
  if (!Number.isFinite(r.eosBias)) throw new RangeError('eosBias must be a finite number');
  const pieces = mergedPieces();
  if (!Number.isInteger(r.vocabSize) || r.vocabSize < BASE_VOCAB || r.vocabSize > BASE_VOCAB + pieces.length) {
    throw new RangeError(`vocabSize must be an integer from ${BASE_VOCAB} to ${BASE_VOCAB + pieces.length}`);
  }
  for (const key of ['embeddingLength', 'layers', 'heads', 'headsKv', 'feedForwardLength', 'contextLength'] as const) {
    if (!Number.isInteger(r[key]) || r[key] < 1) throw new RangeError(`${key} must be a positive integer`);
  }
  if (r.embeddingLength % r.heads !== 0) throw new RangeError('embeddingLength must be a multiple of heads');
  if (r.heads % r.headsKv !== 0) throw new RangeError('heads must be a multiple of headsKv');
  if ((r.embeddingLength / r.heads) % 2 !== 0) throw new RangeError('embeddingLength / heads must be even (RoPE)');
  if (!Number.isInteger(r.seed) || r.seed < 0) throw new RangeError('seed must be a non-negative integer');
  if (!Number.isInteger(r.alignment) || r.alignment < 8 || (r.alignment & (r.alignment - 1)) !== 0) throw new RangeError('alignment must be a power of two, at least 8');
  return r;
}

/** Multi-character tokens, most useful first: `▁`+letter, then letter pairs. */
function mergedPieces(): string[] {
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  const out: string[] = [];
  for (const a of letters) out.push(`▁${a}`);
  for (const a of letters) for (const b of letters) out.push(a + b);
  return out;
}

function vocabulary(vocabSize: number): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens: string[] = ['<unk>', '<s>', '</s>'];
  const types: number[] = [TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(TOKEN_BYTE);
  }
  tokens.push('<|im_start|>', '<|im_end|>');
  types.push(TOKEN_CONTROL, TOKEN_CONTROL);
  tokens.push('▁');
  types.push(TOKEN_NORMAL);
  for (let c = 0x21; c <= 0x7e; c++) {
    tokens.push(String.fromCharCode(c));
    types.push(TOKEN_NORMAL);
  }
  const scores = tokens.map(() => 0);
  const pieces = mergedPieces().slice(0, vocabSize - tokens.length);
  // SentencePiece merges the highest-scoring piece first.
  pieces.forEach((piece, i) => {
    tokens.push(piece);
    types.push(TOKEN_NORMAL);
    scores.push(-1 - i);
  });
  return { tokens, scores, types };
}

/**
 * Dimension 0 of the residual stream is held at 1 for every token (set in the embedding, never
 * written by attention or feed-forward outputs), so after RMS norm it is a positive constant-ish
 * feature the output layer can turn into a per-token logit bias.
 */
function tensorSpecs(r: Resolved): TensorSpec[] {
  const e = r.embeddingLength;
  const kv = (e / r.heads) * r.headsKv;
  const f = r.feedForwardLength;
  const uniform = (scale: number) => (view: Float32Array, random: () => number) => {
    for (let j = 0; j < view.length; j++) view[j] = random() * scale;
  };
  const ones = (view: Float32Array) => view.fill(1);
  /** An output projection whose row for residual dimension 0 stays zero. */
  const intoResidual = (fanIn: number) => (view: Float32Array, random: () => number) => {
    uniform(1 / Math.sqrt(fanIn))(view, random);
    view.fill(0, 0, fanIn);
  };
  const { types } = vocabulary(r.vocabSize);
  const specs: TensorSpec[] = [
    {
      name: 'token_embd.weight',
      dims: [e, r.vocabSize],
      fill(view, random) {
        uniform(1)(view, random);
        for (let t = 0; t < r.vocabSize; t++) view[t * e] = 1;
      },
    },
  ];
  for (let i = 0; i < r.layers; i++) {
    specs.push(
      { name: `blk.${i}.attn_norm.weight`, dims: [e], fill: ones },
      { name: `blk.${i}.attn_q.weight`, dims: [e, e], fill: uniform(1 / Math.sqrt(e)) },
      { name: `blk.${i}.attn_k.weight`, dims: [e, kv], fill: uniform(1 / Math.sqrt(e)) },
      { name: `blk.${i}.attn_v.weight`, dims: [e, kv], fill: uniform(1 / Math.sqrt(e)) },
      { name: `blk.${i}.attn_output.weight`, dims: [e, e], fill: intoResidual(e) },
      { name: `blk.${i}.ffn_norm.weight`, dims: [e], fill: ones },
      { name: `blk.${i}.ffn_gate.weight`, dims: [e, f], fill: uniform(1 / Math.sqrt(e)) },
      { name: `blk.${i}.ffn_up.weight`, dims: [e, f], fill: uniform(1 / Math.sqrt(e)) },
      { name: `blk.${i}.ffn_down.weight`, dims: [f, e], fill: intoResidual(f) },
    );
  }
  specs.push(
    { name: 'output_norm.weight', dims: [e], fill: ones },
    {
      name: 'output.weight',
      dims: [e, r.vocabSize],
      fill(view, random) {
        for (let t = 0; t < r.vocabSize; t++) {
          // Printable tokens get peaked logits, bytes and control tokens near-zero ones, so greedy
          // output is readable ASCII gibberish and `</s>` is rare unless `eosBias` says otherwise.
          const scale = types[t] === TOKEN_NORMAL ? 0.6 : 0.05;
          for (let j = 0; j < e; j++) view[t * e + j] = random() * scale;
          view[t * e] = t === TINY_GGUF_TOKENS.eos ? r.eosBias : 0;
        }
      },
    },
  );
  return specs;
}

function metadata(r: Resolved): [string, MetaValue][] {
  const { tokens, scores, types } = vocabulary(r.vocabSize);
  const entries: [string, MetaValue][] = [
    ['general.architecture', { type: 'string', value: 'llama' }],
    ['general.name', { type: 'string', value: 'llmq tiny random' }],
    ['general.alignment', { type: 'u32', value: r.alignment }],
    ['general.file_type', { type: 'u32', value: 0 }],
    ['llama.context_length', { type: 'u32', value: r.contextLength }],
    ['llama.embedding_length', { type: 'u32', value: r.embeddingLength }],
    ['llama.block_count', { type: 'u32', value: r.layers }],
    ['llama.feed_forward_length', { type: 'u32', value: r.feedForwardLength }],
    ['llama.attention.head_count', { type: 'u32', value: r.heads }],
    ['llama.attention.head_count_kv', { type: 'u32', value: r.headsKv }],
    ['llama.attention.layer_norm_rms_epsilon', { type: 'f32', value: 1e-5 }],
    ['llama.rope.dimension_count', { type: 'u32', value: r.embeddingLength / r.heads }],
    ['llama.rope.freq_base', { type: 'f32', value: 10000 }],
    ['llama.vocab_size', { type: 'u32', value: r.vocabSize }],
    ['tokenizer.ggml.model', { type: 'string', value: 'llama' }],
    ['tokenizer.ggml.tokens', { type: 'string[]', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'f32[]', value: scores }],
    ['tokenizer.ggml.token_type', { type: 'i32[]', value: types }],
    ['tokenizer.ggml.unknown_token_id', { type: 'u32', value: TINY_GGUF_TOKENS.unk }],
    ['tokenizer.ggml.bos_token_id', { type: 'u32', value: TINY_GGUF_TOKENS.bos }],
    ['tokenizer.ggml.eos_token_id', { type: 'u32', value: TINY_GGUF_TOKENS.eos }],
    ['tokenizer.ggml.eot_token_id', { type: 'u32', value: TINY_GGUF_TOKENS.imEnd }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: true }],
    ['tokenizer.ggml.add_eos_token', { type: 'bool', value: false }],
  ];
  if (r.chatTemplate !== null) entries.push(['tokenizer.chat_template', { type: 'string', value: r.chatTemplate }]);
  return entries;
}

/** Small, fast, seedable PRNG (mulberry32): the same seed gives the same weights everywhere. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class ByteWriter {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u32(v: number): void {
    this.ensure(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  u64(v: number): void {
    this.ensure(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  f32(v: number): void {
    this.ensure(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  u8(v: number): void {
    this.ensure(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  string(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.bytes(b);
  }
  pad(alignment: number): void {
    const rem = this.length % alignment;
    if (rem !== 0) {
      this.ensure(alignment - rem);
      this.length += alignment - rem; // Buffer.alloc zero-fills
    }
  }
  result(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeValue(w: ByteWriter, v: MetaValue): void {
  switch (v.type) {
    case 'u32':
      w.u32(GGUF_UINT32);
      w.u32(v.value);
      return;
    case 'f32':
      w.u32(GGUF_FLOAT32);
      w.f32(v.value);
      return;
    case 'bool':
      w.u32(GGUF_BOOL);
      w.u8(v.value ? 1 : 0);
      return;
    case 'string':
      w.u32(GGUF_STRING);
      w.string(v.value);
      return;
    case 'string[]':
      w.u32(GGUF_ARRAY);
      w.u32(GGUF_STRING);
      w.u64(v.value.length);
      for (const s of v.value) w.string(s);
      return;
    case 'f32[]':
      w.u32(GGUF_ARRAY);
      w.u32(GGUF_FLOAT32);
      w.u64(v.value.length);
      for (const x of v.value) w.f32(x);
      return;
    case 'i32[]':
      w.u32(GGUF_ARRAY);
      w.u32(GGUF_INT32);
      w.u64(v.value.length);
      for (const x of v.value) w.i32(x);
      return;
  }
}

/** The GGUF file's bytes for the given options (pure: same options, same bytes). */
export function buildTinyGguf(options: Omit<TinyGgufOptions, 'dir'> = {}): Buffer {
  const r = resolveOptions(options);
  const meta = metadata(r);
  const specs = tensorSpecs(r);
  const w = new ByteWriter();
  w.bytes(Buffer.from('GGUF', 'ascii'));
  w.u32(3);
  w.u64(specs.length);
  w.u64(meta.length);
  for (const [key, value] of meta) {
    w.string(key);
    writeValue(w, value);
  }
  const alignUp = (n: number) => Math.ceil(n / r.alignment) * r.alignment;
  let offset = 0;
  const sizes = specs.map((s) => s.dims.reduce((a, b) => a * b, 1) * 4);
  specs.forEach((spec, i) => {
    w.string(spec.name);
    w.u32(spec.dims.length);
    for (const d of spec.dims) w.u64(d);
    w.u32(0); // GGML_TYPE_F32
    w.u64(offset);
    offset = alignUp(offset + (sizes[i] ?? 0));
  });
  w.pad(r.alignment);
  const header = w.result();
  const data = Buffer.alloc(offset);
  const next = mulberry32(r.seed);
  const random = () => next() * 2 - 1;
  let at = 0;
  specs.forEach((spec, i) => {
    const count = (sizes[i] ?? 0) / 4;
    spec.fill(new Float32Array(data.buffer, data.byteOffset + at, count), random);
    at = alignUp(at + count * 4);
  });
  return Buffer.concat([header, data]);
}

const cache = new Map<string, Promise<string>>();

/**
 * Writes the tiny model (once per parameter set and directory; later calls, also from other
 * processes, reuse the file) and resolves to its path.
 */
export function generateTinyGguf(options: TinyGgufOptions = {}): Promise<string> {
  const { dir = join(tmpdir(), 'llmq-tiny-gguf'), ...rest } = options;
  const r = resolveOptions(rest);
  const key = createHash('sha256')
    .update(JSON.stringify({ v: FORMAT_VERSION, ...r }))
    .digest('hex')
    .slice(0, 16);
  const path = join(dir, `tiny-${key}.gguf`);
  let pending = cache.get(path);
  if (pending === undefined) {
    pending = writeOnce(path, dir, r).catch((err: unknown) => {
      cache.delete(path);
      throw err;
    });
    cache.set(path, pending);
  }
  return pending;
}

async function writeOnce(path: string, dir: string, r: Resolved): Promise<string> {
  const bytes = buildTinyGguf(r);
  const existing = await stat(path).catch(() => undefined);
  // Written by rename, so an existing file of the right size is complete.
  if (existing?.size === bytes.length) return path;
  await mkdir(dir, { recursive: true });
  const tmp = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(tmp, bytes);
  await rename(tmp, path);
  return path;
}
