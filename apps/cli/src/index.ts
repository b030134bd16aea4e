export { runDev } from './dev.js';
export { readSseEvents } from './sse-reader.js';
