import { echoBackend, type AdapterDefinition } from '@llmq/core';
import { mongoSink, mongoSource } from '@llmq/adapter-mongodb';
import { pulsarSink, pulsarSource } from '@llmq/adapter-pulsar';
import { llamaCppBackend } from '@llmq/backend-llama-cpp';
import { openAiBackend } from '@llmq/backend-openai';
import { textSynthBackend } from '@llmq/backend-textsynth';
import { webhookSink } from '@llmq/sink-webhook';

/**
 * Every adapter shipped with llmq. Definition modules are light: heavy drivers
 * (node-llama-cpp, mongodb, pulsar-client) load only when an instance is created.
 */
export const BUILTIN_DEFINITIONS: readonly AdapterDefinition[] = [echoBackend, llamaCppBackend, openAiBackend, textSynthBackend, webhookSink, mongoSource, mongoSink, pulsarSource, pulsarSink];
