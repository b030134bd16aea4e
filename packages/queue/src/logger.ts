import { readFileSync } from 'node:fs';
import { pino, type Logger as PinoLogger } from 'pino';

export type { PinoLogger };

/** The process logger: JSON lines on stdout; secrets and prompts are never logged at info. */
export function createLogger(options: { level?: string; name?: string } = {}): PinoLogger {
  return pino({
    level: options.level ?? 'info',
    name: options.name ?? 'llmq',
    redact: {
      paths: ['*.api_key', '*.apiKey', '*.authorization', 'req.headers.authorization', '*.password', '*.url_with_credentials'],
      censor: '[redacted]',
    },
    base: { pid: process.pid },
  });
}

/**
 * The end of an entry point that could not start: why, as one JSON line at `fatal` like every
 * other line it logs (a log pipeline parsing JSON would drop a plain-text one, and this is the
 * line that matters), with the error's code; then exit status 1.
 */
export function exitOnStartupError(name: string): (err: unknown) => never {
  return (err) => {
    const e: Error & { code?: unknown; param?: unknown } = err instanceof Error ? err : new Error(String(err));
    const code = typeof e.code === 'string' ? e.code : undefined;
    // An error without an llmq code is a defect, not a setup mistake: its stack says where.
    const fields = { code, param: typeof e.param === 'string' ? e.param : undefined, ...(code?.startsWith('ERR_') ? {} : { stack: e.stack }) };
    createLogger({ name }).fatal(fields, `could not start: ${e.message}`);
    process.exit(1);
  };
}

const SERVICE_ENV = 'LLMQ_CONFIG (default config/default.yaml), REDIS_URL, LLMQ_REDIS_PREFIX, PORT, LLMQ_API_KEYS, LLMQ_WORKER_MODELS, LLMQ_METRICS_PORT, LLMQ_LOG_LEVEL, LLMQ_PLUGINS';

/**
 * The command line of a service entry point, which takes no arguments: `--help` and `--version`
 * are answered and the process exits 0; anything else is a usage error (exit 2). Either way the
 * service does not start: `--help` must never connect to the default Redis and take jobs.
 */
export function handleServiceArgs(o: { name: string; summary: string; packageJson: URL }): void {
  const [first] = process.argv.slice(2);
  if (first === undefined) return;
  const usage =
    `Usage: ${o.name}\n\n${o.summary}\n\n` +
    `It takes no arguments. Configure it with a YAML file and environment variables:\n  ${SERVICE_ENV}\n` +
    'See README.md, "Configuration". For the command-line tool, run `npx llmq --help`.\n';
  if (first === '--help' || first === '-h') process.stdout.write(usage);
  else if (first === '--version' || first === '-V') process.stdout.write(`${(JSON.parse(readFileSync(o.packageJson, 'utf8')) as { version: string }).version}\n`);
  else {
    process.stderr.write(`${o.name}: unexpected argument "${first}"\n\n${usage}`);
    process.exit(2);
  }
  process.exit(0);
}
