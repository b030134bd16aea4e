/**
 * pullModel without the internet: argument errors, and real downloads from a local HTTP server
 * (the machines these tests run on have no network; Hugging Face URIs are not exercised).
 */
import { readFileSync, readdirSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { errorCode } from '@llmq/core';
import { buildTinyGguf } from '@llmq/testing';
import { downloadOrigin, pulledFileName, pullModel, urlFileName } from './pull.js';

const model = buildTinyGguf({ seed: 5 });
let server: Server;
let base: string;
/** Requests the server answered, by path. */
const requests: string[] = [];
const dir = mkdtempSync(join(tmpdir(), 'llmq-pull-'));

beforeAll(async () => {
  server = createServer((req, res) => {
    const url = (req.url ?? '').split('?')[0] ?? '';
    requests.push(url);
    if (url.endsWith('/hang.gguf')) return; // no answer at all: the downloader's setup waits on it
    if (url.endsWith('/stall.gguf')) {
      // Headers and the first bytes, then nothing: a connection gone quiet mid-file.
      res.writeHead(200, { 'content-length': model.length });
      if (req.method !== 'HEAD') res.write(model.subarray(0, 64));
      else res.end();
      return;
    }
    if (url.endsWith('/page.gguf')) {
      res.writeHead(200, { 'content-type': 'text/html', 'content-length': 15 });
      return res.end('<html>hi</html>');
    }
    if (!url.endsWith('/tiny.gguf') && !url.endsWith('/model.gguf')) {
      res.writeHead(404);
      return res.end('not found');
    }
    const range = /bytes=(\d+)-(\d*)/.exec(req.headers.range ?? '');
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Number(range[2]) : model.length - 1;
      res.writeHead(206, {
        'content-length': end - start + 1,
        'content-range': `bytes ${start}-${end}/${model.length}`,
        'accept-ranges': 'bytes',
      });
      return res.end(model.subarray(start, end + 1));
    }
    res.writeHead(200, { 'content-length': model.length, 'accept-ranges': 'bytes' });
    res.end(model);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  base = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
  rmSync(dir, { recursive: true, force: true });
});

const failure = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as Error);

/** An http URL nothing listens on. */
async function closedOrigin(): Promise<string> {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const address = closed.address();
  await new Promise((resolve) => closed.close(resolve));
  return `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
}

/** Runs `fn` with Hugging Face URIs fetched from `origin` (node-llama-cpp reads MODEL_ENDPOINT). */
async function withEndpoint<T>(origin: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env.MODEL_ENDPOINT;
  process.env.MODEL_ENDPOINT = origin;
  try {
    return await fn();
  } finally {
    if (before === undefined) delete process.env.MODEL_ENDPOINT;
    else process.env.MODEL_ENDPOINT = before;
  }
}

describe('pullModel', () => {
  it('refuses a URI it cannot download before touching the network', async () => {
    for (const uri of ['', 'models/llama.gguf', 'ftp://host/x.gguf', 'hf:', 'hf:onlyuser', 'hf:user/repo/model.bin', 'hf:user/repo/sub/model.safetensors#main']) {
      const err = await failure(pullModel({ uri, dir }));
      expect(errorCode(err), uri).toBe('ERR_REQUEST_INVALID');
    }
  });

  it('rejects with the signal reason when already aborted', async () => {
    const reason = new Error('stop');
    const ac = new AbortController();
    ac.abort(reason);
    expect(await failure(pullModel({ uri: 'hf:user/repo:Q4_K_M', dir, signal: ac.signal }))).toBe(reason);
  });

  it('downloads a GGUF over HTTP into dir, reporting progress', async () => {
    const progress: { downloaded: number; total?: number }[] = [];
    const path = await pullModel({ uri: `${base}/files/tiny.gguf`, dir, onProgress: (p) => progress.push(p) });
    expect(path).toBe(join(dir, 'tiny.gguf'));
    expect(readFileSync(path).equals(model)).toBe(true);
    expect(progress.at(-1)).toEqual({ downloaded: model.length, total: model.length });
  });

  it('fails at once, saying what to do, when the server cannot be reached (the downloader would retry for minutes)', async () => {
    const origin = await closedOrigin();
    const started = Date.now();
    const err = await failure(pullModel({ uri: `${origin}/files/absent.gguf`, dir }));
    expect(errorCode(err)).toBe('ERR_BACKEND_UNAVAILABLE');
    expect(err?.message).toContain(`cannot reach ${origin} (ECONNREFUSED)`);
    expect(err?.message).toContain(`copy it into ${dir}`);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("saves a Hugging Face file under its own name, the one the config's model_path names", async () => {
    const into = join(dir, 'hf');
    const path = await withEndpoint(base, () => pullModel({ uri: 'hf:acme/tiny-GGUF/tiny.gguf', dir: into }));
    // node-llama-cpp alone would have saved hf_acme_tiny.gguf, which config/default.yaml does not name.
    expect(path).toBe(join(into, 'tiny.gguf'));
    expect(readFileSync(path).equals(model)).toBe(true);
    expect(requests).toContain('/acme/tiny-GGUF/resolve/main/tiny.gguf');
  });

  it('keeps a complete file already there, without the network (a restart offline still works)', async () => {
    const into = join(dir, 'present');
    mkdirSync(into, { recursive: true });
    writeFileSync(join(into, 'tiny.gguf'), model);
    // node-llama-cpp's own name for the file of an hf:<user>/<repo>:<quant> URI.
    writeFileSync(join(into, 'hf_acme_tiny.Q4_K_M.gguf'), model);
    const offline = await closedOrigin();
    const before = requests.length;
    await withEndpoint(offline, async () => {
      expect(await pullModel({ uri: 'hf:acme/tiny-GGUF/tiny.gguf', dir: into })).toBe(join(into, 'tiny.gguf'));
      expect(await pullModel({ uri: 'hf:acme/tiny-GGUF:Q4_K_M', dir: into })).toBe(join(into, 'hf_acme_tiny.Q4_K_M.gguf'));
    });
    expect(await pullModel({ uri: `${base}/files/tiny.gguf`, dir: into })).toBe(join(into, 'tiny.gguf'));
    expect(requests.length).toBe(before);
    // A file there that is not a GGUF is not taken for the model: offline, that is an error that says so.
    writeFileSync(join(into, 'tiny.gguf'), '<html>hi</html>');
    expect(errorCode(await failure(withEndpoint(offline, () => pullModel({ uri: 'hf:acme/tiny-GGUF/tiny.gguf', dir: into }))))).toBe('ERR_BACKEND_UNAVAILABLE');
  });

  it('downloads again a file there that was cut short (the worker would refuse it)', async () => {
    const into = join(dir, 'cut');
    mkdirSync(into, { recursive: true });
    const path = join(into, 'tiny.gguf');
    // Short by 100 bytes: the last tensor's data ends past the end of the file.
    writeFileSync(path, model.subarray(0, model.length - 100));
    const offline = await closedOrigin();
    expect(errorCode(await failure(pullModel({ uri: `${offline}/files/tiny.gguf`, dir: into })))).toBe('ERR_BACKEND_UNAVAILABLE');
    const before = requests.length;
    expect(await pullModel({ uri: `${base}/files/tiny.gguf`, dir: into })).toBe(path);
    expect(requests.length).toBeGreaterThan(before);
    expect(readFileSync(path).equals(model)).toBe(true);
  });

  it("does not take another repository's file of the same name for this one", async () => {
    const into = join(dir, 'same-name');
    const first = await withEndpoint(base, () => pullModel({ uri: 'hf:acme/tiny-GGUF/tiny.gguf', dir: into }));
    expect(first).toBe(join(into, 'tiny.gguf'));
    const before = requests.length;
    const other = await withEndpoint(base, () => pullModel({ uri: 'hf:other/thing-GGUF/tiny.gguf', dir: into }));
    // Downloaded, under node-llama-cpp's name for it; the first one is left as it was.
    expect(requests.length).toBeGreaterThan(before);
    expect(other).not.toBe(first);
    expect(other.startsWith(join(into, 'hf_other_'))).toBe(true);
    // Offline, each URI still finds its own file.
    const offline = await closedOrigin();
    await withEndpoint(offline, async () => {
      expect(await pullModel({ uri: 'hf:acme/tiny-GGUF/tiny.gguf', dir: into })).toBe(first);
      expect(await pullModel({ uri: 'hf:other/thing-GGUF/tiny.gguf', dir: into })).toBe(other);
    });
  });

  it("does not overwrite another URL's file of the same name", async () => {
    const into = join(dir, 'same-url-name');
    const first = await pullModel({ uri: `${base}/a/model.gguf`, dir: into });
    expect(first).toBe(join(into, 'model.gguf'));
    const other = await pullModel({ uri: `${base}/b/model.gguf`, dir: into });
    // Named with a hash of its URL, beside the first, which is left as it was.
    expect(other).toMatch(/[/\\]model-[0-9a-f]{10}\.gguf$/);
    expect(dirname(other)).toBe(into);
    expect(readFileSync(other).equals(model)).toBe(true);
    // Each URL finds its own file again, without downloading.
    const before = requests.length;
    expect(await pullModel({ uri: `${base}/a/model.gguf`, dir: into })).toBe(first);
    expect(await pullModel({ uri: `${base}/b/model.gguf`, dir: into })).toBe(other);
    expect(requests.length).toBe(before);
    // Another URL whose folders would flatten to the same text, or that differs by its query, is a third file.
    const third = await pullModel({ uri: `${base}/b/model.gguf?v=2`, dir: into });
    expect([first, other]).not.toContain(third);
  });

  it('names a second URL\'s file so that node-llama-cpp and its downloader keep the name whole', () => {
    expect(urlFileName('https://h/b/model.gguf', 'model.gguf')).toMatch(/^model-[0-9a-f]{10}\.gguf$/);
    // A split model's parts are found by their -0000k-of-0000n suffix: the hash goes before it.
    expect(urlFileName('https://h/b/m-00001-of-00002.gguf', 'm-00001-of-00002.gguf')).toMatch(/^m-[0-9a-f]{10}-00001-of-00002\.gguf$/);
    // The downloader cuts names to 100 characters: a long one is cut before the hash, not through it.
    const long = urlFileName('https://h/b/x.gguf', `${'x'.repeat(150)}-00001-of-00003.gguf`);
    expect(long.length).toBeLessThanOrEqual(100);
    expect(long).toMatch(/^x+-[0-9a-f]{10}-00001-of-00003\.gguf$/);
    expect(urlFileName('https://h/a_b/model.gguf', 'model.gguf')).not.toBe(urlFileName('https://h/a/b/model.gguf', 'model.gguf'));
  });

  it('fails, leaving no partial file, when the download goes quiet mid-file', async () => {
    const into = join(dir, 'stall');
    const started = Date.now();
    const err = await failure(pullModel({ uri: `${base}/files/stall.gguf`, dir: into, stallTimeoutMs: 1_000 }));
    expect(errorCode(err), String(err)).toBe('ERR_BACKEND_UNAVAILABLE');
    expect(err?.message).toMatch(/nothing arrived for 1 s.*run the pull again/);
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(readdirSync(into).filter((f) => f.includes('stall'))).toEqual([]);
  });

  it('fails, too, when the server never answers the downloader (its setup takes no signal)', async () => {
    const started = Date.now();
    const err = await failure(pullModel({ uri: `${base}/files/hang.gguf`, dir: join(dir, 'hang'), stallTimeoutMs: 1_000 }));
    expect(errorCode(err), String(err)).toBe('ERR_BACKEND_UNAVAILABLE');
    expect(err?.message).toMatch(/nothing arrived for 1 s; run the pull again/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  it('takes a binary-split part URI (node-llama-cpp joins the parts) past the URI check', async () => {
    const offline = await closedOrigin();
    const err = await failure(withEndpoint(offline, () => pullModel({ uri: 'hf:user/repo/Big.Q8_0.gguf.part1of2', dir: join(dir, 'parts') })));
    // Refused only for being offline, not as a bad URI.
    expect(errorCode(err)).toBe('ERR_BACKEND_UNAVAILABLE');
  });

  it('names the file a URI names, and none for a quantization tag', () => {
    expect(pulledFileName('hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF/qwen2.5-0.5b-instruct-q4_k_m.gguf')).toBe('qwen2.5-0.5b-instruct-q4_k_m.gguf');
    expect(pulledFileName('hf:user/repo/sub/folder/Model-Q4.GGUF#dev')).toBe('Model-Q4.GGUF');
    expect(pulledFileName('https://huggingface.co/Qwen/R/resolve/main/a%20b.gguf?download=true')).toBe('a b.gguf');
    expect(pulledFileName('https://example.com/m/x-00001-of-00002.gguf')).toBe('x-00001-of-00002.gguf');
    expect(pulledFileName('hf:bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M')).toBeUndefined();
    expect(pulledFileName('hf:user/file.gguf')).toBeUndefined();
    expect(pulledFileName('https://example.com/download?id=3')).toBeUndefined();
    expect(pulledFileName('https://example.com/.gguf')).toBeUndefined();
  });

  it('checks the host node-llama-cpp will download from', () => {
    expect(downloadOrigin('hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M', {})).toBe('https://huggingface.co');
    expect(downloadOrigin('hf:a/b/c.gguf', { HF_ENDPOINT: 'https://hf-mirror.example/' })).toBe('https://hf-mirror.example');
    expect(downloadOrigin('hf:a/b/c.gguf', { MODEL_ENDPOINT: 'not a url', HF_ENDPOINT: 'http://mirror:8080' })).toBe('http://mirror:8080');
    expect(downloadOrigin('https://example.com:8443/m/x.gguf', {})).toBe('https://example.com:8443');
    // Values that are not http(s) URLs are skipped, as node-llama-cpp skips them.
    expect(downloadOrigin('hf:a/b/c.gguf', { HF_ENDPOINT: 'hf-mirror.com:443' })).toBe('https://huggingface.co');
    expect(downloadOrigin('hf:a/b/c.gguf', { MODEL_ENDPOINT: 'localhost:8080', HF_ENDPOINT: 'ftp://mirror' })).toBe('https://huggingface.co');
  });

  it('maps a 404 to ERR_REQUEST_INVALID and a non-GGUF answer to ERR_MODEL_LOAD', async () => {
    expect(errorCode(await failure(pullModel({ uri: `${base}/nothing/here.gguf`, dir })))).toBe('ERR_REQUEST_INVALID');
    const err = await failure(pullModel({ uri: `${base}/files/page.gguf`, dir: join(dir, 'pages') }));
    expect(errorCode(err)).toBe('ERR_MODEL_LOAD');
    // Not left behind looking like a model.
    expect(existsSync(join(dir, 'pages', 'page.gguf'))).toBe(false);
  });
});
