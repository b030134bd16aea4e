import { describe, expect, it } from 'vitest';
import { EchoBackend, LlmqError, echoPlan, errorCode, silentLogger, type GenerateInput } from './index.js';

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

  it('streams the same tokens and text as its plan on the at-once path, whatever the whitespace', async () => {
    const b = new EchoBackend('echo', { delay_ms: 0, tokens_per_second: 0 });
    const prompts = ['a b c', ' lead', 'trail ', '  two  gaps  ', 'tab\tand\nnewline', 'nb\u00a0sp and\u3000ideo', '', '   ', 'one', 'x  y z', 'long-word-one  second-long-word third'];
    for (const prompt of prompts) {
      const tokens: string[] = [];
      const out = await b.generate(input({ prompt }, undefined, tokens));
      const plan = echoPlan({ model: 'echo', prompt } as never);
      expect(tokens, JSON.stringify(prompt)).toEqual(plan.tokens);
      expect(out.text, JSON.stringify(prompt)).toBe(plan.tokens.join(''));
      const words = prompt.split(/\s+/).filter((w) => w.length > 0).length;
      expect(out.usage, JSON.stringify(prompt)).toEqual({ prompt_tokens: words, completion_tokens: Math.max(1, words) });
      expect(out.finish_reason).toBe('stop');
    }
    const chat = await b.generate(input({ messages: [{ role: 'system', content: 'be  brief' }, { role: 'user', content: ' hi  there ' }] }));
    expect(chat).toEqual({ text: 'hi there', finish_reason: 'stop', usage: { prompt_tokens: 4, completion_tokens: 2 } });
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
