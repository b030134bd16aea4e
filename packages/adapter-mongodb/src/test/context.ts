import type { SourceContext, SourceKv } from '@llmq/core';
import { createFakeKv, type FakeKv } from '../../../testing/src/fake-kv.js';
import { memoryLogger, recordingEnqueue, type RecordingEnqueue, type TimelineEvent } from '../../../testing/src/source-fakes.js';

export { eventually, memoryLogger, recordingEnqueue, type LogEntry, type RecordingEnqueue, type TimelineEvent } from '../../../testing/src/source-fakes.js';

/** Wraps a kv so its writes land in the timeline next to enqueue calls. */
function timelineKv(kv: FakeKv, timeline: TimelineEvent[]): SourceKv {
  return {
    get: (k) => kv.get(k),
    set: async (k, v, ttl) => {
      await kv.set(k, v, ttl);
      timeline.push({ t: 'kv:set', key: k, value: v });
    },
    acquire: (k, o, t) => kv.acquire(k, o, t),
    renew: (k, o, t) => kv.renew(k, o, t),
    release: (k, o) => kv.release(k, o),
  };
}

export interface TestContext {
  ctx: SourceContext;
  kv: FakeKv;
  enqueue: RecordingEnqueue;
  logger: ReturnType<typeof memoryLogger>;
  timeline: TimelineEvent[];
  host: AbortController;
}

/** A SourceContext over a fake kv (shared when `kv` is given, as two processes share Redis). */
export function testContext(options: { kv?: FakeKv; env?: Record<string, string> } = {}): TestContext {
  const timeline: TimelineEvent[] = [];
  const kv = options.kv ?? createFakeKv();
  const enqueue = recordingEnqueue(timeline);
  const logger = memoryLogger();
  const host = new AbortController();
  const ctx: SourceContext = {
    logger,
    signal: host.signal,
    configDir: process.cwd(),
    env: options.env ?? {},
    enqueue,
    kv: timelineKv(kv, timeline),
  };
  return { ctx, kv, enqueue, logger, timeline, host };
}
