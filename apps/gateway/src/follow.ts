import { LlmqError, errorCode, errorDetail, fromJobError, type ErrorCode, type JobEvent, type JobRequest, type JobResult, type Logger } from '@llmq/core';
import { newJobId, notServedMessage, type EventHub, type Metrics, type Producer, type UnservedReport } from '@llmq/queue';
import { RunTracker, goneTracker, jobLost, unsentText } from './sse.js';

/** What a front door answers with (the job view's result). */
export type FollowResult = Pick<JobResult, 'text' | 'finish_reason' | 'usage' | 'model'>;

export interface FollowOptions {
  producer: Producer;
  hub: EventHub;
  logger: Logger;
  /** `jobs_enqueued_total` is counted here, labelled with `sourceType`. */
  metrics: Metrics;
  request: JobRequest;
  keyId?: string | undefined;
  sourceType: string;
  /**
   * Called with each token as the worker produces it. A streaming client cannot be told to drop
   * text, so once this has been given text, an attempt that fails retryably ends the wait with an
   * error and cancels the job instead of streaming the retry's answer after the first.
   */
  onToken?: (text: string) => void;
  /** Fires when the client goes away: the job is cancelled. */
  signal: AbortSignal;
  timeoutMs: number;
  /** Job id to use (so callers can name the job before its first token). */
  id?: string;
}

function notServedError(model: string, report: UnservedReport, outcome: string): LlmqError {
  return new LlmqError('ERR_MODEL_NOT_SERVED', `${notServedMessage(model, report)}.${outcome}`, { param: 'model' });
}

/**
 * Enqueues a job and waits for its result, for the synchronous front doors (OpenAI, TextSynth).
 * Subscribes to the job's events before enqueueing so no token is missed; a client disconnect or
 * the wait timeout cancels the job. Without `onToken`, or before any text was streamed, retries
 * are transparent (the result is the last attempt's).
 */
export async function enqueueAndFollow(o: FollowOptions): Promise<{ id: string; result: FollowResult }> {
  const id = o.id ?? newJobId();
  let settle!: { resolve: (r: FollowResult) => void; reject: (e: unknown) => void };
  const done = new Promise<FollowResult>((resolve, reject) => (settle = { resolve, reject }));
  // Text handed to onToken in the current attempt (the worker re-sends the text so far at
  // offset 0 when it learns of a watch late: deduplicated by offset, as the SSE endpoint does).
  let sentChars = 0;
  const runs = new RunTracker(0);
  /** Set once the wait is ended here, so later events and polls leave its error alone. */
  let finished = false;
  const gone = goneTracker();
  // Reads the stored outcome (a final event may have gone out before we watched).
  const settleFromStore = async () => {
    try {
      const view = await o.producer.getJob(id);
      if (finished) return;
      if (gone(view !== null)) {
        finished = true;
        settle.reject(jobLost(id));
      }
      if (!view) return;
      if (view.status === 'completed' && view.result) settle.resolve(view.result);
      else if (view.status === 'failed' && view.error) settle.reject(fromJobError(view.error));
      else if (view.status === 'cancelled') settle.reject(new LlmqError('ERR_JOB_CANCELLED', 'the job was cancelled'));
      else if (view.status === 'queued') {
        // No worker will take it: say why now rather than after wait_timeout_ms.
        const report = await o.producer.notServed(o.request.model);
        if (report && !finished) {
          finished = true;
          // Before answering, so that "The job was cancelled" is true when the client reads it.
          await o.producer.cancel(id).catch((err: unknown) => o.logger.debug({ err, jobId: id }, 'cancel of a job no worker serves failed'));
          settle.reject(notServedError(o.request.model, report, ' The job was cancelled.'));
        }
      }
    } catch {
      // The poll below tries again.
    }
  };
  /**
   * Text was streamed and the generation starts over: a streaming client cannot be told to drop
   * what it has, so end its stream with an error and cancel the job nobody will read.
   */
  const abandon = (failedAttempt: number, code: ErrorCode, why: string) => {
    finished = true;
    const err = new LlmqError(
      code,
      `job ${id}: attempt ${failedAttempt} ${why} after streaming began; the text streamed so far is incomplete. ` +
        'The job was cancelled, not retried, since a retry would stream a second answer after the first: send the request again ' +
        '(POST /v1/jobs with GET /v1/jobs/:id/events follows retries)',
      { retryable: false },
    );
    o.logger.warn({ jobId: id, attempt: failedAttempt, code }, 'streamed job failed mid-answer: cancelling it instead of retrying');
    o.producer
      .cancel(id)
      .catch((e: unknown) => o.logger.warn({ err: e, jobId: id }, 'cancel after a failed streamed attempt failed'))
      .finally(() => settle.reject(err));
  };
  const listener = (e: JobEvent): void => {
    if (finished) return;
    if (e.type === 'status' && (e.status === 'completed' || e.status === 'failed' || e.status === 'cancelled')) void settleFromStore();
    else if (e.type === 'status' && e.status === 'active') {
      // A new attempt, or a generation starting over within one (see RunTracker).
      const before = runs.attempt;
      const run = runs.active(e);
      if (run === 'retry' || run === 'restart') {
        if (sentChars > 0) return abandon(before, 'ERR_BACKEND_FAILED', run === 'restart' ? 'started over (on a fallback model or another worker)' : 'was superseded by a new attempt');
        sentChars = 0;
      }
    } else if (e.type === 'status' && e.status === 'queued') {
      // Handed back by a worker shutting down: the next worker, in whichever process, must learn of this wait.
      o.producer.watch(id).catch(() => undefined);
    } else if (e.type === 'token') {
      if (!o.onToken) return;
      const text = unsentText(e, sentChars);
      if (text === undefined) return;
      o.onToken(text);
      sentChars = e.offset + e.text.length;
    } else if (e.type === 'completed') settle.resolve(e.result);
    else if (e.type === 'cancelled') settle.reject(new LlmqError('ERR_JOB_CANCELLED', 'the job was cancelled'));
    else if (e.type === 'failed' && !e.will_retry) settle.reject(fromJobError(e.error));
    else if (e.type === 'failed') {
      // A late event of an attempt already superseded is no news: its retry is running.
      if (e.attempt < runs.attempt) return;
      if (sentChars > 0) return abandon(e.attempt, fromJobError(e.error).code, `failed with ${e.error.code} (${e.error.message})`);
      // Nothing reached the client: the retry runs unseen, from the start.
      sentChars = 0;
      runs.queued();
      // The retry may run in another worker process: tell them all.
      o.producer.watch(id).catch(() => undefined);
    }
  };
  const unsubscribe = await o.hub.subscribe(id, listener).catch((err: unknown) => {
    // Subscribing comes first: say that nothing was enqueued, as the enqueue's own 503 does.
    throw errorCode(err) === 'ERR_REDIS_UNAVAILABLE' ? new LlmqError('ERR_REDIS_UNAVAILABLE', `${errorDetail((err as Error).message).replace(/; retry later$/, '')}; nothing was enqueued, retry later`, { cause: err }) : err;
  });
  let poll: NodeJS.Timeout | undefined;
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    o.producer.cancel(id).catch((err: unknown) => o.logger.debug({ err, jobId: id }, 'cancel after client disconnect failed'));
    settle.reject(new LlmqError('ERR_JOB_CANCELLED', 'client disconnected'));
  };
  try {
    // A model that no worker serves, as far as the last few seconds tell: check now, enqueue nothing.
    if (await o.producer.notServedFresh(o.request.model)) {
      const report = await o.producer.notServed(o.request.model);
      if (report) throw notServedError(o.request.model, report, ' Nothing was enqueued.');
    }
    await o.producer.watch(id);
    const { created } = await o.producer.enqueue(o.request, { id, keyId: o.keyId, source: { type: o.sourceType } });
    if (created) o.metrics.enqueued.inc({ model: o.request.model, source: o.sourceType });
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
