/**
 * One llama.cpp runtime per GPU setting and one load per model file per process, shared by every
 * backend instance and job that uses them, reference-counted and disposed with the last user.
 */
import { getLlama, LlamaLogLevel, type Llama, type LlamaModel } from 'node-llama-cpp';
import { LlmqError, type Logger } from '@llmq/core';
import { counters } from './stats.js';
import type { ResolvedLlamaCppOptions } from './config.js';
import { checkModelFile } from './model-file.js';

interface LlamaEntry {
  promise: Promise<Llama>;
  refs: number;
  /** Receives llama.cpp's own log lines; the most recent user's logger. */
  logger: Logger;
}

interface ModelEntry {
  promise: Promise<LlamaModel>;
  refs: number;
  llamaKey: string;
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

type RuntimeOptions = Pick<ResolvedLlamaCppOptions, 'modelPath' | 'modelUri' | 'gpu' | 'gpuLayers' | 'threads'>;

function acquireLlama(options: RuntimeOptions, logger: Logger): { key: string; entry: LlamaEntry } {
  const key = String(options.gpu);
  let entry = llamas.get(key);
  if (entry === undefined) {
    const created: LlamaEntry = { refs: 0, logger, promise: Promise.resolve(undefined as unknown as Llama) };
    created.promise = getLlama({
      gpu: options.gpu,
      // Never compile llama.cpp inside a worker: use a prebuilt binary or fail clearly.
      build: 'never',
      progressLogs: false,
      logLevel: LlamaLogLevel.warn,
      logger(level, message) {
        const text = message.trim();
        if (text === '') return;
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) created.logger.error({ llama_cpp: text }, 'llama.cpp error');
        else created.logger.warn({ llama_cpp: text }, 'llama.cpp warning');
      },
      maxThreads: options.threads,
    }).then(
      (llama) => {
        counters.llamaInits++;
        return llama;
      },
      (err: unknown) => {
        llamas.delete(key);
        throw new LlmqError('ERR_DEPENDENCY_MISSING', `node-llama-cpp could not start llama.cpp (gpu: ${String(options.gpu)}): ${(err as Error).message}`, {
          cause: err,
        });
      },
    );
    llamas.set(key, created);
    entry = created;
  }
  entry.refs++;
  entry.logger = logger;
  return { key, entry };
}

async function releaseLlama(key: string): Promise<void> {
  const entry = llamas.get(key);
  if (entry === undefined) return;
  entry.refs--;
  if (entry.refs > 0) return;
  llamas.delete(key);
  const llama = await entry.promise.catch(() => undefined);
  await llama?.dispose();
}

/** Loads (or joins the load of) the model file with these options. */
export async function acquireModel(options: RuntimeOptions, logger: Logger): Promise<ModelHandle> {
  const key = JSON.stringify([options.modelPath, options.gpu, options.gpuLayers]);
  let entry = models.get(key);
  let loaded = false;
  if (entry === undefined) {
    // Before touching llama.cpp: a missing or non-GGUF file gets a message that says what to do.
    await checkModelFile(options.modelPath, options.modelUri);
    entry = models.get(key);
  }
  if (entry === undefined) {
    loaded = true;
    const { key: llamaKey, entry: llamaEntry } = acquireLlama(options, logger);
    const created: ModelEntry = { refs: 0, llamaKey, promise: Promise.resolve(undefined as unknown as LlamaModel) };
    created.promise = (async () => {
      const llama = await llamaEntry.promise;
      try {
        const model = await llama.loadModel({ modelPath: options.modelPath, gpuLayers: options.gpuLayers });
        counters.modelLoads++;
        counters.liveModels++;
        return model;
      } catch (err) {
        throw new LlmqError('ERR_MODEL_LOAD', `could not load model ${options.modelPath}: ${(err as Error).message}`, { cause: err });
      }
    })();
    void created.promise.catch(() => {
      // Failed loads are forgotten so a later attempt (after fixing the file) tries again.
      if (models.get(key) === created) models.delete(key);
      void releaseLlama(llamaKey);
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
      await releaseLlama(current.llamaKey);
    },
  };
}
