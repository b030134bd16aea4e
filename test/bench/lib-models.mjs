// What the llama benches share: the sizes of the models the test kit generates for them, and a median.

/** generateTinyGguf options per bench model (see bench:llama's header for what each row measures). */
export const BENCH_MODEL_SIZES = {
  tiny: {},
  small: { embeddingLength: 512, layers: 6, heads: 8, headsKv: 4, feedForwardLength: 1536 },
  medium: { embeddingLength: 768, layers: 10, heads: 12, headsKv: 4, feedForwardLength: 2048 },
};

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}
