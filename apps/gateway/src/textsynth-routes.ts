import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import { LlmqError, errorCode, parseJobRequest, toErrorBody, zodToLlmqError, type JobRequest } from '@llmq/core';
import { validateForModel } from '@llmq/platform';
import { enqueueAndFollow } from './follow.js';
import type { FrontDoorOptions } from './openai-routes.js';

const params = {
  max_tokens: z.int().min(1).optional(),
  stream: z.boolean().optional(),
  stop: z.union([z.string(), z.array(z.string()).max(5)]).optional(),
  n: z.literal(1, 'only n=1 is supported').optional(),
  temperature: z.number().optional(),
  top_k: z.int().optional(),
  top_p: z.number().optional(),
  seed: z.int().optional(),
  presence_penalty: z.number().optional(),
  frequency_penalty: z.number().optional(),
  repetition_penalty: z.number().optional(),
  schema: z.record(z.string(), z.unknown()).optional(),
};
const completionSchema = z.strictObject({ prompt: z.string(), ...params });
const chatSchema = z.strictObject({ messages: z.array(z.string()).min(1), system: z.string().optional(), ...params });

/** ts_server's error body. */
function tsError(res: Response, err: unknown): void {
  const { status, body } = toErrorBody(err);
  if (status === 429 || status === 503) res.set('Retry-After', '5');
  res.status(status).json({ error: body.error.message, code: body.error.code });
}

/** TextSynth ts_server's completions and chat API in front of the queues (engine = llmq model name). */
export function textSynthRouter(o: FrontDoorOptions): Router {
  const router = Router();
  const waitMs = o.platform.config.gateway.wait_timeout_ms;

  const handle = (chat: boolean) => async (req: Request, res: Response) => {
    let request: JobRequest;
    let stream = false;
    try {
      const parsed = (chat ? chatSchema : completionSchema).safeParse(req.body ?? {});
      if (!parsed.success) throw zodToLlmqError(parsed.error);
      const b = parsed.data as z.infer<typeof chatSchema> & z.infer<typeof completionSchema>;
      stream = b.stream === true;
      const out: Record<string, unknown> = { model: req.params.engine };
      for (const k of ['max_tokens', 'stop', 'temperature', 'top_k', 'top_p', 'seed', 'presence_penalty', 'frequency_penalty'] as const) if (b[k] !== undefined) out[k] = b[k];
      if (b.repetition_penalty !== undefined) out.repeat_penalty = b.repetition_penalty;
      if (b.schema !== undefined) out.response_format = { type: 'json_schema', json_schema: { schema: b.schema } };
      // ts_server defaults max_tokens to 100.
      out.max_tokens ??= 100;
      if (chat) {
        out.messages = [
          ...(b.system !== undefined ? [{ role: 'system', content: b.system }] : []),
          ...b.messages.map((content, i) => ({ role: i % 2 === 0 ? 'user' : 'assistant', content })),
        ];
      } else out.prompt = b.prompt;
      request = parseJobRequest(out);
      validateForModel(o.platform, request);
    } catch (err) {
      if (errorCode(err) === 'ERR_MODEL_NOT_FOUND') return tsError(res, new LlmqError('ERR_MODEL_NOT_FOUND', `unknown engine "${req.params.engine}"`));
      return tsError(res, err);
    }
    const client = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) client.abort();
    });
    const start = () => {
      if (!res.headersSent) res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-cache' });
    };
    try {
      const { result } = await enqueueAndFollow({
        ...o,
        request,
        keyId: req.keyId,
        sourceType: 'textsynth',
        signal: client.signal,
        timeoutMs: waitMs,
        onToken: stream
          ? (text) => {
              start();
              res.write(`${JSON.stringify({ text, reached_end: false })}\n\n`);
            }
          : undefined,
      });
      const final = {
        reached_end: true,
        truncated_prompt: false,
        finish_reason: result.finish_reason === 'length' ? 'length' : 'stop',
        input_tokens: result.usage.prompt_tokens,
        output_tokens: result.usage.completion_tokens,
      };
      if (stream) {
        start();
        res.end(`${JSON.stringify({ text: '', ...final })}\n\n`);
      } else res.json({ text: result.text, ...final });
    } catch (err) {
      if (client.signal.aborted) return;
      if (res.headersSent) return void res.end(`${JSON.stringify({ error: toErrorBody(err).body.error.message })}\n\n`);
      tsError(res, err);
    }
  };
  router.post('/v1/engines/:engine/completions', (req, res) => void handle(false)(req, res));
  router.post('/v1/engines/:engine/chat', (req, res) => void handle(true)(req, res));
  return router;
}
