import { parseSeedWorkerArgs } from '@llmq/adapter-mongodb';
import { LlmqError, errorDetail, onShutdownSignals, type JobRequest } from '@llmq/core';
import { loadConfig, type ResolvedConfig } from '@llmq/config';
import { createPlatform, validateForModel, type Platform } from '@llmq/platform';
import { createLogger } from '@llmq/queue';
import { startConnector } from '@llmq/connector';
import { startWorker } from '@llmq/worker';

/**
 * Drop-in for the seed MongoDB worker script: same flags and env vars, and source + worker +
 * write-back sink in one process, on top of the normal config (Redis, models, templates).
 */
export function seedWorkerConfig(argv: readonly string[], env: Readonly<Record<string, string | undefined>>, base: ResolvedConfig): ResolvedConfig {
  const fragment = parseSeedWorkerArgs(argv, env);
  const model = base.models.find((m) => m.name === fragment.model);
  if (!model) {
    throw new LlmqError('ERR_CONFIG_INVALID', `mongo-worker: --model "${fragment.model}" is not declared in ${base.config_path ?? 'the config'} (declared: ${base.models.map((m) => m.name).join(', ')}); add it under models:`, { param: '--model' });
  }
  const options = { ...fragment.source.options } as Record<string, unknown>;
  if (typeof options.template === 'string') options.template = options.template.replace(/\.(template|jinja)$/, '');
  const connection = options.url_env !== undefined ? { url_env: options.url_env } : { url: options.url };
  return {
    ...base,
    models: base.models.map((m) => (m.name === model.name ? { ...m, concurrency: fragment.concurrency ?? m.concurrency, timeout_ms: fragment.timeout_ms ?? m.timeout_ms } : m)),
    worker: { ...base.worker, models: [model.name] },
    sources: [{ name: 'mongo-worker', type: 'mongodb', options, events: ['results'] }],
    sinks: [{ name: 'mongo-write-back', type: 'mongodb', sources: ['mongo-worker'], options: connection, events: ['results'] }],
  };
}

/** The seed flag each request field comes from, for a message that names what to change. */
const SEED_FLAGS: Record<string, string> = { template: '--template', min_tokens: '--min_len', max_tokens: '--max_len' };

/**
 * Checks, before any model loads, the request every document becomes (template, min and max
 * length) against the model: a template that is not there, or a length the model refuses, stops
 * start-up naming the flag, instead of marking each document invalid.
 */
export function checkSeedRequest(platform: Platform, config: ResolvedConfig): void {
  const options = (config.sources[0]?.options ?? {}) as { model?: string; template?: string; params?: Record<string, unknown> };
  const probe = { model: options.model, prompt: 'x', ...(options.template === undefined ? {} : { template: options.template }), ...options.params } as JobRequest;
  try {
    validateForModel(platform, probe);
  } catch (err) {
    if (!(err instanceof LlmqError)) throw err;
    const field = (err.param ?? '').split('.')[0] ?? '';
    const flag = SEED_FLAGS[field];
    throw new LlmqError('ERR_CONFIG_INVALID', `mongo-worker: ${flag ?? 'the request each document becomes'}: ${errorDetail(err.message).replace(/^[a-z_]+: /, '')}`, { param: flag ?? field });
  }
}

export async function runMongoWorker(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = process.env): Promise<void> {
  const base = loadConfig({ env });
  const config = seedWorkerConfig(argv, env, base);
  const logger = createLogger({ level: config.log_level, name: 'llmq-mongo-worker' });
  const platform = await createPlatform(config);
  checkSeedRequest(platform, config);
  const worker = await startWorker({ platform, logger, env });
  const connector = await startConnector({ platform, logger, env });
  logger.info({ model: config.worker.models[0], concurrency: config.models.find((m) => m.name === config.worker.models[0])?.concurrency }, 'mongo-worker running: source, worker and write-back in one process');
  const stop = (signal: string) => {
    logger.info({ signal }, 'mongo-worker shutting down');
    setTimeout(() => process.exit(1), config.worker.shutdown_grace_ms + 10_000).unref();
    void connector
      .close()
      .then(() => worker.close())
      .then(() => process.exit(0));
  };
  onShutdownSignals(logger, stop);
}
