import { z } from 'zod';
import type { BackendCapabilities, GenerationParam } from '@llmq/core';

const serverSchema = z.strictObject({
  /** Root URL of one ts_server, e.g. `http://10.0.0.5:8080` (no `/v1`). */
  url: z.url(),
  /**
   * Requests this server runs at once; more wait for a slot.
   * @defaultValue the top-level `max_concurrency` (unlimited when that is unset too)
   */
  max_concurrency: z.int().min(1).max(100_000).optional(),
});

export const textSynthConfigSchema = z
  .strictObject({
    /** One server: its root URL. Give `url` or `servers`, not both. */
    url: z.url().optional(),
    /** A cluster of servers serving the same engine. */
    servers: z.array(serverSchema).min(1).max(256).optional(),
    /**
     * Per-server concurrency cap for servers that set none.
     * @defaultValue unlimited
     */
    max_concurrency: z.int().min(1).max(100_000).optional(),
    /**
     * ts_server engine id, the `{engine}` in `/v1/engines/{engine}/completions`.
     * @defaultValue the llmq model name
     */
    engine: z.string().min(1).max(200).optional(),
    /** Name of the environment variable holding the API key; left out, no `Authorization` is sent. */
    api_key_env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
    /**
     * Stream answers (`\n\n`-separated JSON) so tokens reach `onToken` as they come.
     * @defaultValue true
     */
    stream: z.boolean().default(true),
    /**
     * Extra HTTP headers on every request.
     * @defaultValue {}
     */
    headers: z.record(z.string(), z.string()).default({}),
    /**
     * Path probed with GET by health checks. ts_server documents no health endpoint, so any HTTP
     * answer below 500 (a 404 included) counts as alive.
     * @defaultValue '/v1/engines'
     */
    health_check_path: z.string().startsWith('/').default('/v1/engines'),
    /**
     * Time between health checks of each server (unhealthy ones are re-checked on the same beat).
     * @defaultValue 10000
     */
    health_check_interval_ms: z.int().min(10).max(3_600_000).default(10_000),
    /**
     * Time limit of one health check.
     * @defaultValue 2000
     */
    health_check_timeout_ms: z.int().min(1).max(600_000).default(2000),
    /**
     * Other servers a request may be tried on, within one job attempt, after a connection error,
     * 5xx or cut (before any token was passed on).
     * @defaultValue 2
     */
    retry_other_server: z.int().min(0).max(100).default(2),
    /**
     * When `response_format` asks for JSON: further tries, each with another seed, while the
     * answer does not parse.
     * @defaultValue 2
     */
    json_retries: z.int().min(0).max(20).default(2),
  })
  .superRefine((value, ctx) => {
    if ((value.url === undefined) === (value.servers === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['servers'], message: 'give "url" (one server) or "servers" (a cluster), exactly one of them' });
    }
    const urls = (value.servers ?? []).map((s) => normaliseUrl(s.url));
    const dup = urls.find((u, i) => urls.indexOf(u) !== i);
    if (dup !== undefined) ctx.addIssue({ code: 'custom', path: ['servers'], message: `server ${dup} is listed twice` });
  });

export type TextSynthConfig = z.infer<typeof textSynthConfigSchema>;

export interface ResolvedServer {
  url: string;
  maxConcurrency: number;
}

export function normaliseUrl(url: string): string {
  return url.replace(/\/+$/, '');
}

/** The server list with defaults applied; `Infinity` means no cap. */
export function resolveServers(config: TextSynthConfig): ResolvedServer[] {
  const list = config.servers ?? (config.url === undefined ? [] : [{ url: config.url }]);
  return list.map((s) => ({ url: normaliseUrl(s.url), maxConcurrency: s.max_concurrency ?? config.max_concurrency ?? Number.POSITIVE_INFINITY }));
}

/** ts_server takes at most this many stop strings. */
export const MAX_STOP = 5;

export const TEXTSYNTH_PARAMS = [
  'max_tokens',
  'temperature',
  'top_k',
  'top_p',
  'seed',
  'stop',
  'repeat_penalty',
  'presence_penalty',
  'frequency_penalty',
  'response_format',
] as const satisfies readonly GenerationParam[];

export const textSynthCapabilities: BackendCapabilities = {
  params: TEXTSYNTH_PARAMS,
  chat: true,
  completion: true,
};
