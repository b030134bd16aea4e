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

/** How the check's child process ends (see gpu-probe.ts). */
export const PROBE_EXIT = { noBinary: 3, modelLoad: 2, other: 1 } as const;

export interface ProbeResult {
  ok: boolean;
  /**
   * Whose fault a failure is: the GPU's (its binary or its first decode), `no-binary` (node-llama-cpp
   * has no build for this GPU that runs here), or `model` (the file did not load: not a GPU matter).
   */
  failure?: 'gpu' | 'no-binary' | 'model' | 'timeout';
  /** Why not: llama.cpp's or node-llama-cpp's error line, and how the child ended ('' when ok). */
  reason: string;
  ms: number;
}

/** The compiled child script (tests run from src/, where only its .ts is). */
function probeScript(): string {
  const sibling = fileURLToPath(new URL('./gpu-probe.js', import.meta.url));
  return existsSync(sibling) ? sibling : fileURLToPath(new URL('../dist/gpu-probe.js', import.meta.url));
}

/** Stack-trace frames (JavaScript's, or glibc's from an abort) say nothing about the cause. */
const FRAME = /^\d+: |^at |\(\+0x[0-9a-f]+\)|^node\[/;

/**
 * The most telling line of what a failed child wrote: an "…error: …" line (llama.cpp's
 * `CUDA error: …` comes after its "… failed" line), then any line naming an error or a failure,
 * then the last line.
 */
export function errorLine(output: string): string {
  const lines = output
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !FRAME.test(l));
  return lines.find((l) => /\berror: /i.test(l)) ?? lines.find((l) => /error|failed|not supported|unsupported/i.test(l)) ?? lines.at(-1) ?? '';
}

/** Decodes one token of `modelPath` on `gpu` in a child process; never throws. */
export function probeGpu(gpu: LlamaGpuType | false, modelPath: string, opts: { script?: string; timeoutMs?: number } = {}): Promise<ProbeResult> {
  const started = performance.now();
  const timeoutMs = opts.timeoutMs ?? 180_000;
  return new Promise((resolve) => {
    // An IPC channel, so the child exits if this process dies while it runs.
    const child = spawn(process.execPath, [opts.script ?? probeScript(), String(gpu), modelPath], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const killChild = () => child.kill('SIGKILL');
    process.once('exit', killChild);
    let decoded = false;
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => void (decoded ||= chunk.includes('decoded')));
    // The first and the last 8 KB: the cause is usually near the start, how it ended at the end.
    let head = '';
    let tail = '';
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      if (head.length < 8_192) head += chunk;
      else tail = (tail + chunk).slice(-8_192);
    });
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killChild();
    }, timeoutMs);
    let settled = false;
    const done = (result: Omit<ProbeResult, 'ms'>) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      process.off('exit', killChild);
      resolve({ ...result, ms: Math.round(performance.now() - started) });
    };
    child.on('error', (err) => done({ ok: false, failure: 'gpu', reason: `could not start the check: ${err.message}` }));
    child.on('close', (code, signal) => {
      // A crash while llama.cpp tears down after the token does not fail a GPU that decoded.
      if (decoded || code === 0) return done({ ok: true, reason: '' });
      if (timedOut) return done({ ok: false, failure: 'timeout', reason: `no answer within ${timeoutMs} ms (the model loads and decodes one token with one layer on the GPU)` });
      const how = signal !== null ? `the process was killed by ${signal}` : `exit code ${String(code)}`;
      const line = errorLine(head + tail);
      const failure = code === PROBE_EXIT.noBinary ? 'no-binary' : code === PROBE_EXIT.modelLoad ? 'model' : 'gpu';
      done({ ok: false, failure, reason: line === '' ? how : `${line} (${how})` });
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
  if (gpu === 'metal' && process.platform !== 'darwin') {
    throw new LlmqError('ERR_CONFIG_INVALID', `options.gpu: metal runs only on macOS (this is ${process.platform}); use auto, cuda, vulkan or false`, {
      param: 'options.gpu',
    });
  }
  const candidates = gpu === 'auto' ? (await deps.supported()).filter((t): t is LlamaGpuType => t !== false) : [gpu];
  for (const candidate of candidates) {
    const result = await deps.probe(candidate, modelPath);
    if (result.ok) {
      logger.info({ gpu: candidate, ms: result.ms }, 'GPU passed a test decode');
      return candidate;
    }
    // A file that does not load is not the GPU's fault: the worker's own load says what is wrong with it.
    if (result.failure === 'model') return candidate;
    if (gpu !== 'auto') {
      throw new LlmqError(
        'ERR_DEPENDENCY_MISSING',
        `gpu: ${gpu} cannot decode on this machine: ${result.reason}. Set gpu to ${gpu === 'cuda' ? 'vulkan, or to ' : gpu === 'vulkan' ? 'cuda, or to ' : ''}false for the CPU, ` +
          `update the GPU driver, or build node-llama-cpp for this machine (npx --no node-llama-cpp source download --gpu ${gpu})`,
      );
    }
    const entry = { gpu: candidate, reason: result.reason, ms: result.ms };
    // No build for a GPU type whose libraries are installed (Mesa's Vulkan on a machine without a GPU) is routine.
    if (result.failure === 'no-binary') logger.info(entry, 'no usable build for this GPU type; trying the next, then the CPU');
    else if (result.failure === 'timeout') logger.error(entry, 'GPU test decode timed out; trying the next GPU type, then the CPU');
    else logger.warn(entry, 'GPU failed a test decode; trying the next GPU type, then the CPU');
  }
  return false;
}
