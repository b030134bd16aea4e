import type { Request, Response } from 'express';
import { LlmqError, toJobError, type JobEvent, type JobView } from '@llmq/core';
import type { EventHub, Producer } from '@llmq/queue';

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);

function send(res: Response, event: string, data: unknown): void {
  res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
}

/**
 * The part of a token event a client that has `sent` characters lacks; undefined when it has it
 * all. A worker that learns of a watch late re-sends the text so far at offset 0.
 */
export function unsentText(e: { text: string; offset: number }, sent: number): string | undefined {
  if (e.offset + e.text.length <= sent) return undefined;
  return e.offset < sent ? e.text.slice(sent - e.offset) : e.text;
}

/**
 * Follows the `active` events of a job's runs, for a client that streams its text: says which
 * are news. `retry`: a new attempt; `restart`: the same attempt started over (a fallback model, or
 * another worker taking over a job handed back at shutdown; a later start time); `stale`: an
 * attempt already superseded; `same`: the run already known (or its first report). Either of the
 * first two regenerates the text from offset 0.
 */
export class RunTracker {
  private startedAt: number | undefined;

  constructor(public attempt: number) {}

  active(e: { attempt?: number | undefined; at?: number | undefined }): 'retry' | 'restart' | 'stale' | 'same' {
    if (e.attempt === undefined) return 'same';
    if (e.attempt < this.attempt) return 'stale';
    if (e.attempt > this.attempt) {
      this.attempt = e.attempt;
      this.startedAt = e.at;
      return 'retry';
    }
    if (this.startedAt !== undefined && e.at !== undefined && e.at !== this.startedAt) {
      this.startedAt = e.at;
      return 'restart';
    }
    this.startedAt ??= e.at;
    return 'same';
  }

  /** A retry is queued: the run that comes next is not known yet. */
  queued(): void {
    this.startedAt = undefined;
  }
}

/**
 * A `status` event. `attempts` (as documented, and as in the job view) counts attempts started,
 * the running one included; `attempt` is the same number, kept for clients that read it.
 */
function sendStatus(res: Response, data: { id: string; status: string; attempts: number | undefined; [k: string]: unknown }): void {
  send(res, 'status', { ...data, attempt: data.attempts });
}

function finalFromView(res: Response, view: JobView): void {
  if (view.status === 'completed') send(res, 'completed', { id: view.id, status: 'completed', result: view.result, completed_at: view.completed_at });
  else if (view.status === 'cancelled') send(res, 'cancelled', { id: view.id, status: 'cancelled' });
  else send(res, 'failed', { id: view.id, status: 'failed', error: view.error });
}

/** A followed job that is no longer in Redis: its watchers would otherwise wait forever. */
export function jobLost(id: string): LlmqError {
  return new LlmqError(
    'ERR_JOB_LOST',
    `job ${id} was removed from Redis while it was followed (emptied or removed in Bull Board, removed by retention, or Redis restarted without its data); no result will come: send the request again`,
  );
}

/**
 * Tracks reads of the store for a followed job: true once two in a row found none (one could
 * race a job's own moves), i.e. it was removed behind llmq's back and no event will ever come.
 */
export function goneTracker(): (found: boolean) => boolean {
  let missing = 0;
  return (found) => {
    missing = found ? 0 : missing + 1;
    return missing >= 2;
  };
}

/**
 * `GET /v1/jobs/:id/events`: the job's current state first, then live status changes and tokens
 * from whichever worker runs it, then one final event (`completed`, `failed` or `cancelled`).
 */
export async function streamJobEvents(req: Request, res: Response, id: string, producer: Producer, hub: EventHub): Promise<void> {
  const queued: JobEvent[] = [];
  let live: ((e: JobEvent) => void) | undefined;
  // Subscribe before reading the state, so nothing between the two is missed.
  const unsubscribe = await hub.subscribe(id, (e) => (live ? live(e) : queued.push(e)));
  let view: JobView | null;
  try {
    await producer.watch(id);
    view = await producer.getJob(id);
  } catch (err) {
    unsubscribe();
    throw err;
  }
  if (!view) {
    unsubscribe();
    throw new LlmqError('ERR_JOB_NOT_FOUND', `job "${id}" not found`, { param: 'id' });
  }
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  const warning = view.status === 'queued' ? producer.waitWarning(view.model) : undefined;
  sendStatus(res, { id, status: view.status, attempts: view.attempts, ...(warning ? { warning } : {}) });
  // A worker that learns of the watch mid-generation sends the text so far at offset 0;
  // live tokens are deduplicated by offset below.
  let sentChars = 0;
  const runs = new RunTracker(view.status === 'active' ? view.attempts : view.attempts + 1);
  /** The status last sent, so the worker's own `active` for a run already reported is not sent twice. */
  let lastStatus = view.status;
  /** The text so far was asked for and has not come yet. */
  let catchingUp = false;
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    clearInterval(heartbeat);
    clearInterval(poll);
    unsubscribe();
    res.end();
  };
  const heartbeat = setInterval(() => {
    res.write(': keep-alive\n\n');
    producer.watch(id).catch(() => undefined);
  }, 15_000);
  const gone = goneTracker();
  /** Ends the stream from the stored outcome once the job is finished, or gone. */
  const endFromStore = () => {
    producer.getJob(id).then(
      (v) => {
        if (ended) return;
        if (gone(v !== null)) {
          send(res, 'failed', { id, status: 'failed', error: toJobError(jobLost(id).message) });
          end();
          return;
        }
        if (v && TERMINAL.has(v.status)) {
          finalFromView(res, v);
          end();
        }
      },
      () => undefined,
    );
  };
  // Safety net: if an event was lost (Redis blip), the job's state still ends the stream.
  const poll = setInterval(endFromStore, 5_000);
  req.on('close', end);
  if (TERMINAL.has(view.status)) {
    finalFromView(res, view);
    end();
    return;
  }
  live = (e) => {
    if (ended) return;
    switch (e.type) {
      case 'token': {
        if (e.offset > sentChars) {
          // A gap: this stream joined mid-answer while another client already followed the job
          // (the worker sends the text so far on a first watch only), or missed a message. Ask for
          // the text so far; the tokens until it comes are part of it.
          if (!catchingUp) {
            catchingUp = true;
            producer.watch(id, true).catch(() => (catchingUp = false));
          }
          break;
        }
        const text = unsentText(e, sentChars);
        if (text === undefined) break;
        catchingUp = false;
        send(res, 'token', { text, index: e.index, offset: sentChars });
        sentChars = e.offset + e.text.length;
        break;
      }
      case 'status':
        if (TERMINAL.has(e.status)) {
          // The job ended before the worker heard of this watch: read the stored outcome.
          endFromStore();
          break;
        }
        if (e.status === 'active' && e.attempt !== undefined) {
          const run = runs.active(e);
          if (run === 'stale') break;
          if (run === 'same' && lastStatus === 'active') break; // the run this stream already reported
          if (run !== 'same') {
            // Its tokens start again at offset 0. A restart within the attempt also tells the
            // client to drop the text it has (`restarted`); a retry's status says so by its number.
            sentChars = 0;
            catchingUp = false;
          }
          if (run === 'restart') {
            lastStatus = 'active';
            sendStatus(res, { id, status: 'active', attempts: e.attempt, restarted: true });
            break;
          }
        }
        if (e.status === 'queued') {
          // Handed back by a worker shutting down: tell the next one, in whichever process, of this watch.
          producer.watch(id).catch(() => undefined);
        }
        lastStatus = e.status;
        sendStatus(res, { id, status: e.status, attempts: e.attempt });
        break;
      case 'completed':
        send(res, 'completed', { id, status: 'completed', result: e.result, completed_at: e.result.completed_at });
        end();
        break;
      case 'cancelled':
        send(res, 'cancelled', { id, status: 'cancelled' });
        end();
        break;
      case 'failed':
        if (e.will_retry) {
          lastStatus = 'queued';
          runs.queued();
          sendStatus(res, { id, status: 'queued', attempts: e.attempt, error: e.error, will_retry: true });
          // The retry may run in another worker process: tell them all.
          producer.watch(id).catch(() => undefined);
        }
        else {
          send(res, 'failed', { id, status: 'failed', error: e.error });
          end();
        }
        break;
    }
  };
  for (const e of queued.splice(0)) live(e);
}
