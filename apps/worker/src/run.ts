import { hostname } from 'node:os';
import { errorCode, type Backend, type Logger } from '@llmq/core';
import { servedModels } from '@llmq/config';
import { ControlListener, EventPublisher, ModelWorker, UnservedReporter, checkRedisPolicy, createRedis, getMetrics, keys as makeKeys, type SinkBinding } from '@llmq/queue';
import { adapterContext, createBackend, createSinks, type Platform } from '@llmq/platform';
import type { Registry } from 'prom-client';

export interface StartWorkerOptions {
  platform: Platform;
  logger: Logger;
  env?: Readonly<Record<string, string | undefined>>;
  /** prom-client registry for the worker's metrics (defaults to the global one). */
  registry?: Registry;
  /** Models to serve; defaults to `worker.models` or all. */
  models?: string[];
}

export interface WorkerHandle {
  workerId: string;
  workers: ModelWorker[];
  /** Models that could not start (e.g. a missing model file), with the reason. */
  skipped: { model: string; reason: string }[];
  close(graceMs?: number): Promise<void>;
}

/** Models whose backend cannot be created for these reasons are skipped, so the rest still serve. */
const SKIPPABLE = new Set(['ERR_MODEL_FILE_MISSING', 'ERR_MODEL_LOAD', 'ERR_DEPENDENCY_MISSING', 'ERR_CONFIG_INVALID']);

/** Starts BullMQ workers for the served models, sharing one Redis connection set per process. */
export async function startWorker(options: StartWorkerOptions): Promise<WorkerHandle> {
  const { platform, logger } = options;
  const config = platform.config;
  const workerId = `${hostname()}:${process.pid}`;
  const log = logger.child({ component: 'worker', workerId });
  const keys = makeKeys(config.redis.prefix);
  const connection = createRedis(config.redis.url, 'worker');
  const subscriber = createRedis(config.redis.url, 'subscriber');
  connection.on('error', (err) => log.warn({ err: err.message }, 'redis connection error'));
  subscriber.on('error', (err) => log.warn({ err: err.message }, 'redis subscriber error'));
  const warning = await checkRedisPolicy(connection);
  if (warning) log.warn(warning);
  const metrics = getMetrics(options.registry);
  const publisher = new EventPublisher(connection, keys, log, config.worker.stream_flush_ms);
  const control = new ControlListener(subscriber, { cancelChannel: keys.cancelChannel, watchChannel: keys.watchChannel, publish: (id, e) => publisher.publish(id, e), logger: log });
  await control.whenReady();
  const shutdown = new AbortController();
  const ctx = adapterContext(platform, log, shutdown.signal, options.env);
  const sinks: SinkBinding[] = await createSinks(platform, ctx);
  const backends: Backend[] = [];
  const extra = new Map<string, Promise<Backend>>();
  const backendFor = (name: string): Promise<Backend> => {
    let b = extra.get(name);
    if (!b) {
      b = createBackend(platform, name, ctx).then((backend) => {
        backends.push(backend);
        return backend;
      });
      b.catch(() => extra.delete(name));
      extra.set(name, b);
    }
    return b;
  };
  const workers: ModelWorker[] = [];
  const skipped: { model: string; reason: string }[] = [];
  for (const name of options.models ?? servedModels(config)) {
    const model = platform.models.get(name)!;
    let backend: Backend;
    try {
      backend = await createBackend(platform, name, ctx);
    } catch (err) {
      const code = errorCode(err);
      if (code && SKIPPABLE.has(code)) {
        const reason = (err as Error).message;
        log.error({ model: name, code }, `model "${name}" is not served: ${reason}`);
        skipped.push({ model: name, reason });
        continue;
      }
      throw err;
    }
    backends.push(backend);
    workers.push(new ModelWorker({ config, model: model.config, backend, connection, publisher, control, metrics, logger: log, keys, workerId, sinks, backendFor, backendType: model.definition.type }));
    log.info({ model: name, backend: model.definition.type, concurrency: model.config.concurrency }, 'serving model');
  }
  // The API tells clients of a model no worker serves why, instead of leaving their jobs waiting.
  const reporter = new UnservedReporter(connection, keys, workerId, log);
  await reporter.start(skipped, workers.map((w) => w.name));
  let closed: Promise<void> | undefined;
  return {
    workerId,
    workers,
    skipped,
    close(graceMs = config.worker.shutdown_grace_ms) {
      closed ??= (async () => {
        await Promise.all([...workers.map((w) => w.close(graceMs)), reporter.close()]);
        shutdown.abort();
        await Promise.race([publisher.flush(), new Promise((r) => setTimeout(r, 1000).unref())]);
        await Promise.allSettled([...backends.map((b) => b.close()), ...sinks.map((s) => s.sink.close())]);
        connection.disconnect();
        subscriber.disconnect();
      })();
      return closed;
    },
  };
}
