import type { JobRequest, Logger, Source, SourceContext } from '@llmq/core';
import { Producer, createRedis, createSourceKv, getMetrics, keys as makeKeys, checkRedisPolicy, watchRedisConnection } from '@llmq/queue';
import { adapterContext, validateForModel, type Platform } from '@llmq/platform';
import type { Registry } from 'prom-client';

export interface ConnectorHandle {
  sources: Source[];
  close(): Promise<void>;
}

/**
 * Runs the configured sources: each gets an `enqueue` that resolves only once its jobs are
 * durable in Redis (sources acknowledge upstream after it), and a namespaced key/value store for
 * checkpoints and locks. The connection waits out Redis outages instead of failing, so a source
 * simply stalls (and does not acknowledge) while Redis is away.
 */
export async function startConnector(options: { platform: Platform; logger: Logger; env?: Readonly<Record<string, string | undefined>>; registry?: Registry; names?: string[] }): Promise<ConnectorHandle> {
  const { platform } = options;
  const config = platform.config;
  const log = options.logger.child({ component: 'connector' });
  const keys = makeKeys(config.redis.prefix);
  const connection = createRedis(config.redis.url, 'worker');
  watchRedisConnection(connection, log, 'connection');
  const warning = await checkRedisPolicy(connection);
  if (warning) log.warn(warning);
  const producer = new Producer(config, connection, log, { callTimeoutMs: 0 });
  const metrics = getMetrics(options.registry);
  const shutdown = new AbortController();
  const sources: Source[] = [];
  const selected = platform.sources.filter((s) => !options.names || options.names.includes(s.config.name));
  if (selected.length === 0) log.warn('no sources configured: add entries under `sources:` in the config');
  for (const s of selected) {
    const name = s.config.name;
    const slog = log.child({ source: name, type: s.definition.type });
    const ctx: SourceContext = {
      ...adapterContext(platform, slog, shutdown.signal, options.env),
      kv: createSourceKv(connection, keys, name),
      async enqueue(jobs) {
        for (const job of jobs) {
          job.source = { ...job.source, name: job.source.name ?? name };
          // Same checks as the gateway: unknown model or unsupported parameter is a non-retryable error.
          validateForModel(platform, job.request as JobRequest);
        }
        const results = await producer.enqueueMany(jobs);
        for (let i = 0; i < jobs.length; i++) if (results[i]?.created) metrics.enqueued.inc({ model: jobs[i]!.request.model, source: s.definition.type });
        return results;
      },
    };
    const source = await s.definition.create({ name, config: s.options }, ctx);
    await source.start();
    sources.push(source);
    slog.info('source started');
  }
  let closed: Promise<void> | undefined;
  return {
    sources,
    close() {
      closed ??= (async () => {
        shutdown.abort();
        await Promise.allSettled(sources.map((s) => s.close()));
        await producer.close();
        connection.disconnect();
      })();
      return closed;
    },
  };
}
