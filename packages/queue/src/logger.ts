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
