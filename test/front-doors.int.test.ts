import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from './helpers/stack.js';

describe('OpenAI and TextSynth front doors', () => {
  let stack: Stack;
  let openai: OpenAI;
  beforeAll(async () => {
    stack = await startStack({
      config: {
        models: [
          { name: 'echo', backend: 'echo', concurrency: 8 },
          { name: 'echo-slow', backend: 'echo', concurrency: 2, options: { tokens_per_second: 20 } },
        ],
      },
    });
    openai = new OpenAI({ baseURL: `${stack.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  afterAll(async () => {
    await stack?.close();
  });

  it('says what stop may be when it is wrong, and takes stop: null', async () => {
    for (const stop of [5, Array.from({ length: 17 }, (_, i) => `s${i}`)]) {
      const r = await stack.http('POST', '/v1/completions', { model: 'echo', prompt: 'a b', stop });
      expect(r.status).toBe(400);
      expect(r.body.error.message).toMatch(/^stop: must be a string or an array of at most 16 strings/);
    }
    const ok = await stack.http('POST', '/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'a b' }], stop: null });
    expect(ok.status).toBe(200);
  });

  it('says which prompts /v1/completions takes', async () => {
    for (const [prompt, message] of [
      [[1, 2, 3], 'prompt: must be a string (or an array of one string); token-id prompts are not supported'],
      [42, 'prompt: must be a string (or an array of one string); token-id prompts are not supported'],
      [['a', 'b'], 'prompt: only one prompt per request is supported'],
    ] as const) {
      const r = await stack.http('POST', '/v1/completions', { model: 'echo', prompt, max_tokens: 2 });
      expect(r.status).toBe(400);
      expect(r.body.error).toMatchObject({ param: 'prompt', message });
    }
    expect((await stack.http('POST', '/v1/completions', { model: 'echo', prompt: ['a'], max_tokens: 2 })).status).toBe(200);
    const suffix = await stack.http('POST', '/v1/completions', { model: 'echo', prompt: 'a', suffix: 'z' });
    expect(suffix.body.error).toMatchObject({ param: 'suffix', message: 'suffix: suffix is not supported' });
  });

  it('serves chat completions to the official SDK, non-streaming', async () => {
    const r = await openai.chat.completions.create({ model: 'echo', messages: [{ role: 'system', content: 'be nice' }, { role: 'user', content: 'hello there world' }] });
    expect(r.object).toBe('chat.completion');
    expect(r.choices[0]!.message).toMatchObject({ role: 'assistant', content: 'hello there world' });
    expect(r.choices[0]!.finish_reason).toBe('stop');
    expect(r.usage).toEqual({ prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
    const job = await stack.http('GET', `/v1/jobs/${r.id.replace(/^chatcmpl-/, '')}`);
    expect(job.body.source).toEqual({ type: 'openai' });
  });

  it('streams chat chunks ending in [DONE], with usage when asked', async () => {
    const stream = await openai.chat.completions.create({ model: 'echo-slow', messages: [{ role: 'user', content: 'a b c' }], max_tokens: 6, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: unknown;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices[0];
      if (choice?.delta?.content) text += choice.delta.content;
      if (choice?.finish_reason) finish = choice.finish_reason;
    }
    expect(text).toBe('a b c a b c');
    expect(finish).toBe('length');
    expect(chunks).toBeGreaterThanOrEqual(6);
    expect(usage).toEqual({ prompt_tokens: 3, completion_tokens: 6, total_tokens: 9 });
  });

  it('serves legacy completions, streaming and not, and lists models', async () => {
    const r = await openai.completions.create({ model: 'echo', prompt: 'one two', max_tokens: 3 });
    expect(r.choices[0]!.text).toBe('one two one');
    expect(r.choices[0]!.finish_reason).toBe('length');
    let text = '';
    for await (const c of await openai.completions.create({ model: 'echo', prompt: 'x y', stream: true })) text += c.choices[0]?.text ?? '';
    expect(text).toBe('x y');
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['echo', 'echo-slow']);
  });

  it('answers OpenAI-shaped errors the SDK understands', async () => {
    const missing = await openai.chat.completions.create({ model: 'nope', messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(OpenAI.NotFoundError);
    const bad = await openai.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'x' }], n: 2 }).catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as InstanceType<typeof OpenAI.BadRequestError>).param).toBe('n');
    const tools = await openai.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'f' } }] }).catch((e: unknown) => e);
    expect(tools).toBeInstanceOf(OpenAI.BadRequestError);
  });

  it('takes what clients and frameworks send by default (no tools, no biases, history as returned) and refuses what asks for more', async () => {
    // The assistant message exactly as the API returned it, sent back as history.
    const first = await openai.chat.completions.create({ model: 'echo', messages: [{ role: 'user', content: 'first turn' }] });
    const r = await openai.chat.completions.create({
      model: 'echo',
      messages: [{ role: 'user', content: 'first turn' }, first.choices[0]!.message, { role: 'assistant', content: null }, { role: 'user', content: 'second turn' }],
      tools: [],
      tool_choice: 'none',
      parallel_tool_calls: false,
      logit_bias: {},
      store: false,
      seed: -1,
    });
    expect(r.choices[0]!.message.content).toBe('second turn');
    for (const [body, param, message] of [
      [{ tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools', /tools \(function calling\) are not supported/],
      [{ tool_choice: 'auto' }, 'tool_choice', /tool_choice may only be "none"/],
      [{ logit_bias: { '50256': -100 } }, 'logit_bias', /logit_bias is not supported/],
      [{ messages: [{ role: 'user', content: null }] }, 'messages[0].content', /null only in an assistant message/],
      [{ messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }, { role: 'user', content: 'x' }] }, 'messages[0].tool_calls', /tool calls are not supported/],
    ] as const) {
      const bad = await stack.http('POST', '/v1/chat/completions', { model: 'echo', messages: [{ role: 'user', content: 'x' }], ...body });
      expect(bad.status, JSON.stringify(body)).toBe(400);
      expect(bad.body.error.param).toBe(param);
      expect(bad.body.error.message).toMatch(message);
    }
  });

  it('cancels the job when a streaming client disconnects', async () => {
    const ctrl = new AbortController();
    const res = await fetch(`${stack.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'echo-slow', messages: [{ role: 'user', content: 'go' }], max_tokens: 500, stream: true }),
      signal: ctrl.signal,
    });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    const id = /"id":"chatcmpl-([^"]+)"/.exec(first)![1]!;
    ctrl.abort();
    const job = await stack.waitFor(id, ['cancelled'], 10_000);
    expect(job.status).toBe('cancelled');
  });

  it('speaks ts_server completions and chat, streaming as \\n\\n-separated JSON', async () => {
    const r = await stack.http('POST', '/v1/engines/echo/completions', { prompt: 'the cat sat', max_tokens: 2 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ text: 'the cat', reached_end: true, finish_reason: 'length', input_tokens: 3, output_tokens: 2 });
    const chat = await stack.http('POST', '/v1/engines/echo/chat', { messages: ['hi there', 'hello', 'how are you'], system: 'sys', max_tokens: 3 });
    expect(chat.body.text).toBe('how are you');
    const res = await fetch(`${stack.url}/v1/engines/echo-slow/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'p q', max_tokens: 4, stream: true }) });
    const raw = await res.text();
    const parts = raw.split('\n\n').filter(Boolean).map((p) => JSON.parse(p));
    expect(parts.length).toBe(5);
    expect(parts.slice(0, -1).every((p) => p.reached_end === false)).toBe(true);
    expect(parts.map((p) => p.text).join('')).toBe('p q p q');
    expect(parts.at(-1)).toMatchObject({ reached_end: true, output_tokens: 4 });
    const unknown = await stack.http('POST', '/v1/engines/nope/completions', { prompt: 'x' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error).toMatch(/unknown engine "nope"/);
  });
});
