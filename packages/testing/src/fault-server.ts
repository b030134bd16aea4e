import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { echoPlan, type GenerationRequest, type Message } from '@llmq/core';

/**
 * A real HTTP server on 127.0.0.1 that speaks enough of the OpenAI API and of TextSynth's
 * ts_server to drive llmq's backends, and fails on request.
 *
 * Generation requests take the next matching entry of a script (a FIFO queue of {@link Fault}s);
 * with the script empty they are answered normally. Normal answers echo the prompt's words
 * (the echo backend's {@link echoPlan}), so tests can predict them.
 */

/** The routes the server knows. */
export type FaultRoute =
  | 'openai.chat'
  | 'openai.completions'
  | 'openai.models'
  | 'textsynth.completions'
  | 'textsynth.chat'
  | 'textsynth.engines';

/** Which requests a scripted fault applies to: one route, every generation route, or any route. */
export type FaultTarget = FaultRoute | 'generate' | 'any';

interface FaultBase {
  /** Requests it applies to. @defaultValue 'generate' */
  on?: FaultTarget;
  /** How many matching requests it answers before it is used up. @defaultValue 1 */
  times?: number;
  /** Wait before the status line is sent. */
  delayMs?: number;
}

export type Fault = FaultBase &
  (
    | {
        /** Answer normally. */
        type: 'ok';
        /** Answer this text (streamed as its whitespace-separated words) instead of the echo. */
        text?: string;
        /** Wait between streamed chunks (a non-streamed answer waits as long in all). */
        tokenDelayMs?: number;
        /** Leave usage / token counts out of the answer. @defaultValue true (included) */
        usage?: boolean;
        /** Overrides the finish reason. */
        finishReason?: string;
      }
    | {
        /** 429 with `Retry-After` (and any other headers given). */
        type: 'rate_limit';
        /** `Retry-After` value; `null` sends none. @defaultValue '1' */
        retryAfter?: string | null;
        headers?: Record<string, string>;
      }
    | { /** 429 whose error code and type are `insufficient_quota`. */ type: 'quota' }
    | {
        /** Any error status with an error body in the route's dialect. */
        type: 'status';
        status: number;
        message?: string;
        code?: string | null;
        errorType?: string;
        headers?: Record<string, string>;
      }
    | { /** 400 with code `context_length_exceeded`. */ type: 'context_length' }
    | {
        /**
         * Start a streamed answer and break it after `afterChunks` chunks: `destroy` resets the
         * socket, `end` ends the response cleanly but without a finish (no finish_reason, no
         * `[DONE]`, no `reached_end`), `error` sends an error object in the stream and ends.
         * Non-streaming requests get the headers and part of the body, then the cut.
         */
        type: 'cut';
        afterChunks?: number;
        how?: 'destroy' | 'end' | 'error';
      }
    | { /** Never answer (until the client gives up or the server is killed). */ type: 'hang' }
    | { /** Reset the connection before any byte of the answer. */ type: 'reset' }
  );

export interface RecordedRequest {
  route: FaultRoute | 'unknown';
  method: string;
  path: string;
  /** Lower-cased header names. */
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body (undefined when there was none or it was not JSON). */
  body: unknown;
  /** What the server did with it: a fault type, `ok`, or `unauthorized`. */
  answered: Fault['type'] | 'unauthorized' | 'not_found';
  at: number;
}

export interface FaultServerOptions {
  /** Port to listen on (0: a free one). @defaultValue 0 */
  port?: number;
  /** When set, requests without `Authorization: Bearer <apiKey>` get 401. */
  apiKey?: string;
  /** Default wait per token for normal answers, streamed or not. @defaultValue 0 */
  tokenDelayMs?: number;
  /** Engine ids listed by `GET /v1/engines` and model ids by `GET /v1/models`. @defaultValue ['test'] */
  models?: string[];
}

export interface FaultServer {
  /** `http://127.0.0.1:<port>`; OpenAI clients want `${url}/v1`. */
  readonly url: string;
  readonly port: number;
  /** Appends faults to the script; each answers the next matching request(s). */
  script(...faults: Fault[]): void;
  /** Scripted faults not yet used up. */
  readonly pending: number;
  /** Every request received, in order (health checks included). */
  readonly requests: readonly RecordedRequest[];
  /** Requests received for a route or target group. */
  count(target?: FaultTarget): number;
  /** Generation requests being answered right now, and the most at once since the last reset. */
  readonly inFlight: number;
  readonly maxInFlight: number;
  /** Clears recorded requests and the in-flight high-water mark (not the script). */
  resetCounters(): void;
  /** Whether it is listening. */
  readonly alive: boolean;
  /** Stops listening and resets every open connection, like a crashed server. */
  kill(): Promise<void>;
  /** Listens again on the same port. */
  revive(): Promise<void>;
  /** Kills it for good. */
  close(): Promise<void>;
}

const GENERATE_ROUTES: ReadonlySet<FaultRoute> = new Set(['openai.chat', 'openai.completions', 'textsynth.completions', 'textsynth.chat']);

function targets(target: FaultTarget, route: FaultRoute): boolean {
  if (target === 'any') return true;
  if (target === 'generate') return GENERATE_ROUTES.has(route);
  return target === route;
}

function routeOf(method: string, path: string): { route: FaultRoute; engine?: string } | undefined {
  if (method === 'POST' && path === '/v1/chat/completions') return { route: 'openai.chat' };
  if (method === 'POST' && path === '/v1/completions') return { route: 'openai.completions' };
  if (method === 'GET' && path === '/v1/models') return { route: 'openai.models' };
  if (method === 'GET' && path === '/v1/engines') return { route: 'textsynth.engines' };
  const m = /^\/v1\/engines\/([^/]+)\/(completions|chat)$/.exec(path);
  if (method === 'POST' && m) {
    return { route: m[2] === 'chat' ? 'textsynth.chat' : 'textsynth.completions', engine: decodeURIComponent(m[1] ?? '') };
  }
  return undefined;
}

function sleep(ms: number): Promise<void> {
  return ms > 0 ? new Promise((resolve) => setTimeout(resolve, ms)) : Promise.resolve();
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The request in llmq's terms, so the echo plan can answer it. */
function toGenerationRequest(route: FaultRoute, body: Obj): GenerationRequest {
  const maxTokens = typeof body['max_tokens'] === 'number' ? body['max_tokens'] : undefined;
  const model = typeof body['model'] === 'string' ? body['model'] : 'test';
  const base = maxTokens === undefined ? { model } : { model, max_tokens: maxTokens };
  if (route === 'openai.chat') {
    const raw = Array.isArray(body['messages']) ? body['messages'] : [];
    const messages: Message[] = raw.filter(isObj).map((m) => ({
      role: m['role'] === 'system' || m['role'] === 'assistant' ? m['role'] : 'user',
      content: typeof m['content'] === 'string' ? m['content'] : '',
    }));
    return { ...base, messages };
  }
  if (route === 'textsynth.chat') {
    // ts_server chat: strings alternating user/assistant, the first a user turn.
    const raw = Array.isArray(body['messages']) ? body['messages'] : [];
    const messages: Message[] = raw.map((m, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content: String(m) }));
    return { ...base, messages };
  }
  return { ...base, prompt: typeof body['prompt'] === 'string' ? body['prompt'] : '' };
}

function wordCount(request: GenerationRequest): number {
  const text = request.prompt ?? (request.messages ?? []).map((m) => m.content).join(' ');
  return text.split(/\s+/).filter((w) => w.length > 0).length;
}

/** The answer a normal (or cut) response streams: its pieces, finish reason and token counts. */
function plan(route: FaultRoute, body: Obj, fault: Extract<Fault, { type: 'ok' }> | undefined) {
  const request = toGenerationRequest(route, body);
  if (fault?.text !== undefined) {
    const pieces = fault.text.split(/(?=\s)/).filter((p) => p.length > 0);
    return { pieces, finish: fault.finishReason ?? 'stop', promptTokens: wordCount(request) };
  }
  const { tokens, finish } = echoPlan(request);
  return { pieces: tokens, finish: fault?.finishReason ?? finish, promptTokens: wordCount(request) };
}

export async function startFaultServer(options: FaultServerOptions = {}): Promise<FaultServer> {
  const queue: (Fault & { left: number })[] = [];
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const models = options.models ?? ['test'];
  let inFlight = 0;
  let maxInFlight = 0;
  let alive = false;
  let port = options.port ?? 0;

  function take(route: FaultRoute): Fault | undefined {
    const index = queue.findIndex((f) => targets(f.on ?? 'generate', route));
    if (index < 0) return undefined;
    const fault = queue[index];
    if (!fault) return undefined;
    fault.left -= 1;
    if (fault.left <= 0) queue.splice(index, 1);
    return fault;
  }

  function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  /** An error body in the route's dialect: OpenAI's `{ error: {…} }` or ts_server's `{ status, error }`. */
  function sendError(res: ServerResponse, route: FaultRoute, status: number, message: string, code: string | null, type: string, headers: Record<string, string> = {}): void {
    if (route.startsWith('textsynth.')) {
      sendJson(res, status, { status, error: message, ...(code === null ? {} : { code }) }, headers);
    } else {
      sendJson(res, status, { error: { message, type, param: null, code } }, headers);
    }
  }

  async function answer(route: FaultRoute, engine: string | undefined, body: Obj, fault: Fault | undefined, req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (fault?.delayMs) await sleep(fault.delayMs);
    switch (fault?.type) {
      case 'rate_limit': {
        const retryAfter = fault.retryAfter === undefined ? '1' : fault.retryAfter;
        const headers = { ...(retryAfter === null ? {} : { 'retry-after': retryAfter }), ...fault.headers };
        return sendError(res, route, 429, 'Rate limit reached for requests', 'rate_limit_exceeded', 'requests', headers);
      }
      case 'quota':
        return sendError(res, route, 429, 'You exceeded your current quota, please check your plan and billing details.', 'insufficient_quota', 'insufficient_quota');
      case 'status':
        return sendError(res, route, fault.status, fault.message ?? `scripted status ${fault.status}`, fault.code === undefined ? null : fault.code, fault.errorType ?? (fault.status >= 500 ? 'server_error' : 'invalid_request_error'), fault.headers);
      case 'context_length':
        return sendError(res, route, 400, "This model's maximum context length is 16 tokens. However, your messages resulted in 99 tokens.", 'context_length_exceeded', 'invalid_request_error');
      case 'hang':
        return new Promise<void>((resolve) => req.socket.once('close', () => resolve()));
      case 'reset':
        req.socket.destroy();
        return;
      default:
        break;
    }
    const ok = fault?.type === 'ok' ? fault : undefined;
    const cut = fault?.type === 'cut' ? fault : undefined;
    const p = plan(route, body, ok);
    const stream = body['stream'] === true;
    const tokenDelay = ok?.tokenDelayMs ?? options.tokenDelayMs ?? 0;
    const withUsage = ok?.usage !== false;
    const completionTokens = p.pieces.length;
    const text = p.pieces.join('');
    const model = typeof body['model'] === 'string' ? body['model'] : (engine ?? 'test');
    const created = Math.floor(Date.now() / 1000);
    const id = `fault-${requests.length}`;

    if (!stream) {
      // A whole answer takes as long as streaming it would.
      await sleep(tokenDelay * p.pieces.length);
      if (res.destroyed) return;
      if (cut) {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write('{"id":');
        await sleep(20);
        if (cut.how === 'destroy' || cut.how === undefined) res.socket?.destroy();
        else res.end();
        return;
      }
      if (route.startsWith('textsynth.')) {
        return sendJson(res, 200, {
          text,
          reached_end: true,
          truncated_prompt: false,
          finish_reason: p.finish,
          ...(withUsage ? { input_tokens: p.promptTokens, output_tokens: completionTokens } : {}),
        });
      }
      const usage = withUsage ? { usage: { prompt_tokens: p.promptTokens, completion_tokens: completionTokens, total_tokens: p.promptTokens + completionTokens } } : {};
      if (route === 'openai.chat') {
        return sendJson(res, 200, { id, object: 'chat.completion', created, model, choices: [{ index: 0, message: { role: 'assistant', content: text }, finish_reason: p.finish, logprobs: null }], ...usage });
      }
      return sendJson(res, 200, { id, object: 'text_completion', created, model, choices: [{ index: 0, text, finish_reason: p.finish, logprobs: null }], ...usage });
    }

    const ts = route.startsWith('textsynth.');
    res.writeHead(200, ts ? { 'content-type': 'application/json' } : { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    // ts_server streams JSON objects each followed by a blank line; OpenAI streams SSE events.
    const emit = (obj: unknown) => res.write(ts ? `${JSON.stringify(obj)}\n\n` : `data: ${JSON.stringify(obj)}\n\n`);
    const chunk = (piece: string, finish: string | null): unknown => {
      if (ts) return { text: piece, reached_end: false };
      if (route === 'openai.chat') return { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: { content: piece }, finish_reason: finish, logprobs: null }] };
      return { id, object: 'text_completion', created, model, choices: [{ index: 0, text: piece, finish_reason: finish, logprobs: null }] };
    };
    if (route === 'openai.chat') emit({ id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
    let sent = 0;
    for (const piece of p.pieces) {
      if (cut && sent >= (cut.afterChunks ?? 1)) break;
      if (tokenDelay > 0 && sent > 0) await sleep(tokenDelay);
      if (res.destroyed) return;
      emit(chunk(piece, null));
      sent++;
    }
    if (cut) {
      // Let the chunks already written reach the client before the break.
      await sleep(20);
      if (cut.how === 'error') {
        emit(ts ? { error: 'model crashed' } : { error: { message: 'model crashed', type: 'server_error', param: null, code: null } });
        res.end();
      } else if (cut.how === 'end') res.end();
      else res.socket?.destroy();
      return;
    }
    if (ts) {
      emit({ text: '', reached_end: true, truncated_prompt: false, finish_reason: p.finish, ...(withUsage ? { input_tokens: p.promptTokens, output_tokens: completionTokens } : {}) });
    } else {
      const last = route === 'openai.chat'
        ? { id, object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: {}, finish_reason: p.finish, logprobs: null }] }
        : { id, object: 'text_completion', created, model, choices: [{ index: 0, text: '', finish_reason: p.finish, logprobs: null }] };
      emit(last);
      const streamOptions = body['stream_options'];
      if (withUsage && isObj(streamOptions) && streamOptions['include_usage'] === true) {
        emit({ id, object: route === 'openai.chat' ? 'chat.completion.chunk' : 'text_completion', created, model, choices: [], usage: { prompt_tokens: p.promptTokens, completion_tokens: completionTokens, total_tokens: p.promptTokens + completionTokens } });
      }
      res.write('data: [DONE]\n\n');
    }
    res.end();
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const body = await readBody(req);
    const found = routeOf(method, path);
    const record: RecordedRequest = { route: found?.route ?? 'unknown', method, path, headers: { ...req.headers }, body, answered: 'ok', at: Date.now() };
    requests.push(record);
    if (!found) {
      record.answered = 'not_found';
      return sendJson(res, 404, { error: { message: `no route ${method} ${path}`, type: 'invalid_request_error', param: null, code: null } });
    }
    const { route, engine } = found;
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      record.answered = 'unauthorized';
      return sendError(res, route, 401, 'Incorrect API key provided.', 'invalid_api_key', 'invalid_request_error');
    }
    const fault = take(route);
    record.answered = fault?.type ?? 'ok';
    if (route === 'openai.models' || route === 'textsynth.engines') {
      if (fault && fault.type !== 'ok') return answer(route, engine, {}, fault, req, res);
      if (fault?.delayMs) await sleep(fault.delayMs);
      if (route === 'openai.models') return sendJson(res, 200, { object: 'list', data: models.map((m) => ({ id: m, object: 'model', created: 0, owned_by: 'llmq-fault-server' })) });
      return sendJson(res, 200, { engines: models.map((m) => ({ id: m })) });
    }
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    res.once('close', () => {
      inFlight--;
    });
    await answer(route, engine, isObj(body) ? body : {}, fault, req, res);
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500).end();
      else res.destroy();
    });
  });
  // A killed server takes its keep-alive connections with it.
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  async function listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        const address = server.address();
        if (typeof address === 'object' && address) port = address.port;
        alive = true;
        resolve();
      });
    });
  }

  async function kill(): Promise<void> {
    if (!alive) return;
    alive = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    sockets.clear();
    await closed;
  }

  await listen();

  return {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    script(...faults: Fault[]) {
      for (const fault of faults) queue.push({ ...fault, left: fault.times ?? 1 });
    },
    get pending() {
      return queue.length;
    },
    requests,
    count(target?: FaultTarget) {
      if (target === undefined) return requests.length;
      return requests.filter((r) => r.route !== 'unknown' && targets(target, r.route)).length;
    },
    get inFlight() {
      return inFlight;
    },
    get maxInFlight() {
      return maxInFlight;
    },
    resetCounters() {
      requests.length = 0;
      maxInFlight = inFlight;
    },
    get alive() {
      return alive;
    },
    kill,
    async revive() {
      if (!alive) await listen();
    },
    async close() {
      queue.length = 0;
      await kill();
    },
  };
}
