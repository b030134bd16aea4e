export * from './platform.js';
export * from './builtins.js';
