#!/usr/bin/env node
import { collectDefaultMetrics } from 'prom-client';
import { loadConfig } from '@llmq/config';
import { onShutdownSignals } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { createLogger, exitOnStartupError, handleServiceArgs } from '@llmq/queue';
import { startMetricsServer } from '@llmq/worker';
import { startConnector } from './run.js';

async function main(): Promise<void> {
  handleServiceArgs({ name: 'llmq-connector', summary: 'The llmq connector: reads the configured sources (MongoDB change streams, Pulsar topics) into the queues.', packageJson: new URL('../package.json', import.meta.url) });
  const config = loadConfig();
  const logger = createLogger({ level: config.log_level, name: 'llmq-connector' });
  const platform = await createPlatform(config);
  collectDefaultMetrics({ prefix: 'llmq_connector_' });
  // Before any source is read: a port in use stops start-up with nothing in flight.
  const metricsServer = config.worker.metrics_port > 0 ? await startMetricsServer(config.worker.metrics_port) : undefined;
  const handle = await startConnector({ platform, logger });
  metricsServer?.ready();
  logger.info({ sources: platform.sources.map((s) => s.config.name) }, 'connector ready');
  const stop = (signal: string) => {
    logger.info({ signal }, 'connector shutting down');
    setTimeout(() => process.exit(1), 15_000).unref();
    void handle
      .close()
      .then(() => metricsServer?.close())
      .then(() => process.exit(0));
  };
  onShutdownSignals(logger, stop);
}

main().catch(exitOnStartupError('llmq-connector'));
