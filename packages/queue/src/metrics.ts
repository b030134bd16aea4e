import { Counter, Gauge, register as defaultRegistry, type Registry } from 'prom-client';
import { FastCounter, FastGauge, FastHistogram } from './fast-metrics.js';

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

function make(registry: Registry) {
  const registers = [registry];
  return {
    enqueued: new Counter({ name: 'llmq_jobs_enqueued_total', help: 'Jobs accepted into a model queue', labelNames: ['model', 'source'], registers }),
    completed: new FastCounter({ name: 'llmq_jobs_completed_total', help: 'Jobs completed', labelNames: ['model'], registers }),
    failed: new Counter({ name: 'llmq_jobs_failed_total', help: 'Job attempts that failed, by error code (cancellations are in llmq_jobs_cancelled_total)', labelNames: ['model', 'code'], registers }),
    retried: new Counter({ name: 'llmq_jobs_retried_total', help: 'Failed attempts that will be retried', labelNames: ['model'], registers }),
    deadLettered: new Counter({ name: 'llmq_jobs_dead_lettered_total', help: 'Jobs moved to the dead-letter queue', labelNames: ['model'], registers }),
    cancelled: new Counter({ name: 'llmq_jobs_cancelled_total', help: 'Jobs cancelled', labelNames: ['model'], registers }),
    stalled: new Counter({ name: 'llmq_jobs_stalled_total', help: 'Jobs re-queued because their worker died or stopped renewing the lock', labelNames: ['model'], registers }),
    waitSeconds: new FastHistogram({ name: 'llmq_job_wait_seconds', help: 'Time from enqueue to the start of processing', labelNames: ['model'], buckets: DURATION_BUCKETS, registers }),
    processingSeconds: new FastHistogram({ name: 'llmq_job_processing_seconds', help: 'Time from start to result', labelNames: ['model'], buckets: DURATION_BUCKETS, registers }),
    ttftSeconds: new FastHistogram({ name: 'llmq_time_to_first_token_seconds', help: 'Time from start of processing to the first token', labelNames: ['model'], buckets: DURATION_BUCKETS, registers }),
    tokensIn: new FastCounter({ name: 'llmq_prompt_tokens_total', help: 'Prompt tokens processed', labelNames: ['model'], registers }),
    tokensOut: new FastCounter({ name: 'llmq_completion_tokens_total', help: 'Completion tokens generated', labelNames: ['model'], registers }),
    active: new FastGauge({ name: 'llmq_jobs_active', help: 'Jobs running in this process', labelNames: ['model'], registers }),
    throttledSeconds: new Counter({ name: 'llmq_throttled_seconds_total', help: "Time a model's queue was held back by rate limits", labelNames: ['model', 'reason'], registers }),
    queuePaused: new Gauge({ name: 'llmq_queue_paused', help: '1 while a model queue is paused (e.g. insufficient quota)', labelNames: ['model'], registers }),
    alerts: new Counter({ name: 'llmq_alerts_total', help: 'Alert events raised (e.g. insufficient_quota)', labelNames: ['model', 'kind'], registers }),
    watchdogRestarts: new Counter({ name: 'llmq_worker_watchdog_restarts_total', help: 'Workers rebuilt because a backlog made no progress', labelNames: ['model'], registers }),
  };
}

export type Metrics = ReturnType<typeof make>;
const cache = new WeakMap<Registry, Metrics>();

/** The llmq metrics of a registry (one set per registry, so gateway and worker can share one). */
export function getMetrics(registry: Registry = defaultRegistry): Metrics {
  let m = cache.get(registry);
  if (!m) {
    m = make(registry);
    cache.set(registry, m);
  }
  return m;
}
