import type { SourceContext } from '@llmq/core';
import { createFakeKv } from '../../../testing/src/fake-kv.js';
import { memoryLogger, recordingEnqueue } from '../../../testing/src/source-fakes.js';

export { eventually, memoryLogger, recordingEnqueue, type LogEntry, type RecordingEnqueue } from '../../../testing/src/source-fakes.js';

export function testContext(env: Record<string, string> = {}) {
  const enqueue = recordingEnqueue();
  const logger = memoryLogger();
  const host = new AbortController();
  const ctx: SourceContext = { logger, signal: host.signal, configDir: process.cwd(), env, enqueue, kv: createFakeKv() };
  return { ctx, enqueue, logger, host };
}
