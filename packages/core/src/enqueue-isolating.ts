import type { EnqueueInput, EnqueueOutcome } from './adapters.js';
import { isRetryable } from './errors.js';

export type EnqueueResult = { ok: EnqueueOutcome; rejected?: undefined } | { ok?: undefined; rejected: unknown };

/**
 * Enqueues a batch so that one job the queue refuses for good (an unknown model, a parameter
 * the backend does not take) cannot block the others: `enqueue` fails a whole call for one such
 * job, so on a non-retryable failure the jobs are enqueued one by one and only the refused ones
 * come back as `rejected`. A retryable failure (Redis away, queue full) is thrown as is: then
 * nothing may be acknowledged upstream.
 */
export async function enqueueIsolating(enqueue: (jobs: EnqueueInput[]) => Promise<EnqueueOutcome[]>, jobs: EnqueueInput[]): Promise<EnqueueResult[]> {
  try {
    const outcomes = await enqueue(jobs);
    return jobs.map((job, i) => ({ ok: outcomes[i] ?? { id: job.id, created: true } }));
  } catch (err) {
    if (isRetryable(err)) throw err;
    const results: EnqueueResult[] = [];
    for (const job of jobs) {
      try {
        const [outcome] = await enqueue([job]);
        results.push({ ok: outcome ?? { id: job.id, created: true } });
      } catch (jobErr) {
        if (isRetryable(jobErr)) throw jobErr;
        results.push({ rejected: jobErr });
      }
    }
    return results;
  }
}
