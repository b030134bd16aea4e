import { describe, expect, it } from 'vitest';
import { EchoBackend, LlmqError, errorCode, silentLogger, type GenerateInput } from './index.js';

const input = (request: Record<string, unknown>, signal = new AbortController().signal, tokens: string[] = []): GenerateInput => ({
  jobId: 'j',
  attempt: 1,
  model: 'echo',
  request: { model: 'echo', ...request } as never,
  signal,
  logger: silentLogger,
  onToken: (t) => tokens.push(t),
});

describe('echo backend', () => {
  it('answers the prompt words deterministically, cycling to max_tokens', async () => {
    const b = new EchoBackend('echo', { delay_ms: 0, tokens_per_second: 0 });
    const tokens: string[] = [];
    const out = await b.generate(input({ prompt: 'a b c', max_tokens: 5 }, undefined, tokens));
    expect(out).toEqual({ text: 'a b c a b', finish_reason: 'length', usage: { prompt_tokens: 3, completion_tokens: 5 } });
    expect(tokens.join('')).toBe(out.text);
    expect((await b.generate(input({ messages: [{ role: 'user', content: 'hello there' }] }))).text).toBe('hello there');
  });

  it('honours stop sequences', async () => {
    const b = new EchoBackend('echo', { delay_ms: 0, tokens_per_second: 0 });
    const out = await b.generate(input({ prompt: 'one two three four', stop: 'three' }));
    expect(out.text).toBe('one two ');
    expect(out.finish_reason).toBe('stop');
  });

  it('paces tokens and stops when aborted', async () => {
    const b = new EchoBackend('echo', { delay_ms: 0, tokens_per_second: 50 });
    const ctrl = new AbortController();
    const tokens: string[] = [];
    const started = Date.now();
    setTimeout(() => ctrl.abort(new LlmqError('ERR_JOB_CANCELLED', 'stop')), 120);
    const err = await b.generate(input({ prompt: 'x', max_tokens: 1000 }, ctrl.signal, tokens)).catch((e: unknown) => e);
    expect(errorCode(err)).toBe('ERR_JOB_CANCELLED');
    expect(Date.now() - started).toBeLessThan(500);
    expect(tokens.length).toBeGreaterThan(2);
    expect(tokens.length).toBeLessThan(20);
  });
});
