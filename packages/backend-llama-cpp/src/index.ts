export { llamaCppBackend, llamaCppCapabilities } from './definition.js';
export {
  llamaCppConfigSchema,
  resolveLlamaCppOptions,
  DEFAULT_CONTEXT_SIZE,
  LLAMA_GPU_SETTINGS,
  type LlamaCppConfig,
  type ResolvedLlamaCppOptions,
} from './config.js';
export { llamaCppStats, type LlamaCppStats } from './stats.js';
export { physicalCoreCount } from './threads.js';
export { BatchJoiner } from './batch-join.js';
export { SequenceOrder } from './batch-order.js';
export { checkModelFile } from './model-file.js';
export {
  loadTemplate,
  compilePlainTemplate,
  compileJinjaTemplate,
  segmentsText,
  type PromptTemplate,
  type PromptSegment,
  type TemplateTokens,
  type TemplateInput,
} from './templates.js';
export { pullModel, type PullModelOptions } from './pull.js';
export type { LlamaCppBackend, PreparedPrompt } from './backend.js';
