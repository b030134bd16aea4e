#!/usr/bin/env node
import { Command } from 'commander';
import { runDev } from './dev.js';

const program = new Command();
program.name('llmq').description('A job queue for LLM work on Redis').showHelpAfterError();

program
  .command('dev')
  .description('run the gateway and a worker in one process (what `npm start` runs)')
  .option('-c, --config <path>', 'config file (default: $LLMQ_CONFIG or config/default.yaml)')
  .option('-p, --port <port>', 'gateway port (default: $PORT or 8080)', (v) => Number(v))
  .action(async (opts: { config?: string; port?: number }) => runDev(opts));

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(`llmq: ${(err as Error).message}`);
  process.exit(1);
});
