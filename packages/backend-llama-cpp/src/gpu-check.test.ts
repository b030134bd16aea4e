import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LlamaGpuType } from 'node-llama-cpp';
import { errorCode, type Logger } from '@llmq/core';
import { generateTinyGguf } from '@llmq/testing';
import { chooseGpu, probeGpu, type GpuChoiceDeps, type ProbeResult } from './gpu-check.js';

const PTX = 'CUDA error: the provided PTX was compiled with an unsupported toolchain.';

function recordingLogger(): Logger & { lines: { level: string; obj: Record<string, unknown>; msg?: string }[] } {
  const lines: { level: string; obj: Record<string, unknown>; msg?: string }[] = [];
  const at = (level: string) => (obj: object | string, msg?: string) => void lines.push({ level, obj: obj as Record<string, unknown>, ...(msg === undefined ? {} : { msg }) });
  const logger = { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: () => logger, lines };
  return logger;
}

/** Supported types and a probe that fails the GPUs in `failing`, recording what it was asked. */
function fakes(supported: (LlamaGpuType | false)[], failing: Partial<Record<LlamaGpuType, string>>): GpuChoiceDeps & { probed: string[] } {
  const probed: string[] = [];
  return {
    probed,
    supported: async () => supported,
    probe: async (gpu): Promise<ProbeResult> => {
      probed.push(gpu);
      const reason = failing[gpu];
      return { ok: reason === undefined, reason: reason ?? '', ms: 5 };
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
    expect((err as Error).message).toMatch(/vulkan, or false for the CPU.*source download --gpu cuda/);
    expect(deps.probed).toEqual(['cuda']);
    expect(await chooseGpu({ gpu: 'vulkan', modelPath: '/m.gguf' }, recordingLogger(), deps)).toBe('vulkan');
  });
});

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

  it("reports llama.cpp's line and the signal when the child aborts, as a CUDA kernel failure does", async () => {
    const aborting = script('abort.mjs', `process.stderr.write('ggml_cuda_init: found 1 CUDA devices\\n${PTX}\\n  current device: 0\\n'); process.abort();`);
    const result = await probeGpu('cuda', '/m.gguf', { script: aborting });
    expect(result.ok).toBe(false);
    expect(result.reason).toBe(`${PTX} (the process was killed by SIGABRT)`);
  });

  it('reports a model the child cannot load, and gives up on a child that hangs', async () => {
    const missing = await probeGpu(false, join(dir, 'missing.gguf'));
    expect(missing.ok).toBe(false);
    expect(missing.reason).toMatch(/missing\.gguf.*\(exit code 1\)/);
    const hanging = script('hang.mjs', 'setInterval(() => {}, 1000);');
    const hung = await probeGpu('vulkan', '/m.gguf', { script: hanging, timeoutMs: 300 });
    expect(hung).toMatchObject({ ok: false, reason: 'no answer within 300 ms' });
  });
});
