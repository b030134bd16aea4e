#!/usr/bin/env node
import { collectDefaultMetrics } from 'prom-client';
import { loadConfig } from '@llmq/config';
import { onShutdownSignals } from '@llmq/core';
import { createPlatform } from '@llmq/platform';
import { createLogger, exitOnStartupError, handleServiceArgs } from '@llmq/queue';
import { serveGateway } from './serve.js';

async function main(): Promise<void> {
  handleServiceArgs({ name: 'llmq-gateway', summary: 'The llmq HTTP gateway: REST, OpenAI- and TextSynth-compatible doors, Bull Board, /metrics.', packageJson: new URL('../package.json', import.meta.url) });
  const config = loadConfig();
  const logger = createLogger({ level: config.log_level, name: 'llmq-gateway' });
  const platform = await createPlatform(config);
  collectDefaultMetrics({ prefix: 'llmq_gateway_' });
  const served = await serveGateway({ platform, logger });
  const stop = (signal: string) => {
    logger.info({ signal }, 'gateway shutting down');
    setTimeout(() => process.exit(1), 10_000).unref();
    void served.close().then(() => process.exit(0));
  };
  onShutdownSignals(logger, stop);
}

main().catch(exitOnStartupError('llmq-gateway'));
