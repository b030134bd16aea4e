import type {
  PulsarClient,
  PulsarClientConfig,
  PulsarConsumer,
  PulsarConsumerConfig,
  PulsarMessage,
  PulsarMessageId,
  PulsarModule,
  PulsarProducer,
  PulsarProducerConfig,
  PulsarProducerMessage,
} from '../driver.js';

/*
 * A recording fake of the pulsar-client module surface in ../driver.ts: a tiny in-memory broker
 * with topics, Shared subscriptions (each message to one consumer), acks, nacks with
 * redelivery, and the broker's dead-letter policy. Every call is recorded; any call can be made
 * to fail on request.
 */

export interface FakeCall {
  op: string;
  args: unknown[];
}

class FakeMessageId implements PulsarMessageId {
  constructor(private readonly id: string) {}
  toString(): string {
    return this.id;
  }
}

export class FakeMessage implements PulsarMessage {
  constructor(
    readonly topic: string,
    readonly id: string,
    readonly data: Buffer,
    readonly properties: Record<string, string>,
    readonly publishTime: number,
    readonly redeliveryCount = 0,
  ) {}
  getTopicName(): string {
    return this.topic;
  }
  getProperties(): Record<string, string> {
    return { ...this.properties };
  }
  getData(): Buffer {
    return this.data;
  }
  getMessageId(): PulsarMessageId {
    return new FakeMessageId(this.id);
  }
  getPublishTimestamp(): number {
    return this.publishTime;
  }
  getRedeliveryCount(): number {
    return this.redeliveryCount;
  }
  redelivered(): FakeMessage {
    return new FakeMessage(this.topic, this.id, this.data, this.properties, this.publishTime, this.redeliveryCount + 1);
  }
}

interface Subscription {
  topic: string;
  name: string;
  backlog: FakeMessage[];
  /** Delivered, not yet acked, by message id. */
  unacked: Map<string, { message: FakeMessage; consumer: FakeConsumer }>;
  acked: Set<string>;
  waiters: (() => void)[];
}

export class FakePulsar {
  readonly calls: FakeCall[] = [];
  /** Every message produced, per topic, in order. */
  readonly topics = new Map<string, FakeMessage[]>();
  readonly clients: FakeClient[] = [];
  private readonly subscriptions = new Map<string, Subscription>();
  private readonly failures: { op: string; error: Error; times: number }[] = [];
  private seq = 0;

  /** The module object, as `import('pulsar-client')` would give it. */
  readonly module: PulsarModule;

  constructor() {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const broker = this;
    class Client extends FakeClient {
      constructor(config: PulsarClientConfig) {
        super(broker, config);
      }
    }
    class AuthenticationToken {
      constructor(readonly params: { token: string }) {
        broker.record('AuthenticationToken', [params]);
      }
    }
    this.module = { Client, AuthenticationToken };
  }

  record(op: string, args: unknown[]): void {
    this.calls.push({ op, args });
    const i = this.failures.findIndex((f) => f.op === op);
    if (i < 0) return;
    const failure = this.failures[i]!;
    failure.times--;
    if (failure.times <= 0) this.failures.splice(i, 1);
    throw failure.error;
  }

  /** Makes the next `times` calls of `op` (subscribe, createProducer, send, acknowledge, receive, …) fail. */
  failNext(op: string, error: Error, times = 1): void {
    this.failures.push({ op, error, times });
  }

  /** Publishes as an outside producer would; returns the message id. */
  publish(topic: string, payload: unknown, properties: Record<string, string> = {}): string {
    const data = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
    return this.append(topic, data, properties);
  }

  /** @internal */
  append(topic: string, data: Buffer, properties: Record<string, string>): string {
    this.seq++;
    const id = `${this.seq}:0:-1:-1`;
    const message = new FakeMessage(topic, id, data, properties, Date.now());
    const list = this.topics.get(topic) ?? [];
    list.push(message);
    this.topics.set(topic, list);
    for (const sub of this.subscriptions.values()) {
      if (sub.topic !== topic) continue;
      sub.backlog.push(message);
      this.wake(sub);
    }
    return id;
  }

  /** @internal */
  subscription(topic: string, name: string, initial: 'Earliest' | 'Latest'): Subscription {
    const key = `${topic}|${name}`;
    let sub = this.subscriptions.get(key);
    if (!sub) {
      sub = { topic, name, backlog: initial === 'Earliest' ? [...(this.topics.get(topic) ?? [])] : [], unacked: new Map(), acked: new Set(), waiters: [] };
      this.subscriptions.set(key, sub);
    }
    return sub;
  }

  /** Message ids acked on a subscription. */
  acked(topic: string, subscription: string): string[] {
    return [...(this.subscriptions.get(`${topic}|${subscription}`)?.acked ?? [])];
  }

  /** Messages delivered and not yet acked on a subscription. */
  unacked(topic: string, subscription: string): string[] {
    return [...(this.subscriptions.get(`${topic}|${subscription}`)?.unacked.keys() ?? [])];
  }

  /** Messages produced to a topic, payloads parsed as JSON. */
  produced(topic: string): { data: unknown; properties: Record<string, string> }[] {
    return (this.topics.get(topic) ?? []).map((m) => ({ data: JSON.parse(m.data.toString('utf8')) as unknown, properties: m.properties }));
  }

  /** @internal */
  wake(sub: Subscription): void {
    for (const w of sub.waiters.splice(0)) w();
  }
}

export class FakeClient implements PulsarClient {
  readonly consumers: FakeConsumer[] = [];
  readonly producers: FakeProducer[] = [];
  closed = false;

  constructor(
    readonly broker: FakePulsar,
    readonly config: PulsarClientConfig,
  ) {
    broker.record('Client', [{ ...config, log: typeof config.log }]);
    broker.clients.push(this);
  }

  async subscribe(config: PulsarConsumerConfig): Promise<FakeConsumer> {
    this.broker.record('subscribe', [config]);
    const consumer = new FakeConsumer(this.broker, config, this.broker.subscription(config.topic, config.subscription, config.subscriptionInitialPosition));
    this.consumers.push(consumer);
    return consumer;
  }

  async createProducer(config: PulsarProducerConfig): Promise<FakeProducer> {
    this.broker.record('createProducer', [config]);
    const producer = new FakeProducer(this.broker, config);
    this.producers.push(producer);
    return producer;
  }

  async close(): Promise<null> {
    this.broker.record('client.close', []);
    this.closed = true;
    return null;
  }
}

export class FakeConsumer implements PulsarConsumer {
  closed = false;
  readonly acks: string[] = [];
  readonly nacks: string[] = [];

  constructor(
    private readonly broker: FakePulsar,
    readonly config: PulsarConsumerConfig,
    private readonly sub: Subscription,
  ) {}

  async receive(timeoutMs: number): Promise<PulsarMessage> {
    if (this.closed) throw new Error('Failed to receive message: AlreadyClosed');
    this.broker.record('receive', [timeoutMs]);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const message = this.sub.backlog.shift();
      if (message) {
        this.sub.unacked.set(message.id, { message, consumer: this });
        return message;
      }
      const left = deadline - Date.now();
      if (left <= 0 || this.closed) throw new Error(this.closed ? 'Failed to receive message: AlreadyClosed' : 'Failed to receive message: TimeOut');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.sub.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async acknowledge(message: PulsarMessage): Promise<null> {
    const id = message.getMessageId().toString();
    this.broker.record('acknowledge', [id]);
    if (this.closed) throw new Error('Failed to acknowledge: AlreadyClosed');
    this.acks.push(id);
    this.sub.unacked.delete(id);
    this.sub.acked.add(id);
    return null;
  }

  negativeAcknowledge(message: PulsarMessage): void {
    const id = message.getMessageId().toString();
    this.broker.record('negativeAcknowledge', [id]);
    this.nacks.push(id);
    const held = this.sub.unacked.get(id);
    if (!held) return;
    this.sub.unacked.delete(id);
    setTimeout(() => {
      const again = held.message.redelivered();
      const policy = this.config.deadLetterPolicy;
      if (again.redeliveryCount > policy.maxRedeliverCount) {
        // As the broker's dead-letter policy does.
        this.broker.append(policy.deadLetterTopic, again.data, { ...again.properties, REAL_TOPIC: again.topic, ORIGIN_MESSAGE_ID: again.id });
        this.sub.acked.add(id);
        return;
      }
      this.sub.backlog.push(again);
      this.broker.wake(this.sub);
    }, Math.min(this.config.nAckRedeliverTimeoutMs, 20));
  }

  async close(): Promise<null> {
    this.broker.record('consumer.close', []);
    this.closed = true;
    // Unacked messages go back to the subscription for other consumers.
    for (const [id, held] of this.sub.unacked) {
      if (held.consumer !== this) continue;
      this.sub.unacked.delete(id);
      this.sub.backlog.push(held.message.redelivered());
    }
    this.broker.wake(this.sub);
    return null;
  }
}

export class FakeProducer implements PulsarProducer {
  closed = false;
  readonly sent: PulsarProducerMessage[] = [];

  constructor(
    private readonly broker: FakePulsar,
    readonly config: PulsarProducerConfig,
  ) {}

  async send(message: PulsarProducerMessage): Promise<PulsarMessageId> {
    this.broker.record('send', [this.config.topic, message]);
    if (this.closed) throw new Error('Failed to send message: AlreadyClosed');
    this.sent.push(message);
    const id = this.broker.append(this.config.topic, message.data, message.properties ?? {});
    return { toString: () => id };
  }

  async close(): Promise<null> {
    this.broker.record('producer.close', [this.config.topic]);
    this.closed = true;
    return null;
  }
}
