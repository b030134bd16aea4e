import { loadConfig } from '@llmq/config';
import { onShutdownSignals } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { createLogger } from '@llmq/queue';
import { serveGateway } from '@llmq/gateway';
import { startWorker } from '@llmq/worker';
import { collectDefaultMetrics } from 'prom-client';

/** Gateway and worker in one process: `npm start`. Both share one metrics registry (/metrics on the gateway). */
export async function runDev(options: { config?: string; port?: number }): Promise<void> {
  const config = loadConfig({ path: options.config });
  const logger = createLogger({ level: config.log_level, name: 'llmq' });
  const platform = await createPlatform(config);
  collectDefaultMetrics({ prefix: 'llmq_' });
  const served = await serveGateway({ platform, logger, port: options.port });
  const worker = await startWorker({ platform, logger });
  logger.info({ url: served.url, models: worker.workers.map((w) => w.name), skipped: worker.skipped.map((s) => s.model) }, 'llmq is up: gateway and worker in one process');
  const stop = (signal: string) => {
    const grace = config.worker.shutdown_grace_ms;
    logger.info({ signal, grace_ms: grace }, 'shutting down');
    setTimeout(() => process.exit(1), grace + 5_000).unref();
    void worker
      .close(grace)
      .then(() => served.close())
      .then(() => process.exit(0));
  };
  onShutdownSignals(logger, stop);
}
