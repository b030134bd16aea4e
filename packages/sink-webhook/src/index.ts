import { createHmac } from 'node:crypto';
import { z } from 'zod';
import { LlmqError, defineSink, type Sink, type SinkWriteInput, type UsageRecord } from '@llmq/core';

export const webhookConfigSchema = z.strictObject({
  /** Where results are POSTed. */
  url: z.url(),
  /** Extra request headers (no secrets: use `secret_env`). @defaultValue {} */
  headers: z.record(z.string(), z.string()).default({}),
  /** Env var holding an HMAC-SHA256 key; the body's signature goes in `X-Llmq-Signature: sha256=<hex>`. */
  secret_env: z.string().optional(),
  /** Per-request time limit. @defaultValue 10000 */
  timeout_ms: z.int().min(1).default(10_000),
  /** Include the request (prompt/messages) in the payload. @defaultValue false */
  include_request: z.boolean().default(false),
});
export type WebhookConfig = z.infer<typeof webhookConfigSchema>;

/** POSTs each result as JSON. Receivers deduplicate on the `Idempotency-Key` header (the job id). */
export class WebhookSink implements Sink {
  constructor(
    readonly name: string,
    private readonly config: WebhookConfig,
    private readonly secret: string | undefined,
  ) {}

  async check(): Promise<void> {}
  async close(): Promise<void> {}

  async writeUsage(record: UsageRecord, options: { signal: AbortSignal }): Promise<void> {
    await this.post(JSON.stringify(record), record.job_id, options.signal);
  }

  async write(input: SinkWriteInput): Promise<void> {
    const body = JSON.stringify({
      id: input.jobId,
      object: 'job.result',
      model: input.model,
      result: input.result,
      source: input.source ?? null,
      metadata: input.request.metadata ?? null,
      ...(this.config.include_request ? { request: input.request } : {}),
    });
    await this.post(body, input.jobId, input.signal);
  }

  private async post(body: string, jobId: string, signal: AbortSignal): Promise<void> {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'idempotency-key': jobId, ...this.config.headers };
    if (this.secret) headers['x-llmq-signature'] = `sha256=${createHmac('sha256', this.secret).update(body).digest('hex')}`;
    let res: Response;
    try {
      res = await fetch(this.config.url, { method: 'POST', headers, body, signal: AbortSignal.any([signal, AbortSignal.timeout(this.config.timeout_ms)]) });
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw new LlmqError('ERR_SINK_WRITE', `webhook ${new URL(this.config.url).host} unreachable: ${(err as Error).message}`, { cause: err });
    }
    await res.arrayBuffer().catch(() => undefined);
    if (res.ok) return;
    const retryable = res.status >= 500 || res.status === 429 || res.status === 408;
    throw new LlmqError('ERR_SINK_WRITE', `webhook answered ${res.status}`, { retryable });
  }
}

export const webhookSink = defineSink<WebhookConfig>({
  kind: 'sink',
  type: 'webhook',
  configSchema: webhookConfigSchema,
  create({ name, config }, ctx) {
    const secret = config.secret_env ? ctx.env[config.secret_env] : undefined;
    if (config.secret_env && !secret) throw new LlmqError('ERR_CONFIG_INVALID', `sink "${name}": env ${config.secret_env} (secret_env) is not set`);
    return new WebhookSink(name, config, secret);
  },
});
