/**
 * Which GPU a worker may use: one that has decoded a token in a child process. node-llama-cpp checks
 * that a GPU binary loads and finds a device, but not that its kernels run: on an H200 with a CUDA
 * 13.0 driver, node-llama-cpp 3.22.1's CUDA binary (CUDA 13.1, PTX only for Hopper) passed that
 * check and then aborted the process at its first decode.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getLlamaGpuTypes, type LlamaGpuType } from 'node-llama-cpp';
import { LlmqError, type Logger } from '@llmq/core';
import type { ResolvedLlamaCppOptions } from './config.js';

export interface ProbeResult {
  ok: boolean;
  /** Why not: llama.cpp's or node-llama-cpp's error line, and how the child ended ('' when ok). */
  reason: string;
  ms: number;
}

/** The compiled child script (tests run from src/, where only its .ts is). */
function probeScript(): string {
  const sibling = fileURLToPath(new URL('./gpu-probe.js', import.meta.url));
  return existsSync(sibling) ? sibling : fileURLToPath(new URL('../dist/gpu-probe.js', import.meta.url));
}

/** The most telling line of what a failed child wrote: its first error line, else its last line; never a frame of a stack trace. */
function errorLine(output: string): string {
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^\d+: |^at |\(\+0x[0-9a-f]+\)|^node\[/.test(l));
  return lines.find((l) => /error|failed|not supported|unsupported/i.test(l)) ?? lines.at(-1) ?? '';
}

/** Decodes one token of `modelPath` on `gpu` in a child process; never throws. */
export function probeGpu(gpu: LlamaGpuType | false, modelPath: string, opts: { script?: string; timeoutMs?: number } = {}): Promise<ProbeResult> {
  const started = performance.now();
  const timeoutMs = opts.timeoutMs ?? 180_000;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [opts.script ?? probeScript(), String(gpu), modelPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    let output = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      output = (output + chunk).slice(-16_384);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const done = (reason: string) => {
      clearTimeout(timer);
      resolve({ ok: reason === '', reason, ms: Math.round(performance.now() - started) });
    };
    child.on('error', (err) => done(`could not start the check: ${err.message}`));
    child.on('close', (code, signal) => {
      if (code === 0) return done('');
      const how = timedOut ? `no answer within ${timeoutMs} ms` : signal !== null ? `the process was killed by ${signal}` : `exit code ${String(code)}`;
      const line = errorLine(output);
      done(line === '' ? how : `${line} (${how})`);
    });
  });
}

export interface GpuChoiceDeps {
  /** The GPU types node-llama-cpp has binaries and drivers for here, best first. */
  supported(): Promise<(LlamaGpuType | false)[]>;
  probe(gpu: LlamaGpuType, modelPath: string): Promise<ProbeResult>;
}

const defaultDeps: GpuChoiceDeps = {
  supported: () => getLlamaGpuTypes('supported'),
  probe: (gpu, modelPath) => probeGpu(gpu, modelPath),
};

/**
 * The `gpu` to start llama.cpp with for this model: false stays false; a named GPU must pass the
 * test decode (else ERR_DEPENDENCY_MISSING with llama.cpp's reason); 'auto' takes the first
 * supported GPU that passes, else the CPU, with a warning for each that failed.
 */
export async function chooseGpu(
  options: Pick<ResolvedLlamaCppOptions, 'gpu' | 'modelPath'>,
  logger: Logger,
  deps: GpuChoiceDeps = defaultDeps,
): Promise<LlamaGpuType | false> {
  const { gpu, modelPath } = options;
  if (gpu === false) return false;
  const candidates = gpu === 'auto' ? (await deps.supported()).filter((t): t is LlamaGpuType => t !== false) : [gpu];
  for (const candidate of candidates) {
    const result = await deps.probe(candidate, modelPath);
    if (result.ok) {
      logger.info({ gpu: candidate, ms: result.ms }, 'GPU passed a test decode');
      return candidate;
    }
    if (gpu !== 'auto') {
      throw new LlmqError(
        'ERR_DEPENDENCY_MISSING',
        `gpu: ${gpu} cannot decode on this machine: ${result.reason}. Set gpu to another type (vulkan, or false for the CPU), ` +
          `update the GPU driver, or build node-llama-cpp for this machine (npx --no node-llama-cpp source download --gpu ${gpu})`,
      );
    }
    logger.warn({ gpu: candidate, reason: result.reason, ms: result.ms }, 'GPU failed a test decode; trying the next GPU type, then the CPU');
  }
  return false;
}
