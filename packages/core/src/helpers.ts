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
