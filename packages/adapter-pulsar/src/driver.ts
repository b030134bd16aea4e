import { LlmqError, type Logger } from '@llmq/core';
import { resolveEnv, type PulsarConnectionConfig } from './config.js';

/*
 * The part of pulsar-client the adapters use. pulsar-client is an optional native dependency,
 * so its types are not imported: these interfaces mirror its index.d.ts, and the tests drive the
 * adapters through a recording fake module of exactly this surface.
 */

export interface PulsarMessageId {
  toString(): string;
}

export interface PulsarMessage {
  getTopicName(): string;
  getProperties(): Record<string, string>;
  getData(): Buffer;
  getMessageId(): PulsarMessageId;
  getPublishTimestamp(): number;
  getRedeliveryCount(): number;
}

export interface PulsarConsumerConfig {
  topic: string;
  subscription: string;
  subscriptionType: 'Shared';
  subscriptionInitialPosition: 'Earliest' | 'Latest';
  ackTimeoutMs: number;
  nAckRedeliverTimeoutMs: number;
  receiverQueueSize: number;
  consumerName?: string;
  deadLetterPolicy: { deadLetterTopic: string; maxRedeliverCount: number; initialSubscriptionName: string };
}

export interface PulsarConsumer {
  /** Rejects on timeout ("Failed to receive message: TimeOut"). */
  receive(timeoutMs: number): Promise<PulsarMessage>;
  acknowledge(message: PulsarMessage): Promise<unknown>;
  negativeAcknowledge(message: PulsarMessage): void;
  close(): Promise<unknown>;
}

export interface PulsarProducerMessage {
  data: Buffer;
  properties?: Record<string, string>;
  eventTimestamp?: number;
  partitionKey?: string;
}

export interface PulsarProducer {
  send(message: PulsarProducerMessage): Promise<PulsarMessageId>;
  close(): Promise<unknown>;
}

export interface PulsarProducerConfig {
  topic: string;
  sendTimeoutMs: number;
  blockIfQueueFull?: boolean;
}

export interface PulsarClient {
  subscribe(config: PulsarConsumerConfig): Promise<PulsarConsumer>;
  createProducer(config: PulsarProducerConfig): Promise<PulsarProducer>;
  close(): Promise<unknown>;
}

export interface PulsarClientConfig {
  serviceUrl: string;
  operationTimeoutSeconds: number;
  authentication?: unknown;
  tlsTrustCertsFilePath?: string;
  log?: (level: number, file: string, line: number, message: string) => void;
}

/** The module object `import('pulsar-client')` gives (its default export: it is CommonJS). */
export interface PulsarModule {
  Client: new (config: PulsarClientConfig) => PulsarClient;
  AuthenticationToken: new (params: { token: string }) => unknown;
}

export const PULSAR_INSTALL_HELP =
  'Install it in the llmq install with `npm install pulsar-client`, with the Pulsar C++ client library present ' +
  '(libpulsar; where npm finds no prebuilt addon for the platform it builds one from source and also needs the library\'s headers). ' +
  'See https://pulsar.apache.org/docs/client-libraries-node/ and https://pulsar.apache.org/docs/client-libraries-cpp-setup/.';

const SPECIFIER = 'pulsar-client';

function isNotInstalled(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : '';
  return (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') && message.includes(SPECIFIER);
}

/**
 * Loads pulsar-client on first use. It is an optionalDependency (a native addon), so the rest of
 * llmq imports this package's definitions without it; only creating a Pulsar source or sink
 * needs it, and fails with ERR_DEPENDENCY_MISSING saying how to install it.
 */
export async function loadPulsarClient(importer: (specifier: string) => Promise<unknown> = (s) => import(s)): Promise<PulsarModule> {
  let loaded: unknown;
  try {
    loaded = await importer(SPECIFIER);
  } catch (err) {
    if (isNotInstalled(err)) {
      throw new LlmqError('ERR_DEPENDENCY_MISSING', `pulsar-client is not installed, and the Pulsar source and sink need it. ${PULSAR_INSTALL_HELP}`, { cause: err });
    }
    const detail = err instanceof Error ? err.message : String(err);
    throw new LlmqError(
      'ERR_DEPENDENCY_MISSING',
      `pulsar-client is installed but could not be loaded (${detail}); its native addon or the Pulsar C++ client library is missing or does not match. ${PULSAR_INSTALL_HELP}`,
      { cause: err },
    );
  }
  const mod = ((loaded as { default?: unknown }).default ?? loaded) as Partial<PulsarModule>;
  if (typeof mod.Client !== 'function' || typeof mod.AuthenticationToken !== 'function') {
    throw new LlmqError('ERR_DEPENDENCY_MISSING', `pulsar-client loaded but does not export Client and AuthenticationToken; install a 1.x release. ${PULSAR_INSTALL_HELP}`);
  }
  return mod as PulsarModule;
}

/** Where the adapters get pulsar-client from; tests pass a fake module. */
export type PulsarModuleLoader = () => Promise<PulsarModule>;

const LOG_LEVELS = ['debug', 'debug', 'warn', 'error'] as const;

/** A client from connection config: service URL and token from the environment, C++ logs into the logger. */
export function createPulsarClient(
  mod: PulsarModule,
  config: PulsarConnectionConfig,
  env: Readonly<Record<string, string | undefined>>,
  logger: Logger,
  where: string,
): PulsarClient {
  const serviceUrl = config.service_url ?? resolveEnv(config.service_url_env ?? '', env, `${where}.service_url_env`);
  const token = config.token_env === undefined ? undefined : resolveEnv(config.token_env, env, `${where}.token_env`);
  return new mod.Client({
    serviceUrl,
    operationTimeoutSeconds: Math.ceil(config.operation_timeout_ms / 1000),
    ...(token === undefined ? {} : { authentication: new mod.AuthenticationToken({ token }) }),
    ...(config.tls_trust_certs_file_path === undefined ? {} : { tlsTrustCertsFilePath: config.tls_trust_certs_file_path }),
    log: (level, file, line, message) => {
      logger[LOG_LEVELS[level] ?? 'debug']({ pulsar: `${file}:${line}` }, message);
    },
  });
}

/** Whether a receive rejected only because nothing arrived in time. */
export function isReceiveTimeout(err: unknown): boolean {
  return err instanceof Error && /timeout/i.test(err.message);
}
