import { hostname } from 'node:os';
import { errorCode, type Backend, type LlmqError, type Logger } from '@llmq/core';
import { servedModels } from '@llmq/config';
import { ControlListener, EventPublisher, ModelWorker, UnservedReporter, checkRedisPolicy, createRedis, watchRedisConnection, getMetrics, keys as makeKeys, type SinkBinding } from '@llmq/queue';
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
  /**
   * Models that could not start (e.g. a missing model file), with the reason. Live: a model whose
   * file appears later (see RETRIED) leaves it for `workers`.
   */
  skipped: { model: string; reason: string }[];
  close(graceMs?: number): Promise<void>;
}

/** Models whose backend cannot be created for these reasons are skipped, so the rest still serve. */
const SKIPPABLE = new Set(['ERR_MODEL_FILE_MISSING', 'ERR_MODEL_LOAD', 'ERR_DEPENDENCY_MISSING', 'ERR_CONFIG_INVALID']);
/** Skipped models tried again every RETRY_MS: their file may yet appear or become whole. */
const RETRIED = new Set(['ERR_MODEL_FILE_MISSING', 'ERR_MODEL_LOAD']);
const RETRY_MS = 5_000;
/** What the reason of a skipped model that is not tried (again) ends with, for the operator and for clients. */
const NOT_RETRIED = ' (not tried again: restart the worker once it is fixed)';
/** Tries of a file that exists but does not load before the worker stops trying. */
const LOAD_TRIES = 3;

/**
 * Whether a skipped model's retry stops after this failure (counting it in `entry`). A missing file
 * is tried for as long as the worker runs. A file that exists but does not load is tried
 * LOAD_TRIES times as it is: a copy still writing it changes its size or time (the error's
 * `details`) between tries, which starts the count again. Other reasons stop at once.
 */
export function giveUpRetry(entry: { loadFailures: number; file: string }, code: string | undefined, details: unknown): boolean {
  if (!code || !RETRIED.has(code)) return true;
  if (code !== 'ERR_MODEL_LOAD') return false;
  const file = JSON.stringify(details ?? null);
  if (file !== entry.file) entry.loadFailures = 0;
  entry.file = file;
  return ++entry.loadFailures >= LOAD_TRIES;
}

function remove<T>(list: T[], item: T): void {
  const at = list.indexOf(item);
  if (at !== -1) list.splice(at, 1);
}

/** Starts BullMQ workers for the served models, sharing one Redis connection set per process. */
export async function startWorker(options: StartWorkerOptions): Promise<WorkerHandle> {
  const { platform, logger } = options;
  const config = platform.config;
  const workerId = `${hostname()}:${process.pid}`;
  const log = logger.child({ component: 'worker', workerId });
  const keys = makeKeys(config.redis.prefix);
  const connection = createRedis(config.redis.url, 'worker');
  const subscriber = createRedis(config.redis.url, 'subscriber');
  watchRedisConnection(connection, log, 'connection');
  watchRedisConnection(subscriber, log, 'subscriber');
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
  const serve = (name: string, backend: Backend) => {
    const model = platform.models.get(name)!;
    backends.push(backend);
    workers.push(new ModelWorker({ config, model: model.config, backend, connection, publisher, control, metrics, logger: log, keys, workerId, sinks, backendFor, backendType: model.definition.type }));
    log.info({ model: name, backend: model.definition.type, concurrency: model.config.concurrency }, 'serving model');
    // Gateways repeat the watches they hold: a client that began following a job of this model
    // before it was served here gets the job's status and tokens now, not at its next repeat
    // (every 2 s for a synchronous request, 15 s for an event stream).
    connection.publish(keys.workersChannel, workerId).catch((err: unknown) => log.warn({ err }, 'could not announce the model served: streams opened before get its tokens only at their next watch (up to 15 s)'));
  };
  const notServed = (model: string, code: string | undefined, reason: string, outlook: string) =>
    log.error({ model, code }, `model "${model}" is not served: ${reason}${outlook}`);
  for (const name of options.models ?? servedModels(config)) {
    let backend: Backend;
    try {
      backend = await createBackend(platform, name, ctx);
    } catch (err) {
      const code = errorCode(err);
      if (code && SKIPPABLE.has(code)) {
        // Kept as the reason clients are told: one that is not tried again says what ends it.
        const retried = RETRIED.has(code);
        const reason = retried ? (err as Error).message : `${(err as Error).message}${NOT_RETRIED}`;
        notServed(name, code, reason, retried ? ` (trying again every ${RETRY_MS / 1000} s)` : '');
        skipped.push({ model: name, reason });
        continue;
      }
      throw err;
    }
    serve(name, backend);
  }
  // The API tells clients of a model no worker serves why, instead of leaving their jobs waiting.
  const reporter = new UnservedReporter(connection, keys, workerId, log);
  await reporter.start(skipped, workers.map((w) => w.name));

  // A model file that is not there yet (`llmq model pull` running in another terminal, a volume
  // still filling) or not whole yet (a copy in progress) is tried again, so the model is served
  // once it can be loaded, without a restart. Other reasons (a missing dependency, a bad option)
  // need one.
  // Each holds its entry of `skipped`, whose reason it keeps current and which it leaves once served.
  const retrying = skipped.filter((s) => RETRIED.has(errorCode(s.reason) ?? '')).map((skip) => ({ skip, loadFailures: 0, file: '' }));
  let retryTimer: NodeJS.Timeout | undefined;
  let retryRun: Promise<void> | undefined;
  let stopping = false;
  // Cut short at close(): a load the retry started must not hold up the shutdown.
  const retryAbort = new AbortController();
  const retryCtx = adapterContext(platform, log, AbortSignal.any([shutdown.signal, retryAbort.signal]), options.env);
  const retry = async () => {
    for (const entry of [...retrying]) {
      if (stopping) return;
      const { skip } = entry;
      let backend: Backend;
      try {
        backend = await createBackend(platform, skip.model, retryCtx);
      } catch (err) {
        if (stopping) return;
        const code = errorCode(err);
        const message = err instanceof Error ? err.message : String(err);
        const giveUp = giveUpRetry(entry, code, (err as LlmqError).details);
        const reason = giveUp ? `${message}${NOT_RETRIED}` : message;
        if (reason !== skip.reason) {
          skip.reason = reason;
          // Reported before it is logged, so whoever reads the log finds the API saying the same.
          await reporter.set(skip.model, reason);
          notServed(skip.model, code, reason, '');
        }
        if (giveUp) remove(retrying, entry);
        continue;
      }
      if (stopping) {
        await backend.close();
        return;
      }
      remove(retrying, entry);
      remove(skipped, skip);
      serve(skip.model, backend);
      await reporter.served(skip.model);
    }
  };
  const scheduleRetry = () => {
    if (stopping || retrying.length === 0) return;
    retryTimer = setTimeout(() => {
      retryRun = retry()
        .catch((err: unknown) => log.error({ err }, 'trying skipped models again failed'))
        .finally(scheduleRetry);
    }, RETRY_MS);
    retryTimer.unref();
  };
  scheduleRetry();
  let closed: Promise<void> | undefined;
  return {
    workerId,
    workers,
    skipped,
    close(graceMs = config.worker.shutdown_grace_ms) {
      closed ??= (async () => {
        // No model joins `workers` once this is set (see retry), so the list closed below is whole.
        stopping = true;
        clearTimeout(retryTimer);
        retryAbort.abort();
        await Promise.all([...workers.map((w) => w.close(graceMs)), reporter.close(), retryRun]);
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
