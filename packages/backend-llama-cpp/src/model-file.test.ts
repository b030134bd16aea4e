import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { errorCode, isRetryable, type LlmqError } from '@llmq/core';
import { checkModelFile, pullCommand } from './model-file.js';

const dir = mkdtempSync(join(tmpdir(), 'llmq-model-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error);

describe('checkModelFile', () => {
  it('says how to pull a missing model, with the exact uri when it is configured', async () => {
    const path = join(dir, 'missing.gguf');
    const err = await failure(checkModelFile(path, 'hf:acme/tiny-GGUF:Q4_K_M'));
    expect(errorCode(err)).toBe('ERR_MODEL_FILE_MISSING');
    expect(isRetryable(err)).toBe(false);
    expect(err?.message).toContain(path);
    // Saved where model_path looks, wherever the command is run from.
    expect(err?.message).toContain(`\`llmq model pull hf:acme/tiny-GGUF:Q4_K_M --dir ${dir}\``);
    expect((await failure(checkModelFile(path)))?.message).toContain(`llmq model pull <uri> --dir ${dir}`);
  });

  it('quotes a folder the shell would split or expand', () => {
    expect(pullCommand('hf:a/b:Q4', '/srv/my models/m.gguf')).toBe("llmq model pull hf:a/b:Q4 --dir '/srv/my models'");
    expect(pullCommand('hf:a/b:Q4', "/srv/it's/m.gguf")).toBe("llmq model pull hf:a/b:Q4 --dir '/srv/it'\\''s'");
    expect(pullCommand('hf:a/b:Q4', '/srv/models-1.2/m.gguf')).toBe('llmq model pull hf:a/b:Q4 --dir /srv/models-1.2');
  });

  it('rejects a file that is not a GGUF, and a directory', async () => {
    const html = join(dir, 'page.gguf');
    writeFileSync(html, '<!doctype html><title>404</title>');
    const err = await failure(checkModelFile(html));
    expect(errorCode(err)).toBe('ERR_MODEL_LOAD');
    expect(err?.message).toMatch(/not a GGUF file.*"<!do"/);
    const folder = join(dir, 'folder.gguf');
    mkdirSync(folder);
    expect(errorCode(await failure(checkModelFile(folder)))).toBe('ERR_MODEL_LOAD');
    const empty = join(dir, 'empty.gguf');
    writeFileSync(empty, '');
    expect(errorCode(await failure(checkModelFile(empty)))).toBe('ERR_MODEL_LOAD');
  });

  it('accepts a GGUF header', async () => {
    const ok = join(dir, 'ok.gguf');
    writeFileSync(ok, Buffer.from('GGUF\x03\x00\x00\x00', 'latin1'));
    await expect(checkModelFile(ok)).resolves.toEqual({ size: 8, mtimeMs: expect.any(Number) });
  });

  it("puts the file's size and time on a load failure, so a file still being written can be told apart", async () => {
    const growing = join(dir, 'growing.gguf');
    writeFileSync(growing, 'GGU');
    const before = (await failure(checkModelFile(growing))) as LlmqError | undefined;
    expect(before?.details).toEqual({ file_size: 3, file_mtime_ms: expect.any(Number) });
    writeFileSync(growing, 'GGX more bytes');
    const after = (await failure(checkModelFile(growing))) as LlmqError | undefined;
    expect(after?.details?.file_size).toBe(14);
  });
});
