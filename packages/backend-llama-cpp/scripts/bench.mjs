// Decode throughput of the llama-cpp backend: 1 and 4 parallel sequences, threads 1 and 2.
// Usage (after `npx tsc --build packages/backend-llama-cpp packages/testing`):
//   node packages/backend-llama-cpp/scripts/bench.mjs [model.gguf ...]
// Without arguments it benchmarks the generated tiny GGUF (and LLMQ_TEST_GGUF when set).
// BENCH_THREADS (e.g. "2") and BENCH_ROUNDS (default 3) narrow or lengthen the run.
import { cpus, loadavg } from 'node:os';
import { llamaCppBackend } from '../dist/index.js';
import { generateTinyGguf } from '../../testing/dist/tiny-gguf.js';

const TOKENS = 128;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const THREADS = (process.env.BENCH_THREADS ?? '1,2').split(',').map(Number);
const logger = { debug() {}, info() {}, warn() {}, error: (o, m) => console.error(m, o), child: () => logger };
const ctx = { logger, signal: new AbortController().signal, configDir: process.cwd(), env: {} };

const models = process.argv.slice(2);
if (models.length === 0) {
  models.push(await generateTinyGguf());
  if (process.env.LLMQ_TEST_GGUF) models.push(process.env.LLMQ_TEST_GGUF);
}

console.log(`cpus: ${cpus().length}, load average before: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
for (const model of models) {
  for (const threads of THREADS) {
    for (const sequences of [1, 4]) {
      const backend = await llamaCppBackend.create(
        { name: 'bench', config: { model_path: model, context_size: 512, threads, gpu: false }, concurrency: sequences },
        ctx,
      );
      const job = (i, max_tokens) =>
        backend.generate({
          jobId: String(i),
          attempt: 1,
          model: 'bench',
          request: { model: 'bench', prompt: `Benchmark prompt number ${i}.`, max_tokens, temperature: 0 },
          signal: new AbortController().signal,
          logger,
          onToken() {},
        });
      await Promise.all(Array.from({ length: sequences }, (_, i) => job(i, 8)));
      const rates = [];
      for (let r = 0; r < ROUNDS; r++) {
        const t = performance.now();
        const outs = await Promise.all(Array.from({ length: sequences }, (_, i) => job(100 + i, TOKENS)));
        const tokens = outs.reduce((n, o) => n + o.usage.completion_tokens, 0);
        rates.push(tokens / ((performance.now() - t) / 1000));
      }
      rates.sort((a, b) => a - b);
      const median = rates[Math.floor(rates.length / 2)];
      console.log(
        `${model.split('/').pop()}  threads=${threads}  sequences=${sequences}  ${TOKENS} tokens each: ` +
          `${median.toFixed(0)} tokens/s in total (${(median / sequences).toFixed(0)} per sequence; rounds sorted ${rates.map((x) => x.toFixed(0)).join(', ')}; ` +
          `load ${loadavg()[0].toFixed(2)})`,
      );
      await backend.close();
    }
  }
}
console.log(`load average after: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
