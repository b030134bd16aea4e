import { readSseEvents } from './sse-reader.js';

/** A small client of the gateway's REST API for the CLI. */
export interface ClientOptions {
  url: string;
  apiKey?: string | undefined;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly body: unknown,
  ) {
    const err = (body as { error?: { message?: string; code?: string } })?.error;
    super(err ? `${status} ${err.code}: ${err.message}` : `HTTP ${status}`);
  }
}

export class Client {
  constructor(private readonly o: ClientOptions) {}

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.o.apiKey ? { authorization: `Bearer ${this.o.apiKey}` } : {}), ...extra };
  }

  async call<T = any>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    let res: Response;
    try {
      res = await fetch(this.o.url.replace(/\/$/, '') + path, {
        method,
        headers: this.headers({ ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers }),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      throw new Error(`cannot reach the gateway at ${this.o.url} (${(err as Error).message}); start it with \`npm start\` or set --url / LLMQ_URL`);
    }
    const text = await res.text();
    const parsed: unknown = text ? JSON.parse(text) : null;
    if (!res.ok) throw new ApiError(res.status, parsed);
    return parsed as T;
  }

  /** Yields SSE events of a job until its final event. */
  async *events(id: string): AsyncGenerator<{ event: string; data: any }> {
    const res = await fetch(`${this.o.url.replace(/\/$/, '')}/v1/jobs/${encodeURIComponent(id)}/events`, { headers: this.headers({ accept: 'text/event-stream' }) });
    if (!res.ok || !res.body) throw new ApiError(res.status, await res.json().catch(() => null));
    yield* readSseEvents(res.body as unknown as AsyncIterable<Uint8Array>);
  }
}
