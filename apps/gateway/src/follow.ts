import { LlmqError, type ErrorCode, type JobRequest, type JobResult, type Logger } from '@llmq/core';

/** What a front door answers with (the job view's result). */
export type FollowResult = Pick<JobResult, 'text' | 'finish_reason' | 'usage' | 'model'>;
import { newJobId, type EventHub, type Producer } from '@llmq/queue';

export interface FollowOptions {
  producer: Producer;
  hub: EventHub;
  logger: Logger;
  request: JobRequest;
  keyId?: string | undefined;
  sourceType: string;
  /** Called with each token as the worker produces it. */
  onToken?: (text: string) => void;
  /** Fires when the client goes away: the job is cancelled. */
  signal: AbortSignal;
  timeoutMs: number;
  /** Job id to use (so callers can name the job before its first token). */
  id?: string;
}

/**
 * Enqueues a job and waits for its result, for the synchronous front doors (OpenAI, TextSynth).
 * Subscribes to the job's events before enqueueing so no token is missed; a client disconnect or
 * the wait timeout cancels the job.
 */
export async function enqueueAndFollow(o: FollowOptions): Promise<{ id: string; result: FollowResult }> {
  const id = o.id ?? newJobId();
  let settle!: { resolve: (r: FollowResult) => void; reject: (e: unknown) => void };
  const done = new Promise<FollowResult>((resolve, reject) => (settle = { resolve, reject }));
  // Reads the stored outcome (a final event may have gone out before we watched).
  const settleFromStore = async () => {
    try {
      const view = await o.producer.getJob(id);
      if (!view) return;
      if (view.status === 'completed' && view.result) settle.resolve(view.result);
      else if (view.status === 'failed' && view.error) settle.reject(new LlmqError((view.error.code as ErrorCode) ?? 'ERR_INTERNAL', view.error.message));
      else if (view.status === 'cancelled') settle.reject(new LlmqError('ERR_JOB_CANCELLED', 'the job was cancelled'));
    } catch {
      // The poll below tries again.
    }
  };
  const unsubscribe = await o.hub.subscribe(id, (e) => {
    if (e.type === 'status' && (e.status === 'completed' || e.status === 'failed' || e.status === 'cancelled')) void settleFromStore();
    else if (e.type === 'token') o.onToken?.(e.text);
    else if (e.type === 'completed') settle.resolve(e.result);
    else if (e.type === 'cancelled') settle.reject(new LlmqError('ERR_JOB_CANCELLED', 'the job was cancelled'));
    else if (e.type === 'failed' && !e.will_retry) settle.reject(new LlmqError((e.error.code as ErrorCode) ?? 'ERR_INTERNAL', e.error.message));
    else if (e.type === 'failed') o.producer.watch(id).catch(() => undefined);
  });
  let poll: NodeJS.Timeout | undefined;
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    o.producer.cancel(id).catch((err: unknown) => o.logger.debug({ err, jobId: id }, 'cancel after client disconnect failed'));
    settle.reject(new LlmqError('ERR_JOB_CANCELLED', 'client disconnected'));
  };
  try {
    await o.producer.watch(id);
    await o.producer.enqueue(o.request, { id, keyId: o.keyId, source: { type: o.sourceType } });
    o.signal.addEventListener('abort', onAbort, { once: true });
    if (o.signal.aborted) onAbort();
    timer = setTimeout(() => {
      o.producer.cancel(id).catch(() => undefined);
      settle.reject(new LlmqError('ERR_JOB_TIMEOUT', `no result within ${o.timeoutMs} ms (gateway.wait_timeout_ms); the job was cancelled`));
    }, o.timeoutMs);
    // Safety net for a lost event: the job's stored state also settles the wait.
    poll = setInterval(() => {
      o.producer.watch(id).catch(() => undefined);
      void settleFromStore();
    }, 2_000);
    return { id, result: await done };
  } finally {
    clearTimeout(timer);
    clearInterval(poll);
    o.signal.removeEventListener('abort', onAbort);
    unsubscribe();
  }
}
