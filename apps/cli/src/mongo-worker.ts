import { parseSeedWorkerArgs } from '@llmq/adapter-mongodb';
import { LlmqError, onShutdownSignals } from '@llmq/core';
import { loadConfig, type ResolvedConfig } from '@llmq/config';
import { createPlatform } from '@llmq/platform';
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

export async function runMongoWorker(argv: readonly string[], env: Readonly<Record<string, string | undefined>> = process.env): Promise<void> {
  const base = loadConfig({ env });
  const config = seedWorkerConfig(argv, env, base);
  const logger = createLogger({ level: config.log_level, name: 'llmq-mongo-worker' });
  const platform = await createPlatform(config);
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
