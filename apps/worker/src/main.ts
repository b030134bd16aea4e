#!/usr/bin/env node
import { collectDefaultMetrics } from 'prom-client';
import { loadConfig } from '@llmq/config';
import { onShutdownSignals } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { createLogger, exitOnStartupError, handleServiceArgs } from '@llmq/queue';
import { startMetricsServer } from './metrics-server.js';
import { startWorker } from './run.js';

async function main(): Promise<void> {
  handleServiceArgs({ name: 'llmq-worker', summary: 'An llmq worker: runs the jobs of its models (LLMQ_WORKER_MODELS, default all) on their backends.', packageJson: new URL('../package.json', import.meta.url) });
  const config = loadConfig();
  const logger = createLogger({ level: config.log_level, name: 'llmq-worker' });
  const platform = await createPlatform(config);
  collectDefaultMetrics({ prefix: 'llmq_worker_' });
  // Before any job is taken: a port in use stops start-up with nothing in flight.
  const metricsServer = config.worker.metrics_port > 0 ? await startMetricsServer(config.worker.metrics_port) : undefined;
  const handle = await startWorker({ platform, logger });
  // A worker that serves no model (every one skipped, see startWorker) is up but of no use: its
  // health check says so, with the reasons, until a model's file appears and it serves that.
  metricsServer?.ready(() => (handle.workers.length === 0 ? { status: 'serving_no_model', not_served: handle.skipped } : undefined));
  if (handle.workers.length === 0) {
    logger.error({ not_served: handle.skipped.map((s) => s.model), metrics_port: config.worker.metrics_port || null }, 'worker up but serving no model: /healthz answers 503 until it does');
  } else logger.info({ models: handle.workers.map((w) => w.name), metrics_port: config.worker.metrics_port || null }, 'worker ready');
  const stop = (signal: string) => {
    const grace = config.worker.shutdown_grace_ms;
    logger.info({ signal, grace_ms: grace }, 'shutting down: no new jobs, letting in-flight jobs finish');
    // Our own deadline: exit even if Redis is unreachable and close() cannot complete.
    setTimeout(() => {
      logger.error('shutdown deadline passed; exiting');
      process.exit(1);
    }, grace + 5_000).unref();
    void handle
      .close(grace)
      .then(() => metricsServer?.close())
      .then(() => {
        logger.info('worker stopped');
        process.exit(0);
      });
  };
  onShutdownSignals(logger, stop);
}

main().catch(exitOnStartupError('llmq-worker'));
