import express, { type NextFunction, type Request, type Response } from 'express';
import { Gauge, register as defaultRegistry, type Registry } from 'prom-client';
import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import { LlmqError, errorCode, parseJobRequest, toErrorBody, type JobRequest, type JobView, type Logger } from '@llmq/core';
import { EventHub, Producer, createRedis, getMetrics, keys as makeKeys, waitReady, asRedisError, logRedisError, watchRedisConnection } from '@llmq/queue';
import { validateForModel, type Platform } from '@llmq/platform';
import { apiKeyAuth } from './auth.js';
import { streamJobEvents } from './sse.js';
import { openAiRouter } from './openai-routes.js';
import { textSynthRouter } from './textsynth-routes.js';

export interface GatewayOptions {
  platform: Platform;
  logger: Logger;
  registry?: Registry;
}

export interface Gateway {
  app: express.Express;
  producer: Producer;
  hub: EventHub;
  /** Extra routers (front doors) can be mounted before `finalize()`. */
  finalize(): void;
  close(): Promise<void>;
}

type Handler = (req: Request, res: Response) => Promise<void> | void;
const wrap = (fn: Handler) => (req: Request, res: Response, next: NextFunction) => {
  Promise.resolve(fn(req, res)).catch(next);
};

function param(req: Request, name: string): string {
  const v = req.params[name];
  return typeof v === 'string' ? v : '';
}

export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const { platform, logger } = options;
  const config = platform.config;
  const log = logger.child({ component: 'gateway' });
  const registry = options.registry ?? defaultRegistry;
  const metrics = getMetrics(registry);
  const keys = makeKeys(config.redis.prefix);
  const connection = createRedis(config.redis.url, 'producer');
  const subscriber = createRedis(config.redis.url, 'subscriber');
  watchRedisConnection(connection, log, 'connection');
  watchRedisConnection(subscriber, log, 'subscriber');
  await waitReady(connection).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'Redis not reachable yet; answering 503 until it is'));
  // Workers count the cancelled jobs they ran; a queued one is removed here, so it is counted here.
  const producer = new Producer(config, connection, log, { onQueuedCancel: (model) => metrics.cancelled.inc({ model }) });
  const hub = new EventHub(subscriber, keys, log);
  // A worker started serving a model: announce the watches again. Starts within 100 ms of each
  // other (a worker of several models, a rollout) share one announcement.
  let reannounce: NodeJS.Timeout | undefined;
  hub.onWorkerStart(() => {
    reannounce ??= setTimeout(() => {
      reannounce = undefined;
      producer.reannounceWatches().then(
        (count) => log.debug({ watches: count }, 'a worker started: watches announced again'),
        (err: unknown) => logRedisError(log, 'could not announce watches again to a worker that started', asRedisError(err) as Error),
      );
    }, 100).unref();
  });

  const queueJobs = new Gauge({
    name: 'llmq_queue_jobs',
    help: 'Jobs per model queue and state (read from Redis at scrape time)',
    labelNames: ['model', 'state'],
    registers: [registry],
  });
  const queueWorkers = new Gauge({
    name: 'llmq_queue_workers',
    help: 'Worker processes taking jobs of each model (read from Redis at scrape time); 0: its jobs wait',
    labelNames: ['model'],
    registers: [registry],
  });
  /** Reads queue depths, paused flags and worker counts from Redis right before a scrape. */
  const refreshQueueGauges = async () => {
    try {
      const [counts, workers] = await Promise.all([producer.counts(), producer.workerCounts()]);
      for (const c of counts) {
        for (const state of ['waiting', 'active', 'delayed', 'completed', 'failed'] as const) queueJobs.set({ model: c.model, state }, c[state]);
        metrics.queuePaused.set({ model: c.model }, c.paused ? 1 : 0);
        queueWorkers.set({ model: c.model }, workers[c.model] ?? 0);
      }
      queueJobs.set({ model: '_dlq', state: 'waiting' }, await producer.dlq.count());
    } catch {
      // Redis down: keep the last values rather than failing the scrape.
    }
  };

  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', true);
  const adminPath = config.gateway.admin.path;
  app.use(
    apiKeyAuth({
      keys: config.gateway.api_keys,
      publicPaths: config.gateway.public_paths,
      challengePaths: [adminPath],
    }),
  );
  const JSON_TYPES = ['application/json', 'application/*+json'];
  app.use(express.json({ limit: config.gateway.body_limit_bytes, type: JSON_TYPES }));
  // A body of another type is not read (a browser can send text/plain across sites without asking
  // first): say so, rather than report the fields it seems to lack.
  app.use('/v1', (req: Request, _res: Response, next: NextFunction) => {
    // A body of another declared type, or a body of some length with none declared (a chunked
    // empty body without a type, which some clients send with DELETE, passes).
    const type = req.headers['content-type'];
    const refused = type ? !req.is(JSON_TYPES) : Number(req.headers['content-length'] ?? 0) > 0;
    if (refused && req.method !== 'GET' && req.method !== 'HEAD') {
      next(new LlmqError('ERR_REQUEST_INVALID', `send the body as JSON with content-type: application/json (got ${type ? `"${type}"` : 'no content-type'})`, { param: 'content-type' }));
      return;
    }
    next();
  });

  const accept = (request: JobRequest, prefix = '') => {
    validateForModel(platform, request, prefix);
    return request;
  };

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  app.get(
    '/readyz',
    wrap(async (_req, res) => {
      try {
        await connection.ping();
        res.json({ status: 'ready', redis: 'ok' });
      } catch {
        const { status, body } = toErrorBody(new LlmqError('ERR_REDIS_UNAVAILABLE', 'Redis is unreachable'));
        res.status(status).set('Retry-After', '5').json(body);
      }
    }),
  );
  app.get(
    '/metrics',
    wrap(async (_req, res) => {
      await refreshQueueGauges();
      res.set('content-type', registry.contentType).send(await registry.metrics());
    }),
  );

  /** What a job's view warns of now: why a queued job waits, or the view's own warning (a lost lock). */
  const warningOf = (view: JobView): string | undefined => (view.status === 'queued' ? producer.waitWarning(view.model) : view.warning);
  /** The status of the job an Idempotency-Key replay names. */
  const replayedStatus = async (id: string): Promise<{ status: string; warning?: string | undefined }> => {
    const view = await producer.getJob(id, { lockWarning: true });
    if (view) return { status: view.status, warning: warningOf(view) };
    return { status: 'queued', warning: `the job of this Idempotency-Key is no longer stored (removed by retention), so GET /v1/jobs/${id} answers 404; send the request with another key to run it again` };
  };

  app.post(
    '/v1/jobs',
    wrap(async (req, res) => {
      const request = accept(parseJobRequest(req.body));
      const header = req.get('idempotency-key');
      if (header !== undefined && request.idempotency_key !== undefined && header !== request.idempotency_key) {
        throw new LlmqError('ERR_REQUEST_INVALID', 'the Idempotency-Key header and "idempotency_key" differ; send one', { param: 'idempotency_key' });
      }
      if (header !== undefined && (header.length === 0 || header.length > 255)) {
        throw new LlmqError('ERR_REQUEST_INVALID', 'Idempotency-Key must be 1 to 255 characters', { param: 'Idempotency-Key' });
      }
      const result = await producer.enqueue(request, { idempotencyKey: header ?? request.idempotency_key, keyId: req.keyId, source: { type: 'http' } });
      if (result.created) metrics.enqueued.inc({ model: request.model, source: 'http' });
      // A replay answers with the job's status now: it may have finished long ago.
      const { status, warning } = result.created ? { status: 'queued', warning: producer.waitWarning(request.model) } : await replayedStatus(result.id);
      res
        .status(result.created ? 202 : 200)
        .location(`/v1/jobs/${result.id}`)
        .json({ id: result.id, object: 'job', status, model: request.model, created: result.created, ...(warning ? { warning } : {}) });
    }),
  );

  app.post(
    '/v1/jobs/batch',
    wrap(async (req, res) => {
      const body = req.body as unknown;
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new LlmqError('ERR_REQUEST_INVALID', 'the body must be a JSON object { "jobs": [...] }');
      const extra = Object.keys(body).filter((k) => k !== 'jobs');
      if (extra.length > 0) throw new LlmqError('ERR_REQUEST_INVALID', `unknown field "${extra[0]}"`, { param: extra[0] });
      const jobs = (body as { jobs?: unknown }).jobs;
      if (!Array.isArray(jobs) || jobs.length === 0) throw new LlmqError('ERR_REQUEST_INVALID', '"jobs" must be a non-empty array', { param: 'jobs' });
      if (jobs.length > config.gateway.batch_limit) {
        throw new LlmqError('ERR_REQUEST_TOO_LARGE', `a batch holds at most ${config.gateway.batch_limit} jobs (got ${jobs.length}); split it`, { param: 'jobs' });
      }
      const items: ({ ok: true; request: JobRequest } | { ok: false; error: unknown })[] = jobs.map((raw, i) => {
        try {
          return { ok: true, request: accept(parseJobRequest(raw, `jobs[${i}]`), `jobs[${i}]`) };
        } catch (error) {
          return { ok: false, error };
        }
      });
      const valid = items.flatMap((it) => (it.ok ? [it.request] : []));
      const results = valid.length > 0 ? await producer.enqueueBatch(valid, { keyId: req.keyId, source: { type: 'http' } }) : [];
      // Replays (an idempotency_key seen before) answer with their job's status now, as a single POST does.
      const replays = new Map<string, Awaited<ReturnType<typeof replayedStatus>>>();
      await Promise.all(results.flatMap((r) => ('id' in r && !r.created ? [replayedStatus(r.id).then((s) => void replays.set(r.id, s))] : [])));
      let v = 0;
      let accepted = 0;
      const data = items.map((it, index) => {
        const outcome = it.ok ? results[v++]! : { error: it.error };
        if ('error' in outcome) return { index, ...toErrorBody(outcome.error).body, status: 'rejected' };
        accepted++;
        if (outcome.created && it.ok) metrics.enqueued.inc({ model: it.request.model, source: 'http' });
        const replay = outcome.created ? undefined : replays.get(outcome.id);
        return { index, id: outcome.id, status: replay?.status ?? 'queued', created: outcome.created, ...(replay?.warning ? { warning: replay.warning } : {}) };
      });
      if (accepted === 0) {
        const first = items.find((it) => !it.ok) as { error: unknown } | undefined;
        const { body: errorBody } = toErrorBody(first?.error);
        res.status(400).json({ ...errorBody, error: { ...errorBody.error, message: `no job in the batch was accepted; first error: ${errorBody.error.message}` }, object: 'list', accepted, rejected: data.length, data });
        return;
      }
      res.status(202).json({ object: 'list', accepted, rejected: data.length - accepted, data });
    }),
  );

  app.get(
    '/v1/jobs/:id',
    wrap(async (req, res) => {
      const id = param(req, 'id');
      const view = await producer.getJob(id, { lockWarning: true });
      if (!view) throw new LlmqError('ERR_JOB_NOT_FOUND', `job "${id}" not found`, { param: 'id' });
      const warning = warningOf(view);
      res.json(warning ? { ...view, warning } : view);
    }),
  );

  app.get(
    '/v1/jobs/:id/events',
    wrap(async (req, res) => {
      await streamJobEvents(req, res, param(req, 'id'), producer, hub);
    }),
  );

  app.delete(
    '/v1/jobs/:id',
    wrap(async (req, res) => {
      const id = param(req, 'id');
      const outcome = await producer.cancel(id);
      res.status(outcome.status === 'cancelled' ? 200 : 202).json({ id, object: 'job', status: outcome.status });
    }),
  );

  app.get(
    '/v1/queues',
    wrap(async (_req, res) => {
      const [counts, workers, dlq, unserved] = await Promise.all([
        producer.counts(),
        producer.workerCounts(),
        producer.dlq.count().catch((err: unknown) => Promise.reject(asRedisError(err))),
        producer.unservedReports(),
      ]);
      // `not_served`: a worker's report of why it could not start the model (null when none did).
      const data = counts.map((c) => ({ ...c, workers: workers[c.model] ?? 0, not_served: unserved.get(c.model) ?? null }));
      res.json({ object: 'list', data, dead_letter: { waiting: dlq } });
    }),
  );

  for (const action of ['pause', 'resume'] as const) {
    app.post(
      `/v1/queues/:model/${action}`,
      wrap(async (req, res) => {
        const model = producer.model(param(req, 'model')).name;
        try {
          await producer.queue(model)[action]();
        } catch (err) {
          throw asRedisError(err);
        }
        metrics.queuePaused.set({ model }, action === 'pause' ? 1 : 0);
        log.info({ model, action }, `queue ${action}d`);
        res.json({ model, paused: action === 'pause' });
      }),
    );
  }

  app.get(
    '/v1/dlq',
    wrap(async (req, res) => {
      const offset = Math.max(0, Number(req.query.offset ?? 0) || 0);
      const limit = Math.min(1000, Math.max(1, Number(req.query.limit ?? 100) || 100));
      const { total, entries } = await producer.listDlq(offset, limit);
      res.json({ object: 'list', total, data: entries.map(({ data, ...rest }) => ({ ...rest, request: data.request })) });
    }),
  );
  app.get(
    '/v1/dlq/:id',
    wrap(async (req, res) => {
      const entry = await producer.getDlq(param(req, 'id'));
      if (!entry) throw new LlmqError('ERR_DLQ_NOT_FOUND', `no dead-lettered job "${param(req, 'id')}"`, { param: 'id' });
      const { data, ...rest } = entry;
      res.json({ ...rest, request: data.request });
    }),
  );
  app.post(
    '/v1/dlq/:id/replay',
    wrap(async (req, res) => {
      const result = await producer.replayDlq(param(req, 'id'));
      res.status(202).json({ id: result.id, object: 'job', status: 'queued', replayed: true });
    }),
  );

  app.get('/v1/models', (_req, res) => {
    res.json({
      object: 'list',
      data: [...platform.models.values()].map((m) => ({ id: m.config.name, object: 'model', created: 0, owned_by: 'llmq', backend: m.definition.type, description: m.config.description ?? null })),
    });
  });

  app.use(openAiRouter({ platform, producer, hub, logger: log, metrics }));
  app.use(textSynthRouter({ platform, producer, hub, logger: log, metrics }));

  if (config.gateway.admin.enabled) {
    const serverAdapter = new ExpressAdapter();
    serverAdapter.setBasePath(adminPath);
    createBullBoard({
      queues: [...producer.modelNames().map((m) => new BullMQAdapter(producer.queue(m))), new BullMQAdapter(producer.dlq, { readOnlyMode: false, description: 'Dead-letter queue: jobs that failed their last attempt' })],
      serverAdapter,
      options: { uiConfig: { boardTitle: 'llmq' } },
    });
    app.use(adminPath, serverAdapter.getRouter());
  }

  /** What is wrong with a body express.json could not take: JSON that is not an object or array, or not JSON. */
  const parseFailure = (e: { message?: string; body?: unknown }): string => {
    if (typeof e.body === 'string') {
      try {
        const value: unknown = JSON.parse(e.body);
        return `the body must be a JSON object, not ${value === null ? 'null' : typeof value}`;
      } catch {
        // Not JSON at all: the parser's message says where.
      }
    }
    return `body is not valid JSON: ${e.message ?? ''}`.trim();
  };

  let finalized = false;
  const finalize = () => {
    if (finalized) return;
    finalized = true;
    app.use((req: Request, _res: Response, next: NextFunction) => {
      next(new LlmqError('ERR_NOT_FOUND', `no route for ${req.method} ${req.path}`));
    });
    app.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
      let error = err;
      const e = err as { type?: string; status?: number; message?: string };
      if (e && e.type === 'entity.too.large') error = new LlmqError('ERR_REQUEST_TOO_LARGE', `request body exceeds ${config.gateway.body_limit_bytes} bytes`);
      else if (e && e.type === 'entity.parse.failed') error = new LlmqError('ERR_REQUEST_INVALID', parseFailure(e as { message?: string; body?: unknown }));
      // body-parser's other 4xx: an unsupported charset or encoding, a compressed body that does not inflate.
      else if (e && !(err instanceof LlmqError) && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
        // A compressed body that does not inflate comes as zlib's error (Z_DATA_ERROR, …) with 400.
        const body = typeof e.type === 'string' || /^Z_/.test(String((err as { code?: unknown }).code ?? ''));
        error = new LlmqError('ERR_REQUEST_INVALID', body ? `the request body could not be read: ${e.message ?? 'bad request'}` : (e.message ?? 'bad request'));
      }
      error = asRedisError(error);
      const { status, body } = toErrorBody(error);
      if (errorCode(error) === 'ERR_REDIS_UNAVAILABLE') {
        // Expected while Redis is down, for every request: no stack, and repeats within 10 s counted in one line.
        logRedisError(log, 'requests answered 503: Redis is unavailable', error as Error, { code: 'ERR_REDIS_UNAVAILABLE' });
      } else if (status >= 500) log.error({ err, method: req.method, path: req.path }, 'request failed');
      if (status === 503 || status === 429) res.set('Retry-After', '5');
      if (res.headersSent) {
        res.end();
        return;
      }
      res.status(status).json(body);
    });
  };

  return {
    app,
    producer,
    hub,
    finalize,
    async close() {
      await producer.close();
      connection.disconnect();
      subscriber.disconnect();
    },
  };
}
