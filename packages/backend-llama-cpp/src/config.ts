import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { physicalCoreCount } from './threads.js';

/** Names of templates in `templates_dir`: the same rule as a job's `template` field. */
export const templateNameSchema = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-" only, not starting with "."');

/** The `gpu` settings besides `false` (the CPU only). */
export const LLAMA_GPU_SETTINGS = ['auto', 'cuda', 'vulkan', 'metal'] as const;

/** The `options` block of a model with `backend: llama-cpp`. Defaults are applied by {@link resolveLlamaCppOptions}. */
export const llamaCppConfigSchema = z.strictObject({
  /**
   * The GGUF file; a relative path is resolved against the config file's directory.
   */
  model_path: z.string().min(1),
  /**
   * Where `llmq model pull` fetches the file from (`hf:<user>/<repo>/<file>.gguf`, `hf:<user>/<repo>:<quant>`
   * or an `https://` URL). Only used to name the exact command when the file is missing.
   * @defaultValue none
   */
  model_uri: z.string().min(1).optional(),
  /**
   * Context size of each sequence, in tokens (prompt + completion of one job). llama.cpp may round
   * it up (to a multiple of 256). Memory for the KV cache is `concurrency × context_size`.
   * @defaultValue 4096, capped at the context the model was trained on
   */
  context_size: z.int().min(16).max(1_048_576).optional(),
  /**
   * CPU threads for decoding. More threads than physical cores makes llama.cpp much slower
   * (measured ~10x on a 2-core machine), so the default is not the logical CPU count.
   * @defaultValue the number of physical cores available to the process
   */
  threads: z.int().min(1).max(1024).optional(),
  /**
   * GPU backend: `"auto"` uses CUDA, Vulkan or Metal when one works and falls back to the CPU;
   * `false` never tries a GPU.
   * @defaultValue "auto"
   */
  gpu: z.union([z.enum(LLAMA_GPU_SETTINGS), z.literal(false)], { error: `expected one of ${LLAMA_GPU_SETTINGS.map((g) => `"${g}"`).join(', ')} or false` }).optional(),
  /**
   * Layers to offload to the GPU: a number, `"max"`, or `"auto"` (as many as fit).
   * @defaultValue "auto"
   */
  gpu_layers: z.union([z.int().min(0).max(100_000), z.enum(['auto', 'max'])], { error: 'expected a whole number of layers (0 to 100000), "auto" or "max"' }).optional(),
  /**
   * Tokens decoded in one batch (all sequences together).
   * @defaultValue node-llama-cpp's default (512, or the context size when smaller)
   */
  batch_size: z.int().min(1).max(1_048_576).optional(),
  /**
   * `true` maps the GGUF file into memory (llama.cpp's default, and what node-llama-cpp's `"auto"`
   * does on the CPU); `false` reads it into the worker's own memory. Reading takes longer at start-up
   * and two processes on one host no longer share the file's pages, but on this project's CI machine
   * decoding on the CPU was faster for every generated test model larger than the CPU's caches, and a
   * prompt after a second of idle no longer paid 25–60 ms more (`npm run bench:mmap`; figures in the
   * README). Measured on the CPU only. A model larger than the host's free memory needs `true` (a
   * mapped file can be paged from disk; a read one cannot).
   * @defaultValue false
   */
  mmap: z.boolean().optional(),
  /**
   * Folder of named templates (`<name>.template`, `<name>.jinja`); relative to the config file's directory.
   * @defaultValue "templates"
   */
  templates_dir: z.string().min(1).optional(),
  /**
   * Named template every job of this model is rendered through unless the job names its own.
   * @defaultValue none (chat uses the model's own chat template; `prompt` is raw completion)
   */
  template: templateNameSchema.optional(),
  /**
   * A Hugging Face style Jinja chat template used for `messages` instead of the one in the GGUF.
   * @defaultValue none (the GGUF's `tokenizer.chat_template`)
   */
  chat_template: z.string().min(1).max(1_000_000).optional(),
});
export type LlamaCppConfig = z.infer<typeof llamaCppConfigSchema>;

/** Options with every default applied (the one place defaults live). */
export interface ResolvedLlamaCppOptions {
  modelPath: string;
  modelUri: string | undefined;
  /** Requested context per sequence; `undefined` means 4096 capped at the training context. */
  contextSize: number | undefined;
  threads: number;
  gpu: (typeof LLAMA_GPU_SETTINGS)[number] | false;
  gpuLayers: number | 'auto' | 'max';
  batchSize: number | undefined;
  mmap: boolean;
  templatesDir: string;
  template: string | undefined;
  chatTemplate: string | undefined;
  /** Parallel sequences in the one context: the worker's concurrency for this model. */
  sequences: number;
}

/** Context per sequence when the config does not say. */
export const DEFAULT_CONTEXT_SIZE = 4096;

/** The model's own `templates_dir`, else the config's top-level one; relative to the config file's directory. */
export function templatesDirOf(config: Pick<LlamaCppConfig, 'templates_dir'>, ctx: { configDir: string; templatesDir?: string | undefined }): string {
  if (config.templates_dir !== undefined) return resolve(ctx.configDir, config.templates_dir);
  return ctx.templatesDir ?? resolve(ctx.configDir, 'templates');
}

export function resolveLlamaCppOptions(
  config: LlamaCppConfig,
  ctx: { configDir: string; templatesDir?: string | undefined },
  concurrency: number,
): ResolvedLlamaCppOptions {
  const fromConfigDir = (p: string) => (isAbsolute(p) ? p : resolve(ctx.configDir, p));
  return {
    modelPath: fromConfigDir(config.model_path),
    modelUri: config.model_uri,
    contextSize: config.context_size,
    threads: config.threads ?? physicalCoreCount(),
    gpu: config.gpu ?? 'auto',
    gpuLayers: config.gpu_layers ?? 'auto',
    batchSize: config.batch_size,
    mmap: config.mmap ?? false,
    templatesDir: templatesDirOf(config, ctx),
    template: config.template,
    chatTemplate: config.chat_template,
    sequences: Math.max(1, Math.floor(concurrency)),
  };
}
