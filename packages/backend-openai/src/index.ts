export { openAiBackend, OpenAiBackend } from './openai-backend.js';
export { openAiConfigSchema, openAiCapabilities, OPENAI_PARAMS, OPENAI_EXTRA_PARAMS, type OpenAiConfig, type OpenAiExtraParam } from './config.js';
export { toLlmqError as openAiErrorToLlmq } from './errors.js';
export { retryAfterMs, parseDurationMs, type HeaderLookup } from '@llmq/core';
