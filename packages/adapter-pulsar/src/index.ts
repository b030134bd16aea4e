export { pulsarSource, createPulsarSource, PulsarSource, pulsarJobId } from './source.js';
export type { PulsarRef, PulsarSourceDeps, PulsarSourceStatus } from './source.js';
export { pulsarSink, createPulsarSink, PulsarSink } from './sink.js';
export type { PulsarReply, PulsarSinkDeps } from './sink.js';
export { createPulsarUsageProducer, sendUsageRecord } from './usage.js';
export type { PulsarUsageProducer } from './usage.js';
export { pulsarAcks, settlePulsarJob, PulsarAckRegistry } from './ack-registry.js';
export {
  pulsarSourceConfigSchema,
  pulsarSinkConfigSchema,
  pulsarUsageConfigSchema,
  deadLetterOf,
  type PulsarSourceConfig,
  type PulsarSourceConfigInput,
  type PulsarSinkConfig,
  type PulsarSinkConfigInput,
  type PulsarUsageConfig,
  type PulsarUsageConfigInput,
} from './config.js';
export { loadPulsarClient, PULSAR_INSTALL_HELP } from './driver.js';
export type { PulsarModule, PulsarModuleLoader, PulsarClient, PulsarConsumer, PulsarProducer, PulsarMessage } from './driver.js';
