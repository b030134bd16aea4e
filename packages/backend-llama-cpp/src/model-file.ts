import { open, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { LlmqError } from '@llmq/core';

const GGUF_MAGIC = 'GGUF';

/**
 * The `llmq model pull` command that puts `uri`'s file in `path`'s folder: `--dir` because the
 * command saves under the folder it is run from, while `model_path` is relative to the config file.
 */
export function pullCommand(uri: string, path: string): string {
  const dir = dirname(path);
  return `llmq model pull ${uri} --dir ${/^[\w./@:+-]+$/.test(dir) ? dir : `'${dir.replace(/'/g, "'\\''")}'`}`;
}

/**
 * Checks, before llama.cpp sees it, that `path` is a readable GGUF file, so a wrong path or a
 * half-downloaded HTML error page fails with a message that says what to do.
 */
export async function checkModelFile(path: string, modelUri?: string): Promise<{ size: number; mtimeMs: number }> {
  let size: number;
  let mtimeMs: number;
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new LlmqError('ERR_MODEL_LOAD', `model path ${path} is not a file`);
    size = info.size;
    mtimeMs = info.mtimeMs;
  } catch (err) {
    if (err instanceof LlmqError) throw err;
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      const how = modelUri
        ? `download it with \`${pullCommand(modelUri, path)}\``
        : `download it with \`${pullCommand('<uri>', path)}\` (set \`model_uri\` in the model's options to have the exact command here)`;
      throw new LlmqError('ERR_MODEL_FILE_MISSING', `model file ${path} does not exist; ${how}`, { cause: err });
    }
    throw new LlmqError('ERR_MODEL_LOAD', `model file ${path} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  let head: Buffer;
  try {
    const file = await open(path, 'r');
    try {
      head = Buffer.alloc(4);
      const { bytesRead } = await file.read(head, 0, 4, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await file.close();
    }
  } catch (err) {
    throw new LlmqError('ERR_MODEL_LOAD', `model file ${path} cannot be read: ${(err as Error).message}`, { cause: err, details: fileDetails({ size, mtimeMs }) });
  }
  if (head.toString('latin1') !== GGUF_MAGIC) {
    throw new LlmqError(
      'ERR_MODEL_LOAD',
      `model file ${path} is not a GGUF file (${size} bytes, starts with ${JSON.stringify(head.toString('latin1'))}); ` +
        'llama.cpp needs a .gguf model: convert it or download a GGUF build',
      { details: fileDetails({ size, mtimeMs }) },
    );
  }
  return { size, mtimeMs };
}

/**
 * An ERR_MODEL_LOAD's `details`: the file's size and modification time, so a caller trying again
 * can tell a file still being written (they change) from one that will not load (see the worker).
 */
export function fileDetails(file: { size: number; mtimeMs: number }): { file_size: number; file_mtime_ms: number } {
  return { file_size: file.size, file_mtime_ms: Math.round(file.mtimeMs) };
}
