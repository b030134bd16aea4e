export * from './run.js';
export * from './metrics-server.js';
