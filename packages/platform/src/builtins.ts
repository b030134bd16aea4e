import { echoBackend, type AdapterDefinition } from '@llmq/core';
import { openAiBackend } from '@llmq/backend-openai';
import { textSynthBackend } from '@llmq/backend-textsynth';
import { webhookSink } from '@llmq/sink-webhook';

/**
 * Every adapter shipped with llmq. Definition modules are light: heavy drivers
 * (node-llama-cpp, mongodb, pulsar-client) load only when an instance is created.
 */
export const BUILTIN_DEFINITIONS: readonly AdapterDefinition[] = [echoBackend, openAiBackend, textSynthBackend, webhookSink];
