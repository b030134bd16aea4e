export { textSynthBackend, TextSynthBackend } from './textsynth-backend.js';
export { textSynthConfigSchema, textSynthCapabilities, resolveServers, TEXTSYNTH_PARAMS, MAX_STOP, type TextSynthConfig, type ResolvedServer } from './config.js';
export { ServerPool, type PoolStats, type ServerStats, type Lease } from './server-pool.js';
export { toChat, toRequest, readJsonStream, httpError } from './protocol.js';
