export { runDev } from './dev.js';
