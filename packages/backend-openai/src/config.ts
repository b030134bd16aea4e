import { z } from 'zod';
import type { BackendCapabilities, GenerationParam } from '@llmq/core';

const envName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name');

/** Parameters every OpenAI-compatible server takes. */
export const OPENAI_PARAMS = [
  'max_tokens',
  'temperature',
  'top_p',
  'seed',
  'stop',
  'presence_penalty',
  'frequency_penalty',
  'response_format',
] as const satisfies readonly GenerationParam[];

/** Parameters outside OpenAI's API that servers such as vLLM and llama.cpp take; sent only when listed in `extra_params`. */
export const OPENAI_EXTRA_PARAMS = ['top_k', 'min_p', 'repeat_penalty', 'min_tokens'] as const satisfies readonly GenerationParam[];
export type OpenAiExtraParam = (typeof OPENAI_EXTRA_PARAMS)[number];

export const openAiConfigSchema = z.strictObject({
  /**
   * Base URL of the API, up to and including `/v1`.
   * @defaultValue 'https://api.openai.com/v1'
   */
  base_url: z.url().default('https://api.openai.com/v1'),
  /**
   * Remote model id sent as `model`.
   * @defaultValue the llmq model name
   */
  model: z.string().min(1).max(200).optional(),
  /**
   * Name of the environment variable holding the API key (never the key itself).
   * Left out: no `Authorization` header is sent (local servers without auth).
   */
  api_key_env: envName.optional(),
  /**
   * `chat` uses /chat/completions and takes only `messages`; `completion` uses /completions and
   * takes only `prompt`; `auto` picks by what the job gives.
   * @defaultValue 'auto'
   */
  mode: z.enum(['chat', 'completion', 'auto']).default('auto'),
  /**
   * Stream answers so tokens reach `onToken` as they come. Off: one request, one `onToken` call
   * with the whole text.
   * @defaultValue true
   */
  stream: z.boolean().default(true),
  /**
   * Extra HTTP headers sent with every request.
   * @defaultValue {}
   */
  headers: z.record(z.string(), z.string()).default({}),
  /** `OpenAI-Organization` header. */
  organization: z.string().min(1).optional(),
  /**
   * Non-OpenAI parameters this server honours, sent in the body when a job sets them
   * (`repeat_penalty` under the name in `repeat_penalty_field`).
   * @defaultValue []
   */
  extra_params: z.array(z.enum(OPENAI_EXTRA_PARAMS)).default([]),
  /**
   * Body field that carries `repeat_penalty`: llama.cpp's server says `repeat_penalty`, vLLM says
   * `repetition_penalty`.
   * @defaultValue 'repeat_penalty'
   */
  repeat_penalty_field: z.enum(['repeat_penalty', 'repetition_penalty']).default('repeat_penalty'),
  /**
   * Body field that carries `max_tokens` on chat requests (OpenAI's reasoning models want
   * `max_completion_tokens`).
   * @defaultValue 'max_tokens'
   */
  max_tokens_field: z.enum(['max_tokens', 'max_completion_tokens']).default('max_tokens'),
  /**
   * Time limit of one HTTP request; 0 leaves it to the job's own timeout (the usual case).
   * @defaultValue 0
   */
  request_timeout_ms: z.int().min(0).max(2_147_483_647).default(0),
  /**
   * What `check()` does: `models` asks GET /models, `none` does nothing (servers without it).
   * @defaultValue 'models'
   */
  check: z.enum(['models', 'none']).default('models'),
  /**
   * Time limit of `check()`.
   * @defaultValue 5000
   */
  check_timeout_ms: z.int().min(1).max(600_000).default(5000),
});

export type OpenAiConfig = z.infer<typeof openAiConfigSchema>;

/** What a model on this backend accepts, given its config: exactly the parameters `generate` sends. */
export function openAiCapabilities(config: OpenAiConfig): BackendCapabilities {
  const mode = config.mode ?? 'auto';
  return {
    params: [...OPENAI_PARAMS, ...(config.extra_params ?? [])],
    chat: mode !== 'completion',
    completion: mode !== 'chat',
  };
}
