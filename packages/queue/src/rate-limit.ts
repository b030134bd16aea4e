import type { Redis } from 'ioredis';
import type { GenerationRequest } from '@llmq/core';

/**
 * Reserves requests and tokens in a fixed window shared by every worker of a model:
 * returns 0 when the call may go ahead (and counts it), else the milliseconds until the window
 * rolls over. The window comes from Redis' clock, so workers on different machines agree.
 */
const RESERVE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local id = math.floor(now / window)
local rkey = KEYS[1] .. ':' .. id .. ':r'
local tkey = KEYS[1] .. ':' .. id .. ':t'
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local wait = window - (now % window)
if rpm > 0 and tonumber(redis.call('GET', rkey) or '0') + 1 > rpm then return {wait, id} end
if tpm > 0 then
  local used = tonumber(redis.call('GET', tkey) or '0')
  if used > 0 and used + cost > tpm then return {wait, id} end
end
redis.call('INCR', rkey)
redis.call('PEXPIRE', rkey, window * 2)
redis.call('INCRBY', tkey, cost)
redis.call('PEXPIRE', tkey, window * 2)
return {0, id}
`;

export interface RateLimitConfig {
  rpm?: number | undefined;
  tpm?: number | undefined;
  /** Window length; limits are per window. @defaultValue 60000 */
  window_ms?: number | undefined;
}

/** Rough token estimate before the call: prompt characters / 4 plus the completion budget. */
export function estimateTokens(request: GenerationRequest): number {
  const chars = request.prompt?.length ?? (request.messages ?? []).reduce((n, m) => n + m.content.length, 0);
  return Math.ceil(chars / 4) + (request.max_tokens ?? 256);
}

export class RateLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly key: string,
    private readonly config: RateLimitConfig,
  ) {}

  get windowMs(): number {
    return this.config.window_ms ?? 60_000;
  }

  /** 0 = go (reserved in window `window`), else ms to wait. */
  async reserve(estimate: number): Promise<{ waitMs: number; window: number }> {
    const [wait, window] = (await this.redis.eval(RESERVE, 1, this.key, String(this.windowMs), String(this.config.rpm ?? 0), String(this.config.tpm ?? 0), String(estimate))) as [number, number];
    return { waitMs: Number(wait), window: Number(window) };
  }

  /** Replaces the estimate with the tokens actually used. */
  async correct(window: number, estimate: number, actual: number): Promise<void> {
    const delta = actual - estimate;
    if (delta === 0 || !this.config.tpm) return;
    await this.redis.incrby(`${this.key}:${window}:t`, delta);
  }
}
