import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { LlmqError } from '@llmq/core';
import { checkModelFile } from './model-file.js';
import { abortReason, raceAbort } from './slot-pool.js';

export interface PullModelOptions {
  /**
   * What to download: `hf:<user>/<repo>:<quant>`, `hf:<user>/<repo>/<file>.gguf[#<branch>]`,
   * or an `https://` / `http://` URL of a .gguf file.
   */
  uri: string;
  /**
   * Folder the file is saved in (created when missing).
   * @defaultValue "models" (relative to the current directory)
   */
  dir?: string;
  /** Called as bytes arrive. */
  onProgress?: (progress: { downloaded: number; total?: number }) => void;
  /** Cancels the download (the partial file is removed). */
  signal?: AbortSignal;
  /** Hugging Face token for gated or private repositories (e.g. from env HF_TOKEN). */
  huggingFaceToken?: string;
  /**
   * A download that receives nothing for this long fails (ERR_BACKEND_UNAVAILABLE) instead of
   * waiting forever on a connection that went quiet; 0 waits forever.
   * @defaultValue 60000
   */
  stallTimeoutMs?: number;
}

const URI = /^(hf:[^\s/:#]+\/[^\s]+|https?:\/\/\S+)$/;

/**
 * Where node-llama-cpp fetches a URI from: `hf:` from MODEL_ENDPOINT, else HF_ENDPOINT, else
 * Hugging Face; like node-llama-cpp, a value counts only if it is an http(s) URL.
 */
export function downloadOrigin(uri: string, env: Readonly<Record<string, string | undefined>> = process.env): string {
  if (!uri.startsWith('hf:')) return new URL(uri).origin;
  for (const endpoint of [env.MODEL_ENDPOINT, env.HF_ENDPOINT]) {
    if (endpoint === undefined || !/^https?:\/\//i.test(endpoint)) continue;
    try {
      return new URL(endpoint).origin;
    } catch {
      // Not a URL: node-llama-cpp skips it too.
    }
  }
  return 'https://huggingface.co';
}

/**
 * The name a pulled file gets in its folder: its own name in the repository or URL, so that
 * `model_path: ../models/<file>.gguf` finds it whether it was pulled or copied in by hand
 * (node-llama-cpp would name a Hugging Face file `hf_<user>_<file>.gguf`). Undefined for
 * `hf:<user>/<repo>:<quant>`, whose file is known only once the repository is listed: that one
 * keeps node-llama-cpp's name.
 */
export function pulledFileName(uri: string): string | undefined {
  let name: string;
  if (uri.startsWith('hf:')) {
    const file = hfFile(uri);
    if (file === undefined) return undefined;
    name = file;
  } else {
    try {
      name = decodeURIComponent(new URL(uri).pathname).split('/').at(-1) ?? '';
    } catch {
      return undefined;
    }
  }
  return name.length > '.gguf'.length && name.toLowerCase().endsWith('.gguf') ? name : undefined;
}

/** The file an `hf:<user>/<repo>/[folders/]<file>[#<branch>]` URI names; undefined for `hf:<user>/<repo>[:<quant>]`. */
function hfFile(uri: string): string | undefined {
  const parts = (uri.slice('hf:'.length).split('#')[0] ?? '').split('/');
  return parts.length >= 3 ? parts.at(-1) : undefined;
}

/** Bytes per block and elements per block of the GGML tensor types models commonly use (ggml's type traits). */
const GGML_BLOCKS: Readonly<Record<number, readonly [bytes: number, elements: number]>> = {
  0: [4, 1], // F32
  1: [2, 1], // F16
  2: [18, 32], // Q4_0
  3: [20, 32], // Q4_1
  6: [22, 32], // Q5_0
  7: [24, 32], // Q5_1
  8: [34, 32], // Q8_0
  10: [84, 256], // Q2_K
  11: [110, 256], // Q3_K
  12: [144, 256], // Q4_K
  13: [176, 256], // Q5_K
  14: [210, 256], // Q6_K
  30: [2, 1], // BF16
};

/**
 * Whether a one-part GGUF holds all its tensor data: the file must reach the end of its last
 * tensor (for a type not in GGML_BLOCKS, at least that tensor's start). A split GGUF, or one that
 * cannot be read, is not judged here (llama.cpp still refuses it at load, with its reason).
 */
async function holdsAllTensors(path: string, size: number, llama: typeof import('node-llama-cpp')): Promise<boolean> {
  const info = await llama.readGgufFileInfo(path, { sourceType: 'filesystem', spliceSplitFiles: false, logWarnings: false }).catch(() => undefined);
  if (info?.tensorInfo === undefined || info.splicedParts > 1) return true;
  let end = 0;
  for (const t of info.tensorInfo) {
    const block = GGML_BLOCKS[t.ggmlType];
    const elements = t.dimensions.reduce<number>((a, d) => a * Number(d), 1);
    const bytes = block === undefined ? 1 : Math.ceil(elements / block[1]) * block[0];
    end = Math.max(end, Number(t.fileOffset) + bytes);
  }
  return size >= end;
}

/**
 * The complete, readable GGUF already in `dir` for this URI (all parts of a split one), found
 * without the network; undefined when there is none. A file cut short (a copy or download that
 * stopped) is not taken for the model: online it is downloaded again.
 */
async function presentFile(uri: string, dir: string, fileName: string | undefined, llama: typeof import('node-llama-cpp')): Promise<string | undefined> {
  try {
    const path = await llama.resolveModelFile(uri, { directory: dir, download: false, cli: false, ...(fileName === undefined ? {} : { fileName }) });
    const { size } = await checkModelFile(path);
    return (await holdsAllTensors(path, size, llama)) ? path : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Which URI each file in a models folder was pulled from. A file's own name is not unique across
 * repositories (two can each have a model.gguf): a file pulled from one URI is not taken for
 * another's. A file with no record was put there by hand, and is taken for any URI that names it.
 */
const SOURCES_FILE = '.llmq-pulled.json';

async function readSources(dir: string): Promise<Record<string, string>> {
  try {
    const parsed: unknown = JSON.parse(await readFile(join(dir, SOURCES_FILE), 'utf8'));
    return typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) ? (parsed as Record<string, string>) : {};
  } catch {
    return {};
  }
}

async function recordSource(dir: string, path: string, uri: string): Promise<void> {
  const sources = await readSources(dir);
  sources[basename(path)] = uri;
  // Best effort: without the record, the file counts as one put there by hand.
  await writeFile(join(dir, SOURCES_FILE), `${JSON.stringify(sources, null, 2)}\n`).catch(() => undefined);
}

/**
 * A URL's file name that tells it from another URL's file of the same name (another folder,
 * another query): the name with a hash of the whole URL, `model-1a2b3c4d5e.gguf`. The hash goes
 * before a split model's part suffix (`model-1a2b3c4d5e-00001-of-00002.gguf`), which
 * node-llama-cpp must still recognise, and the name stays within the 100 characters the
 * downloader keeps of a file name (it cuts longer ones, the hash with them).
 */
export function urlFileName(uri: string, name: string): string {
  const split = /-\d{5}-of-\d{5}(?=\.gguf$)/i.exec(name)?.[0] ?? '';
  const hash = createHash('sha256').update(uri).digest('hex').slice(0, 10);
  const base = name.slice(0, name.length - '.gguf'.length - split.length).slice(0, 100 - '.gguf'.length - split.length - hash.length - 1);
  return `${base}-${hash}${split}.gguf`;
}

function sizeText(bytes: number): string {
  return bytes >= 2 ** 20 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${Math.ceil(bytes / 1024)} KiB`;
}

async function allSaved(files: readonly { filePath: string }[]): Promise<boolean> {
  const saved = await Promise.all(files.map((f) => stat(f.filePath).then(() => true, () => false)));
  return saved.length > 0 && saved.every(Boolean);
}

/** How long the reachability check waits for any answer. */
const REACH_TIMEOUT_MS = 15_000;

/**
 * One request before the download: node-llama-cpp's downloader retries a failed connection 150
 * times, up to 5 s apart, so without it an offline machine sits silent for minutes. Any HTTP
 * answer will do; no answer is ERR_BACKEND_UNAVAILABLE at once, saying what to do instead.
 */
async function checkReachable(origin: string, dir: string, signal: AbortSignal | undefined): Promise<void> {
  const timeout = AbortSignal.timeout(REACH_TIMEOUT_MS);
  try {
    const res = await fetch(origin, { method: 'HEAD', redirect: 'manual', signal: signal === undefined ? timeout : AbortSignal.any([signal, timeout]) });
    await res.body?.cancel();
  } catch (err) {
    if (signal?.aborted) throw abortReason(signal);
    const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
    const why = timeout.aborted ? `no answer within ${REACH_TIMEOUT_MS / 1000} s` : String(cause?.code ?? cause?.message ?? (err as Error).message);
    throw new LlmqError(
      'ERR_BACKEND_UNAVAILABLE',
      `cannot reach ${origin} (${why}): pulling a model needs access to it. Without internet access here, download the .gguf on another machine and copy it into ${dir}`,
      { cause: err },
    );
  }
}

/**
 * Downloads a GGUF model with node-llama-cpp's downloader (parallel connections, split files
 * joined) and resolves to the path of the file to load. A complete GGUF already in `dir` under
 * the name it would get is kept, and found without the network (a restart offline still works).
 */
export async function pullModel(options: PullModelOptions): Promise<string> {
  const uri = options.uri.trim();
  if (!URI.test(uri)) {
    throw new LlmqError(
      'ERR_REQUEST_INVALID',
      `cannot pull "${options.uri}": give hf:<user>/<repo>:<quant>, hf:<user>/<repo>/<file>.gguf or an http(s) URL`,
      { param: 'uri' },
    );
  }
  const file = uri.startsWith('hf:') ? hfFile(uri) : undefined;
  // <file>.gguf, or a part of one split in bytes (<file>.gguf.part1of2: node-llama-cpp joins the parts).
  if (file !== undefined && !/\.gguf(\.part\d+of\d+)?$/i.test(file)) {
    throw new LlmqError('ERR_REQUEST_INVALID', `cannot pull "${options.uri}": a file in a Hugging Face repository must be a .gguf (hf:<user>/<repo>/<file>.gguf)`, { param: 'uri' });
  }
  const signal = options.signal;
  if (signal?.aborted) throw abortReason(signal);
  const dir = resolve(options.dir ?? 'models');
  await mkdir(dir, { recursive: true });
  let llama: typeof import('node-llama-cpp');
  try {
    llama = await import('node-llama-cpp');
  } catch (err) {
    throw new LlmqError('ERR_DEPENDENCY_MISSING', `node-llama-cpp cannot be loaded: ${(err as Error).message}`, { cause: err });
  }
  const sources = await readSources(dir);
  let fileName = pulledFileName(uri);
  // That name holds another URI's file (another repository's model.gguf): this one keeps a
  // longer name that tells them apart, node-llama-cpp's (hf_<user>_…) or, for a URL, one with its hash.
  if (fileName !== undefined && sources[fileName] !== undefined && sources[fileName] !== uri) fileName = uri.startsWith('hf:') ? undefined : urlFileName(uri, fileName);
  const present = await presentFile(uri, dir, fileName, llama);
  if (present !== undefined && (sources[basename(present)] ?? uri) === uri) return present;
  if (signal?.aborted) throw abortReason(signal);
  await checkReachable(downloadOrigin(uri), dir, signal);
  const onProgress = options.onProgress;
  // node-llama-cpp's downloader waits forever on a connection that went quiet, mid-file or while
  // it reads the file's size (0 turns this off).
  const stallMs = options.stallTimeoutMs ?? 60_000;
  const stalled = new AbortController();
  let last = { downloaded: -1, at: Date.now() };
  const watchdog =
    stallMs > 0
      ? setInterval(() => {
          if (Date.now() - last.at < stallMs) return;
          const at = last.downloaded > 0 ? ` after ${sizeText(last.downloaded)}` : '';
          stalled.abort(new LlmqError('ERR_BACKEND_UNAVAILABLE', `could not download ${uri}: nothing arrived for ${stallMs / 1000} s${at}; run the pull again`));
        }, Math.min(1_000, stallMs / 4))
      : undefined;
  const downloadSignal = signal === undefined ? stalled.signal : AbortSignal.any([signal, stalled.signal]);
  let downloader: Awaited<ReturnType<typeof llama.createModelDownloader>> | undefined;
  let path: string;
  try {
    // It takes no signal: one that is never answered is left behind.
    downloader = await raceAbort(
      llama.createModelDownloader({
        modelUri: uri,
        dirPath: dir,
        ...(fileName === undefined ? {} : { fileName }),
        skipExisting: true,
        deleteTempFileOnCancel: true,
        showCliProgress: false,
        onProgress: (s: { totalSize: number; downloadedSize: number }) => {
          if (s.downloadedSize !== last.downloaded) last = { downloaded: s.downloadedSize, at: Date.now() };
          onProgress?.(s.totalSize > 0 ? { downloaded: s.downloadedSize, total: s.totalSize } : { downloaded: s.downloadedSize });
        },
        ...(options.huggingFaceToken === undefined ? {} : { tokens: { huggingFace: options.huggingFaceToken } }),
      }),
      downloadSignal,
    );
    path = await downloader.download({ signal: downloadSignal });
    // A cancelled download resolves; unless it finished first, its files (every part of a split
    // model) are not all there: each is renamed into place only once whole.
    if (downloadSignal.aborted && !(await allSaved(downloader.filesInfo))) throw abortReason(downloadSignal);
  } catch (err) {
    // node-llama-cpp does not wait for the partial file's removal: wait for it here.
    if (downloadSignal.aborted) await downloader?.cancel().catch(() => undefined);
    if (signal?.aborted) throw abortReason(signal);
    if (stalled.signal.aborted) throw abortReason(stalled.signal);
    const message = (err as Error).message;
    if (/status code: 4\d\d/i.test(message)) {
      throw new LlmqError('ERR_REQUEST_INVALID', `could not download ${uri}: ${message}`, { param: 'uri', cause: err });
    }
    throw new LlmqError('ERR_BACKEND_UNAVAILABLE', `could not download ${uri}: ${message}`, { cause: err });
  } finally {
    clearInterval(watchdog);
  }
  // A server that answers 200 with an HTML page must not leave a "model" that fails at start-up.
  try {
    await checkModelFile(path);
  } catch (err) {
    await rm(path, { force: true });
    throw err;
  }
  await recordSource(dir, path, uri);
  return path;
}
