import { describe, expect, it } from 'vitest';
import type { LlamaGpuType } from 'node-llama-cpp';
import { errorCode, type Logger } from '@llmq/core';
import { chooseGpu, errorLine, type GpuChoiceDeps, type ProbeResult } from './gpu-check.js';

const PTX = 'CUDA error: the provided PTX was compiled with an unsupported toolchain.';

function recordingLogger(): Logger & { lines: { level: string; obj: Record<string, unknown>; msg?: string }[] } {
  const lines: { level: string; obj: Record<string, unknown>; msg?: string }[] = [];
  const at = (level: string) => (obj: object | string, msg?: string) => void lines.push({ level, obj: obj as Record<string, unknown>, ...(msg === undefined ? {} : { msg }) });
  const logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => logger, lines };
  return logger;
}

/** Supported types and a probe that fails the GPUs in `failing`, recording what it was asked. */
function fakes(
  supported: (LlamaGpuType | false)[],
  failing: Partial<Record<LlamaGpuType, string | Pick<ProbeResult, 'failure' | 'reason'>>>,
): GpuChoiceDeps & { probed: string[] } {
  const probed: string[] = [];
  return {
    probed,
    supported: async () => supported,
    probe: async (gpu): Promise<ProbeResult> => {
      probed.push(gpu);
      const f = failing[gpu];
      if (f === undefined) return { ok: true, reason: '', ms: 5 };
      return typeof f === 'string' ? { ok: false, failure: 'gpu', reason: f, ms: 5 } : { ok: false, ...f, ms: 5 };
    },
  };
}

describe('chooseGpu', () => {
  it('keeps gpu: false without starting a check', async () => {
    const deps = fakes(['cuda', false], {});
    expect(await chooseGpu({ gpu: false, modelPath: '/m.gguf' }, recordingLogger(), deps)).toBe(false);
    expect(deps.probed).toEqual([]);
  });

  it('auto: skips a GPU that fails its test decode, with a warning naming why, and takes the next', async () => {
    const deps = fakes(['cuda', 'vulkan', false], { cuda: `${PTX} (the process was killed by SIGABRT)` });
    const logger = recordingLogger();
    expect(await chooseGpu({ gpu: 'auto', modelPath: '/m.gguf' }, logger, deps)).toBe('vulkan');
    expect(deps.probed).toEqual(['cuda', 'vulkan']);
    const warn = logger.lines.find((l) => l.level === 'warn');
    expect(warn?.obj).toMatchObject({ gpu: 'cuda', reason: expect.stringContaining('unsupported toolchain') });
    expect(logger.lines.find((l) => l.level === 'info')?.obj).toMatchObject({ gpu: 'vulkan' });
  });

  it('auto: falls back to the CPU when every GPU fails, and checks none on a machine without one', async () => {
    const all = fakes(['cuda', 'vulkan', false], { cuda: 'x', vulkan: 'y' });
    expect(await chooseGpu({ gpu: 'auto', modelPath: '/m.gguf' }, recordingLogger(), all)).toBe(false);
    expect(all.probed).toEqual(['cuda', 'vulkan']);
    const none = fakes([false], {});
    expect(await chooseGpu({ gpu: 'auto', modelPath: '/m.gguf' }, recordingLogger(), none)).toBe(false);
    expect(none.probed).toEqual([]);
  });

  it('a named GPU that fails is ERR_DEPENDENCY_MISSING with the reason and what to do, not a fallback', async () => {
    const deps = fakes(['cuda', 'vulkan', false], { cuda: PTX });
    const err = await chooseGpu({ gpu: 'cuda', modelPath: '/m.gguf' }, recordingLogger(), deps).catch((e: unknown) => e as Error);
    expect(errorCode(err)).toBe('ERR_DEPENDENCY_MISSING');
    expect((err as Error).message).toContain(PTX);
    expect((err as Error).message).toMatch(/Set gpu to vulkan, or to false for the CPU.*source download --gpu cuda/);
    expect(deps.probed).toEqual(['cuda']);
    expect(await chooseGpu({ gpu: 'vulkan', modelPath: '/m.gguf' }, recordingLogger(), deps)).toBe('vulkan');
  });

  it("auto: a GPU type with no build that runs here is routine (info), a timeout is an error; a file that does not load is not the GPU's fault", async () => {
    const logger = recordingLogger();
    const deps = fakes(['cuda', 'vulkan', false], { cuda: { failure: 'no-binary', reason: 'no node-llama-cpp binary for cuda runs on this machine' }, vulkan: { failure: 'timeout', reason: 'no answer' } });
    expect(await chooseGpu({ gpu: 'auto', modelPath: '/m.gguf' }, logger, deps)).toBe(false);
    expect(logger.lines.map((l) => [l.level, l.obj.gpu])).toEqual([
      ['info', 'cuda'],
      ['error', 'vulkan'],
    ]);
    // The worker's own load then reports ERR_MODEL_LOAD with what is wrong with the file.
    const model = fakes(['cuda', false], { cuda: { failure: 'model', reason: 'the model did not load: bad magic' } });
    expect(await chooseGpu({ gpu: 'cuda', modelPath: '/m.gguf' }, recordingLogger(), model)).toBe('cuda');
    expect(await chooseGpu({ gpu: 'auto', modelPath: '/m.gguf' }, recordingLogger(), model)).toBe('cuda');
  });

  it.skipIf(process.platform === 'darwin')('refuses gpu: metal off macOS as a config error', async () => {
    const err = await chooseGpu({ gpu: 'metal', modelPath: '/m.gguf' }, recordingLogger(), fakes([false], {})).catch((e: unknown) => e as Error);
    expect(errorCode(err)).toBe('ERR_CONFIG_INVALID');
    expect(err.message).toMatch(/metal runs only on macOS/);
  });
});

describe('errorLine', () => {
  it("takes llama.cpp's `… error: …` line over the `… failed` one before it, and never a stack frame", () => {
    const output = [
      'ggml_cuda_compute_forward: MUL_MAT failed',
      PTX,
      '  current device: 0, in function ggml_cuda_mul_mat at ggml-cuda.cu:2051',
      'node[0x18a7b40]',
      '/lib/x86_64-linux-gnu/libc.so.6(+0x9cb84)[0x7fe26cc9cb84]',
    ].join('\n');
    expect(errorLine(output)).toBe(PTX);
    expect(errorLine('loading\nggml_vulkan: device lost, failed to submit\n 1: 0xb8a1 node::Abort()')).toBe('ggml_vulkan: device lost, failed to submit');
    expect(errorLine('just this\n')).toBe('just this');
    expect(errorLine('')).toBe('');
  });
});
