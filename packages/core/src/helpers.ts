import type { Server } from 'node:net';
import { LlmqError } from './errors.js';
import type { Logger } from './logger.js';

/** Resolves after `ms`, or at once when `signal` aborts; the timer never holds the process open. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener('abort', done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
  });
}

/** A loggable summary of an error: message and code, never payloads or credentials. */
export function errSummary(err: unknown): { message: string; code?: unknown; name?: string } {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return code === undefined ? { name: err.name, message: err.message } : { name: err.name, message: err.message, code };
  }
  return { message: String(err) };
}

/**
 * Listens on `port` of `host`. A port in use (or one this process may not bind) rejects with
 * ERR_CONFIG_INVALID naming `setting` and how to fix it, rather than a bare EADDRINUSE.
 */
export function listen(server: Server, o: { port: number; host: string; setting: string; fix: string }): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'is in use by another process' : err.code === 'EACCES' ? 'may not be bound by this process' : undefined;
      reject(why === undefined ? err : new LlmqError('ERR_CONFIG_INVALID', `${o.setting}: port ${o.port} on ${o.host} ${why}; ${o.fix}`, { param: o.setting, cause: err }));
    };
    server.once('error', onError);
    server.listen(o.port, o.host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

/**
 * Calls `stop` on the first SIGTERM or SIGINT. A second one exits at once, as an operator pressing
 * Ctrl-C twice means: nothing is lost, since unfinished work runs again (a job once its lock
 * expires, a source message that was not acknowledged).
 */
export function onShutdownSignals(logger: Logger, stop: (signal: NodeJS.Signals) => void): void {
  let signalled = false;
  const handle = (signal: NodeJS.Signals) => {
    if (signalled) {
      logger.warn({ signal }, 'second signal: exiting now without finishing; unfinished work runs again once its lock expires or its message is redelivered');
      process.exit(signal === 'SIGINT' ? 130 : 143);
    }
    signalled = true;
    stop(signal);
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}
