export * from './redis-server.js';
export * from './tiny-gguf.js';
export * from './fault-server.js';
export * from './fake-kv.js';
export * from './source-fakes.js';
