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
