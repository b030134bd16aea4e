import { LlmqError, defineBackend, type BackendCapabilities } from '@llmq/core';
import { llamaCppConfigSchema, resolveLlamaCppOptions, templatesDirOf, type LlamaCppConfig } from './config.js';
import { responseFormatProblem } from './json-schema.js';
import { findTemplate } from './templates.js';

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
      // A schema keyword the grammar cannot enforce is a 400, not an answer that does not match.
      checkRequest: (request) => responseFormatProblem(request.response_format),
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
