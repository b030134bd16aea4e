import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { TINY_GGUF_CHAT_TEMPLATE, buildTinyGguf, generateTinyGguf } from './tiny-gguf.js';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Minimal GGUF header reader: enough to check what llama.cpp will see. */
function readHeader(buf: Buffer) {
  let at = 0;
  const u32 = () => ((at += 4), buf.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), Number(buf.readBigUInt64LE(at - 8)));
  const str = () => {
    const n = u64();
    at += n;
    return buf.toString('utf8', at - n, at);
  };
  const value = (type: number): unknown => {
    switch (type) {
      case 4:
        return u32();
      case 5:
        return ((at += 4), buf.readInt32LE(at - 4));
      case 6:
        return ((at += 4), buf.readFloatLE(at - 4));
      case 7:
        return ((at += 1), buf[at - 1] === 1);
      case 8:
        return str();
      case 9: {
        const t = u32();
        const n = u64();
        return Array.from({ length: n }, () => value(t));
      }
      default:
        throw new Error(`unexpected type ${type}`);
    }
  };
  const magic = buf.toString('ascii', 0, 4);
  at = 4;
  const version = u32();
  const tensors = u64();
  const kvs = u64();
  const meta = new Map<string, unknown>();
  for (let i = 0; i < kvs; i++) {
    const key = str();
    meta.set(key, value(u32()));
  }
  const infos: { name: string; dims: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensors; i++) {
    const name = str();
    const nd = u32();
    const dims = Array.from({ length: nd }, () => u64());
    infos.push({ name, dims, type: u32(), offset: u64() });
  }
  const alignment = (meta.get('general.alignment') as number | undefined) ?? 32;
  const dataStart = Math.ceil(at / alignment) * alignment;
  return { magic, version, meta, infos, dataStart };
}

describe('tiny GGUF generator', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmq-tiny-gguf-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('writes a llama-architecture GGUF v3 with a tokenizer, a chat template and F32 tensors that fill the file', () => {
    const buf = buildTinyGguf();
    const h = readHeader(buf);
    expect(h.magic).toBe('GGUF');
    expect(h.version).toBe(3);
    expect(h.meta.get('general.architecture')).toBe('llama');
    expect(h.meta.get('tokenizer.ggml.model')).toBe('llama');
    expect(h.meta.get('tokenizer.chat_template')).toBe(TINY_GGUF_CHAT_TEMPLATE);
    const tokens = h.meta.get('tokenizer.ggml.tokens') as string[];
    expect(tokens).toHaveLength(384);
    expect(tokens.slice(0, 3)).toEqual(['<unk>', '<s>', '</s>']);
    expect(tokens).toContain('<0x0A>');
    expect((h.meta.get('tokenizer.ggml.scores') as number[]).length).toBe(384);
    expect((h.meta.get('tokenizer.ggml.token_type') as number[]).length).toBe(384);
    expect(h.infos.map((t) => t.name)).toContain('blk.1.ffn_down.weight');
    expect(h.infos.every((t) => t.type === 0 && t.offset % 32 === 0)).toBe(true);
    const last = h.infos.at(-1)!;
    expect(last.name).toBe('output.weight');
    expect(last.dims).toEqual([64, 384]);
    expect(h.dataStart + last.offset + 64 * 384 * 4).toBe(buf.length);
  });

  it('is deterministic for a seed and differs across seeds', () => {
    expect(sha(buildTinyGguf({ seed: 7 }))).toBe(sha(buildTinyGguf({ seed: 7 })));
    expect(sha(buildTinyGguf({ seed: 7 }))).not.toBe(sha(buildTinyGguf({ seed: 8 })));
  });

  it('honours size options and leaves the chat template out on request', () => {
    const h = readHeader(buildTinyGguf({ vocabSize: 400, embeddingLength: 32, layers: 1, heads: 2, headsKv: 1, chatTemplate: null }));
    expect((h.meta.get('tokenizer.ggml.tokens') as string[]).length).toBe(400);
    expect(h.meta.get('llama.block_count')).toBe(1);
    expect(h.meta.get('llama.embedding_length')).toBe(32);
    expect(h.meta.has('tokenizer.chat_template')).toBe(false);
    expect(h.infos.find((t) => t.name === 'blk.0.attn_k.weight')?.dims).toEqual([32, 16]);
  });

  it('places the data at general.alignment: 32 bytes past a 64-byte line by default, on a line with 64', () => {
    const starts = (buf: Buffer) => {
      const h = readHeader(buf);
      return { alignment: h.meta.get('general.alignment'), starts: h.infos.map((t) => (h.dataStart + t.offset) % 64), end: h.dataStart + h.infos.at(-1)!.offset + 64 * 384 * 4, length: buf.length };
    };
    const byDefault = starts(buildTinyGguf());
    expect(byDefault.alignment).toBe(32);
    expect(new Set(byDefault.starts)).toEqual(new Set([32]));
    const aligned = starts(buildTinyGguf({ alignment: 64 }));
    expect(aligned.alignment).toBe(64);
    expect(new Set(aligned.starts)).toEqual(new Set([0]));
    expect(aligned.end).toBe(aligned.length);
    expect(() => buildTinyGguf({ alignment: 48 })).toThrow(/alignment/);
  });

  it('rejects shapes llama.cpp cannot run', () => {
    expect(() => buildTinyGguf({ vocabSize: 100 })).toThrow(/vocabSize/);
    expect(() => buildTinyGguf({ embeddingLength: 30, heads: 4 })).toThrow(/multiple of heads/);
    expect(() => buildTinyGguf({ heads: 4, headsKv: 3 })).toThrow(/multiple of headsKv/);
  });

  it('writes the file once per parameter set and returns the same path', async () => {
    const a = await generateTinyGguf({ dir, seed: 3 });
    const b = await generateTinyGguf({ dir, seed: 3 });
    const c = await generateTinyGguf({ dir, seed: 4 });
    expect(a).toBe(b);
    expect(c).not.toBe(a);
    expect(sha(readFileSync(a))).toBe(sha(buildTinyGguf({ seed: 3 })));
    expect(statSync(c).size).toBe(buildTinyGguf({ seed: 4 }).length);
  });
});
