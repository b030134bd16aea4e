import type { Logger } from '@llmq/core';
import type { PulsarClient, PulsarProducer } from './driver.js';
import { errSummary } from '@llmq/core';

/**
 * One producer per topic, created on first use and kept open; past `max` topics the least
 * recently used is closed. A producer that failed to be created is not cached, so the next
 * write tries again.
 */
export class ProducerCache {
  private readonly producers = new Map<string, Promise<PulsarProducer>>();
  private readonly client: PulsarClient;
  private readonly options: { max: number; sendTimeoutMs: number; logger: Logger };

  constructor(client: PulsarClient, options: { max: number; sendTimeoutMs: number; logger: Logger }) {
    this.client = client;
    this.options = options;
  }

  get size(): number {
    return this.producers.size;
  }

  get(topic: string): Promise<PulsarProducer> {
    const cached = this.producers.get(topic);
    if (cached) {
      this.producers.delete(topic);
      this.producers.set(topic, cached);
      return cached;
    }
    const created = this.client.createProducer({ topic, sendTimeoutMs: this.options.sendTimeoutMs, blockIfQueueFull: true });
    this.producers.set(topic, created);
    created.catch(() => {
      if (this.producers.get(topic) === created) this.producers.delete(topic);
    });
    this.evict();
    return created;
  }

  private evict(): void {
    while (this.producers.size > this.options.max) {
      const oldest = this.producers.keys().next();
      if (oldest.done) return;
      const topic = oldest.value;
      const producer = this.producers.get(topic);
      this.producers.delete(topic);
      // close() flushes what it still holds, so sends in flight complete first.
      void producer?.then(
        (p) => p.close(),
        () => undefined,
      ).catch((err: unknown) => this.options.logger.warn({ err: errSummary(err), topic }, 'closing an idle producer failed'));
    }
  }

  async closeAll(): Promise<void> {
    const all = [...this.producers.entries()];
    this.producers.clear();
    await Promise.all(
      all.map(async ([topic, pending]) => {
        try {
          await (await pending).close();
        } catch (err) {
          this.options.logger.warn({ err: errSummary(err), topic }, 'closing a producer failed');
        }
      }),
    );
  }
}
