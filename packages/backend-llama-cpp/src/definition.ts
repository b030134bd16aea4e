import { LlmqError, defineBackend, type BackendCapabilities } from '@llmq/core';
import { llamaCppConfigSchema, resolveLlamaCppOptions, templatesDirOf, type LlamaCppConfig } from './config.js';
import { responseFormatProblem } from './json-schema.js';
import { findTemplate, singleTurnProblem } from './templates.js';

/** What the llama-cpp backend honours; the gateway checks jobs against it without loading the model. */
export const llamaCppCapabilities: BackendCapabilities = {
  params: [
    'max_tokens',
    'min_tokens',
    'temperature',
    'top_k',
    'top_p',
    'min_p',
    'seed',
    'stop',
    'repeat_penalty',
    'presence_penalty',
    'frequency_penalty',
    'response_format',
  ],
  chat: true,
  completion: true,
  templates: true,
};

/** llama.cpp's "draw a random seed" value (LLAMA_DEFAULT_SEED): as a job's seed it would not repeat. */
export const RANDOM_SEED = 0xffff_ffff;

function seedProblem(seed: number | undefined): { param: string; message: string } | undefined {
  if (seed !== RANDOM_SEED) return undefined;
  return { param: 'seed', message: `${RANDOM_SEED} is llama.cpp's "random seed" value, which would not repeat; use 0 to ${RANDOM_SEED - 1}` };
}

/**
 * A `min_tokens` the model's context cannot hold: the sequence holds the prompt (at least one
 * token) and the answer together, so the answer would end at the context's end, short of it.
 * llama.cpp may round `context_size` up to a multiple of 256, so that is the bound. Unknowable
 * here when `context_size` is left to node-llama-cpp (it sizes it at load).
 */
function minTokensProblem(minTokens: number | undefined, contextSize: number | undefined): { param: string; message: string } | undefined {
  if (minTokens === undefined || contextSize === undefined) return undefined;
  const most = Math.ceil(contextSize / 256) * 256;
  if (minTokens < most) return undefined;
  const size = most === contextSize ? `${contextSize} tokens (its context_size)` : `at most ${most} tokens (its context_size ${contextSize}, rounded up)`;
  return { param: 'min_tokens', message: `${minTokens} tokens cannot fit in this model's context of ${size}, which holds the prompt too; ask for fewer than ${most}` };
}

/**
 * Local GGUF models through node-llama-cpp. Light to import: node-llama-cpp (and its native
 * binary) is loaded only when `create()` runs, so the gateway can validate config with it.
 */
export const llamaCppBackend = defineBackend<LlamaCppConfig>({
  kind: 'backend',
  type: 'llama-cpp',
  configSchema: llamaCppConfigSchema,
  // A job naming a template that is not in the model's templates_dir is a 400 at enqueue.
  capabilities: (config, ctx) => {
    const dir = templatesDirOf(config, ctx);
    return {
      ...llamaCppCapabilities,
      findTemplate: (name) => findTemplate(dir, name),
      // A 400 at enqueue rather than a job that fails (or misbehaves) in the worker: a seed that
      // would not repeat, a multi-turn chat for a single-turn template, a schema keyword the
      // grammar cannot enforce, a min_tokens longer than the context.
      checkRequest: (request) =>
        seedProblem(request.seed) ??
        minTokensProblem(request.min_tokens, config.context_size) ??
        singleTurnProblem(dir, request.template ?? config.template, request.messages) ?? responseFormatProblem(request.response_format),
    };
  },
  async create({ name, config, concurrency }, ctx) {
    const options = resolveLlamaCppOptions(config, ctx, concurrency);
    let mod: typeof import('./backend.js');
    try {
      mod = await import('./backend.js');
    } catch (err) {
      throw new LlmqError('ERR_DEPENDENCY_MISSING', `node-llama-cpp cannot be loaded (install it next to @llmq/backend-llama-cpp): ${(err as Error).message}`, {
        cause: err,
      });
    }
    return mod.LlamaCppBackend.create(name, options, ctx);
  },
});
