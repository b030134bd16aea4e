/** Process-wide counters of what the llama-cpp backend has loaded (for tests, /metrics and logs). */
export interface LlamaCppStats {
  /** llama.cpp runtimes started (one per GPU setting, kept for the life of the process). */
  llamaInits: number;
  /** GGUF files loaded; jobs and backends sharing a file and its options share one load. */
  modelLoads: number;
  /** Contexts created (one per backend instance). */
  contextsCreated: number;
  liveModels: number;
  liveContexts: number;
}

/** @internal Updated by the runtime; read through {@link llamaCppStats}. */
export const counters: LlamaCppStats = {
  llamaInits: 0,
  modelLoads: 0,
  contextsCreated: 0,
  liveModels: 0,
  liveContexts: 0,
};

export function llamaCppStats(): LlamaCppStats {
  return { ...counters };
}
