// What the llama benches share: the models they run, the threads they give llama.cpp, a prompt's
// tokens, and a median.
import { physicalCoreCount } from '@llmq/backend-llama-cpp';
import { generateTinyGguf } from '@llmq/testing';

/** generateTinyGguf options per bench model (see bench:llama's header for what each row measures). */
export const BENCH_MODEL_SIZES = {
  tiny: {},
  small: { embeddingLength: 512, layers: 6, heads: 8, headsKv: 4, feedForwardLength: 1536 },
  medium: { embeddingLength: 768, layers: 10, heads: 12, headsKv: 4, feedForwardLength: 2048 },
};

/**
 * The models to run: BENCH_GGUF (comma-separated paths, as they are), else BENCH_SIZES of the
 * generated ones (tiny,small,medium), each written once per `alignments` entry (the test kit's
 * default when none is given).
 */
export async function benchModels(env, { alignments = [undefined] } = {}) {
  if (env.BENCH_GGUF) return env.BENCH_GGUF.split(',').map((path) => ({ label: path.split('/').pop(), path, align: 'as is' }));
  const wanted = (env.BENCH_SIZES ?? 'tiny,small,medium').split(',').flatMap((label) => alignments.map((alignment) => ({ label, alignment })));
  return Promise.all(
    wanted.map(async ({ label, alignment }) => ({
      label,
      align: alignment ?? 32,
      path: await generateTinyGguf({ ...BENCH_MODEL_SIZES[label], ...(alignment === undefined ? {} : { alignment }) }),
    })),
  );
}

/**
 * BENCH_THREADS, else one core fewer than the physical ones (at least 1): one core is left to the
 * rest (gateway, Redis, the load client, the worker's own JS), on both sides of a comparison.
 * llama.cpp's threads spin-wait for each other, so with every core decoding, whatever else runs on
 * the machine stalls a whole batch (on a 2-core machine, 2 threads measured 10–40× slower than 1).
 */
export function benchThreads(env) {
  return Number(env.BENCH_THREADS ?? Math.max(1, physicalCoreCount() - 1));
}

/** A prompt's tokens for sequence.evaluate, with the beginning-of-sequence token when the model uses one. */
export function promptTokens(model, text) {
  return [...(model.tokens.shouldPrependBosToken ? [model.tokens.bos] : []), ...model.tokenize(text)];
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
