/** Anything with `get(name)`, such as fetch's `Headers`. */
export interface HeaderLookup {
  get(name: string): string | null | undefined;
}

const DURATION_PART = /(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)/y;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1, us: 0.001, µs: 0.001, ns: 0.000_001 };

/**
 * A Go-style duration as OpenAI sends it in `x-ratelimit-reset-*` (`1s`, `6m0s`, `20ms`,
 * `1h2m3.5s`) in milliseconds; a bare number counts as seconds. Undefined when unparsable.
 */
export function parseDurationMs(value: string): number | undefined {
  const text = value.trim();
  if (text === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  let total = 0;
  DURATION_PART.lastIndex = 0;
  while (DURATION_PART.lastIndex < text.length) {
    const match = DURATION_PART.exec(text);
    if (!match) return undefined;
    total += Number(match[1]) * (UNIT_MS[match[2] ?? ''] ?? Number.NaN);
  }
  return Number.isFinite(total) ? total : undefined;
}

function header(headers: HeaderLookup, name: string): string | undefined {
  const value = headers.get(name);
  return value === null || value === undefined || value.trim() === '' ? undefined : value.trim();
}

/**
 * How long a 429 asks us to wait, in whole milliseconds, from (in this order) `retry-after-ms`,
 * `Retry-After` (seconds or an HTTP date), or `x-ratelimit-reset-requests` /
 * `x-ratelimit-reset-tokens`. Of the two reset headers, the one whose `x-ratelimit-remaining-*`
 * is 0 is the limit that was hit; when neither says so, the longer wait is taken.
 * Undefined when the response says nothing usable.
 */
export function retryAfterMs(headers: HeaderLookup | undefined, now: number = Date.now()): number | undefined {
  if (!headers) return undefined;
  const clamp = (ms: number) => Math.max(0, Math.ceil(ms));

  const ms = header(headers, 'retry-after-ms');
  if (ms !== undefined && /^\d+(\.\d+)?$/.test(ms)) return clamp(Number(ms));

  const after = header(headers, 'retry-after');
  if (after !== undefined) {
    if (/^\d+(\.\d+)?$/.test(after)) return clamp(Number(after) * 1000);
    const date = Date.parse(after);
    if (!Number.isNaN(date)) return clamp(date - now);
  }

  const parse = (name: string) => {
    const value = header(headers, name);
    return value === undefined ? undefined : parseDurationMs(value);
  };
  const requests = parse('x-ratelimit-reset-requests');
  const tokens = parse('x-ratelimit-reset-tokens');
  const exhausted = (name: string) => header(headers, name) === '0';
  if (requests !== undefined && exhausted('x-ratelimit-remaining-requests') && !exhausted('x-ratelimit-remaining-tokens')) return clamp(requests);
  if (tokens !== undefined && exhausted('x-ratelimit-remaining-tokens') && !exhausted('x-ratelimit-remaining-requests')) return clamp(tokens);
  if (requests !== undefined || tokens !== undefined) return clamp(Math.max(requests ?? 0, tokens ?? 0));
  return undefined;
}
