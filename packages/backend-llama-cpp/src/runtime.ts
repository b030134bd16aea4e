/**
 * One llama.cpp runtime per GPU setting and one load per model file per process, shared by every
 * backend instance and job that uses them. Models are reference-counted and disposed with their
 * last user; a runtime is kept for the life of the process (it holds no model memory), because
 * node-llama-cpp 3.22 routes llama.cpp's log lines only to the first runtime a process creates:
 * one created after it would print them raw to stderr, outside the structured log.
 */
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from 'node-llama-cpp';
import { LlmqError, type Logger } from '@llmq/core';
import { counters } from './stats.js';
import type { ResolvedLlamaCppOptions } from './config.js';
import { checkModelFile, fileDetails, pullCommand } from './model-file.js';
import { chooseGpu } from './gpu-check.js';

interface LlamaEntry {
  promise: Promise<Llama>;
  /** Receives llama.cpp's own log lines; the most recent user's logger. */
  logger: Logger;
  /**
   * llama.cpp's error lines while a model load runs, for the message of a load that fails (its own
   * says only "Failed to load model"); undefined between loads.
   */
  loadErrors: string[] | undefined;
  /** Model loads on this runtime run one at a time, so each failed load reads its own error lines. */
  loads: Promise<unknown>;
}

interface ModelEntry {
  promise: Promise<LlamaModel>;
  refs: number;
}

const llamas = new Map<string, LlamaEntry>();
const models = new Map<string, ModelEntry>();

export interface ModelHandle {
  llama: Llama;
  model: LlamaModel;
  /** True when this call loaded the file (false when it joined a load already there). */
  loaded: boolean;
  release(): Promise<void>;
}

type RuntimeOptions = Pick<ResolvedLlamaCppOptions, 'modelPath' | 'modelUri' | 'gpu' | 'gpuLayers' | 'threads' | 'mmap'>;

function acquireLlama(options: RuntimeOptions, logger: Logger): LlamaEntry {
  const key = String(options.gpu);
  let entry = llamas.get(key);
  if (entry === undefined) {
    const created: LlamaEntry = { logger, loadErrors: undefined, loads: Promise.resolve(), promise: Promise.resolve(undefined as unknown as Llama) };
    // A GPU must first decode a token in a child process (see chooseGpu): its binary can load here
    // and still abort the process at its first kernel.
    created.promise = chooseGpu(options, logger)
      .then((gpu) =>
        getLlama({
          gpu,
          // Never compile llama.cpp inside a worker: use a prebuilt binary or fail clearly.
          build: 'never',
          progressLogs: false,
          logLevel: LlamaLogLevel.warn,
          logger(level, message) {
            const text = message.trim();
            if (text === '') return;
            if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) {
              created.logger.error({ llama_cpp: text }, 'llama.cpp error');
              created.loadErrors?.push(text);
            } else created.logger.warn({ llama_cpp: text }, 'llama.cpp warning');
          },
          maxThreads: options.threads,
        }),
      )
      .then(
        (llama) => {
          counters.llamaInits++;
          return llama;
        },
        (err: unknown) => {
          llamas.delete(key);
          if (err instanceof LlmqError) throw err;
          throw new LlmqError('ERR_DEPENDENCY_MISSING', `node-llama-cpp could not start llama.cpp (gpu: ${String(options.gpu)}): ${(err as Error).message}`, {
            cause: err,
          });
        },
      );
    llamas.set(key, created);
    entry = created;
  }
  entry.logger = logger;
  return entry;
}

/**
 * What llama.cpp logged about a failed load (its "error loading model: …" line), and what to do
 * about a file that is cut short; '' when it logged nothing.
 */
export function loadFailureReason(logged: readonly string[], modelPath: string, modelUri?: string): string {
  const line = logged.find((l) => /error loading model/i.test(l)) ?? logged[0];
  if (line === undefined) return '';
  const reason = line.replace(/^.*?error loading model(?: architecture)?:\s*/i, '');
  const incomplete = /corrupted or incomplete|not within the file bounds|unexpected(ly)? end of file/i.test(reason);
  // "Delete it": `model pull` keeps a file already there unless it can tell the file is cut short
  // (it cannot for a split GGUF).
  const fix = incomplete ? `; delete it and fetch it again${modelUri === undefined ? '' : ` with \`${pullCommand(modelUri, modelPath)}\``}` : '';
  return ` (llama.cpp: ${reason}${fix})`;
}

/** Loads (or joins the load of) the model file with these options. */
export async function acquireModel(options: RuntimeOptions, logger: Logger): Promise<ModelHandle> {
  const key = JSON.stringify([options.modelPath, options.gpu, options.gpuLayers, options.mmap]);
  let entry = models.get(key);
  let loaded = false;
  let file: { size: number; mtimeMs: number } | undefined;
  if (entry === undefined) {
    // Before touching llama.cpp: a missing or non-GGUF file gets a message that says what to do.
    file = await checkModelFile(options.modelPath, options.modelUri);
    entry = models.get(key);
  }
  if (entry === undefined) {
    loaded = true;
    const llamaEntry = acquireLlama(options, logger);
    const created: ModelEntry = { refs: 0, promise: Promise.resolve(undefined as unknown as LlamaModel) };
    const load = async (llama: Llama): Promise<LlamaModel> => {
      const logged: string[] = [];
      llamaEntry.loadErrors = logged;
      try {
        const model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpuLayers, useMmap: options.mmap });
        counters.modelLoads++;
        counters.liveModels++;
        return model;
      } catch (err) {
        // llama.cpp's log lines reach JavaScript through their own queue, after the rejection at
        // times: give those of this load up to 50 ms to arrive (a failing load only).
        for (let waited = 0; waited < 50 && logged.length === 0; waited += 5) await new Promise((resolve) => setTimeout(resolve, 5));
        await new Promise((resolve) => setImmediate(resolve));
        throw new LlmqError('ERR_MODEL_LOAD', `could not load model ${options.modelPath}: ${(err as Error).message}${loadFailureReason(logged, options.modelPath, options.modelUri)}`, {
          cause: err,
          ...(file === undefined ? {} : { details: fileDetails(file) }),
        });
      } finally {
        llamaEntry.loadErrors = undefined;
      }
    };
    created.promise = llamaEntry.promise.then((llama) => {
      const turn = llamaEntry.loads.then(() => load(llama));
      llamaEntry.loads = turn.catch(() => undefined);
      return turn;
    });
    void created.promise.catch(() => {
      // Failed loads are forgotten so a later attempt (after fixing the file) tries again.
      if (models.get(key) === created) models.delete(key);
    });
    models.set(key, created);
    entry = created;
  }
  const current = entry;
  current.refs++;
  let model: LlamaModel;
  try {
    model = await current.promise;
  } catch (err) {
    current.refs--;
    throw err;
  }
  const llama = model.llama;
  // maxThreads caps all contexts of this runtime together; let it hold the largest request.
  if (llama.maxThreads !== 0 && llama.maxThreads < options.threads) llama.maxThreads = options.threads;
  let released = false;
  return {
    llama,
    model,
    loaded,
    async release() {
      if (released) return;
      released = true;
      current.refs--;
      if (current.refs > 0 || models.get(key) !== current) return;
      models.delete(key);
      await model.dispose();
      counters.liveModels--;
    },
  };
}
