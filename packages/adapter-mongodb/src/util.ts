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

/** An AbortController that also aborts when `parent` does. */
export function childController(parent: AbortSignal): { controller: AbortController; dispose(): void } {
  const controller = new AbortController();
  const onAbort = () => controller.abort(parent.reason);
  if (parent.aborted) controller.abort(parent.reason);
  else parent.addEventListener('abort', onAbort, { once: true });
  return { controller, dispose: () => parent.removeEventListener('abort', onAbort) };
}

/** A loggable summary of an error: its message and code, never connection strings or payloads. */
export function errSummary(err: unknown): { message: string; code?: unknown; name?: string } {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    return code === undefined ? { name: err.name, message: err.message } : { name: err.name, message: err.message, code };
  }
  return { message: String(err) };
}
