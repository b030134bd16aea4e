import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import { LlmqError, parseJobRequest, toErrorBody, zodToLlmqError, type JobRequest, type JobResult, type Logger } from '@llmq/core';
import { newJobId, type EventHub, type Metrics, type Producer } from '@llmq/queue';
import { validateForModel, type Platform } from '@llmq/platform';
import { enqueueAndFollow } from './follow.js';

const contentPart = z.object({ type: z.literal('text'), text: z.string() });
const chatMessage = z
  .object({
    role: z.enum(['system', 'developer', 'user', 'assistant']),
    // null: an assistant message as the API returns it with no text (clients send history back as they got it).
    content: z.union([z.string(), z.array(contentPart)]).nullable(),
    name: z.string().optional(),
    tool_calls: z.array(z.unknown()).max(0, 'tool calls are not supported').nullish(),
  })
  .refine((m) => m.content !== null || m.role === 'assistant', { path: ['content'], message: 'must be a string or an array of text parts (null only in an assistant message)' });

/** Fields every OpenAI client may send that llmq accepts or safely ignores. */
const common = {
  model: z.string().min(1),
  max_tokens: z.int().min(1).nullish(),
  temperature: z.number().nullish(),
  top_p: z.number().nullish(),
  seed: z.int().nullish(),
  // Checked by the job schema, whose message says what is allowed (a string or up to 16).
  stop: z.unknown().optional(),
  presence_penalty: z.number().nullish(),
  frequency_penalty: z.number().nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).nullish(),
  n: z.literal(1, 'only n=1 is supported').nullish(),
  user: z.string().nullish(),
  logprobs: z.literal(false, 'logprobs are not supported').nullish(),
  // What clients and frameworks send by default, harmless as sent: no tools, no biases. Anything
  // else asks for what llmq does not do, and says so.
  logit_bias: z
    .record(z.string(), z.number())
    .refine((bias) => Object.keys(bias).length === 0, 'logit_bias is not supported')
    .nullish(),
  // OpenAI's stored completions; llmq keeps every job anyway (GET /v1/jobs/:id).
  store: z.boolean().nullish(),
  // llama.cpp-server style extensions.
  top_k: z.int().nullish(),
  min_p: z.number().nullish(),
  repeat_penalty: z.number().nullish(),
  min_tokens: z.int().nullish(),
  // llmq extensions.
  priority: z.int().nullish(),
  timeout_ms: z.int().nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
};

const noTools = 'tools (function calling) are not supported';
const chatSchema = z.strictObject({
  ...common,
  messages: z.array(chatMessage).min(1),
  tools: z.array(z.unknown()).max(0, noTools).nullish(),
  tool_choice: z.literal('none', `${noTools}: tool_choice may only be "none"`).nullish(),
  parallel_tool_calls: z.boolean().nullish(),
  functions: z.array(z.unknown()).max(0, noTools).nullish(),
  function_call: z.literal('none', `${noTools}: function_call may only be "none"`).nullish(),
  max_completion_tokens: z.int().min(1).nullish(),
  response_format: z.unknown().optional(),
  template: z.string().optional(),
});
const completionSchema = z.strictObject({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1, 'only one prompt per request is supported')], {
    error: (issue) =>
      Array.isArray(issue.input) && issue.input.every((p) => typeof p === 'string')
        ? 'only one prompt per request is supported'
        : 'must be a string (or an array of one string); token-id prompts are not supported',
  }),
  echo: z.literal(false, 'echo is not supported').nullish(),
  best_of: z.literal(1, 'best_of is not supported').nullish(),
  suffix: z.null('suffix is not supported').optional(),
  response_format: z.unknown().optional(),
  template: z.string().optional(),
});

function strip<T extends Record<string, unknown>>(o: T): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined) out[k] = v;
  return out;
}

const PASS = ['max_tokens', 'temperature', 'top_p', 'seed', 'stop', 'presence_penalty', 'frequency_penalty', 'top_k', 'min_p', 'repeat_penalty', 'min_tokens', 'priority', 'timeout_ms', 'metadata', 'response_format', 'template'];

function toJobRequest(body: Record<string, unknown>, chat: boolean): JobRequest {
  const out: Record<string, unknown> = { model: body.model };
  for (const k of PASS) if (body[k] !== undefined) out[k] = body[k];
  // llama.cpp server's "random seed", which its clients send: the same as no seed.
  if (out.seed === -1) delete out.seed;
  if (chat) {
    if (body.max_completion_tokens !== undefined) out.max_tokens = body.max_completion_tokens;
    out.messages = (body.messages as z.infer<typeof chatMessage>[]).map((m) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: m.content === null ? '' : typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join(''),
    }));
  } else {
    out.prompt = Array.isArray(body.prompt) ? body.prompt[0] : body.prompt;
  }
  return parseJobRequest(out);
}

function openAiError(res: Response, err: unknown): void {
  const { status, body } = toErrorBody(err);
  if (status === 429 || status === 503) res.set('Retry-After', '5');
  res.status(status).json(body);
}

export interface FrontDoorOptions {
  platform: Platform;
  producer: Producer;
  hub: EventHub;
  logger: Logger;
  metrics: Metrics;
}

/** OpenAI's chat/completions API in front of the queues: each call is a job, waited for or streamed. */
export function openAiRouter(o: FrontDoorOptions): Router {
  const router = Router();
  const waitMs = o.platform.config.gateway.wait_timeout_ms;

  const handle = (chat: boolean) => async (req: Request, res: Response) => {
    let request: JobRequest;
    let body: Record<string, unknown>;
    try {
      const parsed = (chat ? chatSchema : completionSchema).safeParse(req.body ?? {});
      if (!parsed.success) throw zodToLlmqError(parsed.error);
      body = strip(parsed.data as Record<string, unknown>);
      request = toJobRequest(body, chat);
      validateForModel(o.platform, request);
    } catch (err) {
      return openAiError(res, err);
    }
    const created = Math.floor(Date.now() / 1000);
    const stream = body.stream === true;
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    const client = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) client.abort();
    });
    const jobId = newJobId();
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${jobId}`;
    let started = false;
    const object = chat ? 'chat.completion.chunk' : 'text_completion';
    const chunk = (delta: string | null, finish: string | null, usage?: JobResult['usage']) => {
      const choice = chat
        ? { index: 0, delta: delta === null ? {} : started ? { content: delta } : { role: 'assistant', content: delta }, finish_reason: finish, logprobs: null }
        : { index: 0, text: delta ?? '', finish_reason: finish, logprobs: null };
      started = true;
      return `data: ${JSON.stringify({ id, object, created, model: request.model, choices: usage ? [] : [choice], ...(usage ? { usage } : {}) })}\n\n`;
    };
    const startStream = () => {
      if (res.headersSent) return;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    };
    try {
      const { result } = await enqueueAndFollow({
        ...o,
        id: jobId,
        request,
        keyId: req.keyId,
        sourceType: 'openai',
        signal: client.signal,
        timeoutMs: waitMs,
        onToken: stream
          ? (text) => {
              startStream();
              res.write(chunk(text, null));
            }
          : undefined,
      });
      const finish = result.finish_reason === 'length' ? 'length' : 'stop';
      if (stream) {
        startStream();
        if (!started && chat) res.write(chunk('', null));
        res.write(chunk(null, finish));
        if (includeUsage) res.write(chunk(null, null, result.usage));
        res.end('data: [DONE]\n\n');
        return;
      }
      res.json({
        id,
        object: chat ? 'chat.completion' : 'text_completion',
        created,
        model: request.model,
        choices: [chat ? { index: 0, message: { role: 'assistant', content: result.text, refusal: null }, finish_reason: finish, logprobs: null } : { index: 0, text: result.text, finish_reason: finish, logprobs: null }],
        usage: result.usage,
        system_fingerprint: null,
      });
    } catch (err) {
      if (client.signal.aborted) return;
      if (res.headersSent) {
        // Mid-stream failure: OpenAI clients read an error object in the stream.
        res.end(`data: ${JSON.stringify(toErrorBody(err).body)}\n\n`);
        return;
      }
      openAiError(res, err);
    }
  };

  router.post('/v1/chat/completions', (req, res) => void handle(true)(req, res));
  router.post('/v1/completions', (req, res) => void handle(false)(req, res));
  return router;
}
