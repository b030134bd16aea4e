import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getLlamaGpuTypes } from 'node-llama-cpp';
import { generateTinyGguf } from '@llmq/testing';
import { probeGpu } from './gpu-check.js';

const cudaHere = (await getLlamaGpuTypes('supported')).includes('cuda');

// Runs the compiled child script (dist/gpu-probe.js): `npm test` builds first.
const PTX = 'CUDA error: the provided PTX was compiled with an unsupported toolchain.';

describe('probeGpu (a real child process)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'llmq-gpu-probe-'));
  const script = (name: string, body: string) => {
    const path = join(dir, name);
    writeFileSync(path, body);
    return path;
  };

  it('passes when the child decodes a token (here on the CPU, the only device CI has)', async () => {
    const result = await probeGpu(false, await generateTinyGguf());
    expect(result).toMatchObject({ ok: true, reason: '' });
  });

  it.skipIf(cudaHere)('says when node-llama-cpp has no CUDA build that runs here (a machine without CUDA)', async () => {
    const result = await probeGpu('cuda', await generateTinyGguf());
    expect(result).toMatchObject({ ok: false, failure: 'no-binary', reason: 'no node-llama-cpp binary for cuda runs on this machine (exit code 3)' });
  });

  it('passes a child that decoded and then crashed while shutting down', async () => {
    const crashing = script('crash.mjs', "process.stdout.write('decoded\\n', () => process.abort());");
    expect(await probeGpu('cuda', '/m.gguf', { script: crashing })).toMatchObject({ ok: true });
  });

  it("reports llama.cpp's line and the signal when the child aborts, as a CUDA kernel failure does", async () => {
    const aborting = script('abort.mjs', `process.stderr.write('ggml_cuda_init: found 1 CUDA devices\\n${PTX}\\n  current device: 0\\n'); process.abort();`);
    const result = await probeGpu('cuda', '/m.gguf', { script: aborting });
    expect(result).toMatchObject({ ok: false, failure: 'gpu', reason: `${PTX} (the process was killed by SIGABRT)` });
  });

  it('tells a model that does not load from a GPU that fails, and gives up on a child that hangs', async () => {
    const missing = await probeGpu(false, join(dir, 'missing.gguf'));
    expect(missing).toMatchObject({ ok: false, failure: 'model' });
    expect(missing.reason).toMatch(/the model did not load: .*missing\.gguf.*\(exit code 2\)/);
    const hanging = script('hang.mjs', 'setInterval(() => {}, 1000);');
    const hung = await probeGpu('vulkan', '/m.gguf', { script: hanging, timeoutMs: 300 });
    expect(hung).toMatchObject({ ok: false, failure: 'timeout', reason: expect.stringMatching(/^no answer within 300 ms/) });
  });
});
