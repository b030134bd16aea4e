// npm run bench:mmap — the llama-cpp backend's `mmap` option, measured: node-llama-cpp alone (no
// llmq), one process holding the same GGUF loaded twice, once mapped from the file (`mmap: true`,
// llama.cpp's default, and what node-llama-cpp's `useMmap: "auto"` does on the CPU) and once read
// into the process's own memory (`mmap: false`, llmq's default). For each model and N: rounds of N
// sequences × BENCH_TOKENS tokens, alternating which load goes first, each right after a one-token
// request on the same load; then, on the small model, the time of a prompt after its thread has
// idled 0, 200 and 1,000 ms (a worker between jobs).
// Where a tensor starts matters to a mapped file: GGUF aligns tensors to 32 bytes, and the test kit's
// files with that default have every tensor 32 bytes past a 64-byte cache line (bench:llama's models
// are these). So each generated model runs twice, as written with alignment 32 and with 64 (every
// tensor on a line), and the table says which. A real GGUF's tensors start on a line or off it
// depending on the length of its header.
// Models: as bench:llama (BENCH_GGUF, run as they are, or BENCH_SIZES of tiny, small, medium).
// Knobs: BENCH_ALIGNS (32,64), BENCH_NS (1,8), BENCH_ROUNDS (8), BENCH_TOKENS (64),
// BENCH_THREADS (physical cores − 1, at least 1).
import { mkdirSync, writeFileSync } from 'node:fs';
import { getLlama, LlamaLogLevel } from 'node-llama-cpp';
import { generateTinyGguf } from '@llmq/testing';
import { BENCH_MODEL_SIZES, benchModels, benchThreads, median, promptTokens } from './lib-models.mjs';

const env = process.env;
const NS = (env.BENCH_NS ?? '1,8').split(',').map(Number);
const ROUNDS = Number(env.BENCH_ROUNDS ?? 8);
const TOKENS = Number(env.BENCH_TOKENS ?? 64);
const THREADS = benchThreads(env);
const GAPS = [0, 200, 1000];
const ALIGNS = (env.BENCH_ALIGNS ?? '32,64').split(',').map(Number);
const models = await benchModels(env, { alignments: ALIGNS });

const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, maxThreads: THREADS, build: 'never' });
console.log(`llmq mmap bench — CPU, threads ${THREADS}, ${TOKENS} tokens/request, greedy, ${ROUNDS} paired rounds; "read" is mmap: false`);

/** Loads the file both ways; returns each load's model, its milliseconds, and a context of n sequences. */
async function loadBoth(path, n) {
  const sides = {};
  for (const [name, useMmap] of [['mapped', true], ['read', false]]) {
    const started = performance.now();
    const model = await llama.loadModel({ modelPath: path, gpuLayers: 0, useMmap });
    const loadMs = performance.now() - started;
    const context = await model.createContext({ contextSize: 512, sequences: n, threads: THREADS });
    sides[name] = { model, context, loadMs, sequences: Array.from({ length: n }, () => context.getSequence()) };
  }
  return sides;
}

let prompts = 0;
/** N requests at once on one load: tokens/s, and the first request's prompt milliseconds. */
async function round(side, tokens = TOKENS) {
  const { model, sequences } = side;
  await Promise.all(sequences.map((s) => s.clearHistory()));
  const started = performance.now();
  let firstPromptMs;
  const counts = await Promise.all(
    sequences.map(async (sequence) => {
      const prompt = promptTokens(model, `${prompts++} Once upon a time, in a queue far away,`);
      const iterator = sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true });
      let count = 0;
      try {
        while (count < tokens) {
          const next = await iterator.next();
          if (next.done) break;
          firstPromptMs ??= performance.now() - started;
          count++;
        }
      } finally {
        await iterator.return();
      }
      return count;
    }),
  );
  return { tps: counts.reduce((a, b) => a + b, 0) / ((performance.now() - started) / 1000), firstPromptMs };
}

async function dispose(sides) {
  for (const side of Object.values(sides)) {
    await side.context.dispose();
    await side.model.dispose();
  }
}

const rows = [];
for (const { label, path, align } of models) {
  for (const n of NS) {
    const sides = await loadBoth(path, n);
    const tps = { mapped: [], read: [] };
    const ratios = [];
    for (let r = 0; r < ROUNDS; r++) {
      const got = {};
      for (const name of r % 2 ? ['mapped', 'read'] : ['read', 'mapped']) {
        await round(sides[name], 1);
        got[name] = (await round(sides[name])).tps;
        tps[name].push(got[name]);
      }
      ratios.push(got.read / got.mapped);
    }
    ratios.sort((a, b) => a - b);
    const row = { model: label, align, n, mapped: median(tps.mapped), read: median(tps.read), ratio: median(ratios), min: ratios[0], max: ratios.at(-1), loadMs: { mapped: sides.mapped.loadMs, read: sides.read.loadMs } };
    rows.push(row);
    console.log(`  ${label} (align ${align}) N=${n}: mapped ${row.mapped.toFixed(1)} tok/s, read ${row.read.toFixed(1)} tok/s, read/mapped per round ${row.ratio.toFixed(2)} (${row.min.toFixed(2)}–${row.max.toFixed(2)}); load ms mapped ${row.loadMs.mapped.toFixed(0)}, read ${row.loadMs.read.toFixed(0)}`);
    await dispose(sides);
  }
}

// A prompt after idling: one sequence, the small model as bench:llama has it (or the first given), each gap 6 times per load.
const idle = [];
{
  const path = env.BENCH_GGUF ? models[0].path : await generateTinyGguf(BENCH_MODEL_SIZES.small);
  const sides = await loadBoth(path, 1);
  for (const gap of GAPS) {
    const ms = { mapped: [], read: [] };
    for (let i = 0; i < 6; i++) {
      for (const name of i % 2 ? ['mapped', 'read'] : ['read', 'mapped']) {
        await round(sides[name], 2);
        await new Promise((resolve) => setTimeout(resolve, gap));
        ms[name].push((await round(sides[name], 1)).firstPromptMs);
      }
    }
    idle.push({ gap, mapped: median(ms.mapped), read: median(ms.read) });
  }
  await dispose(sides);
}

console.log(`\nmodel    align  N   mapped tok/s   read tok/s   read/mapped per round (range)   load ms mapped / read`);
for (const r of rows) {
  console.log(`${r.model.padEnd(9)}${String(r.align).padEnd(7)}${String(r.n).padEnd(4)}${r.mapped.toFixed(1).padStart(12)}${r.read.toFixed(1).padStart(13)}${`${r.ratio.toFixed(2)} (${r.min.toFixed(2)}–${r.max.toFixed(2)})`.padStart(33)}${`${r.loadMs.mapped.toFixed(0)} / ${r.loadMs.read.toFixed(0)}`.padStart(24)}`);
}
console.log(`\nprompt ms after the decoding thread idled (${env.BENCH_GGUF ? models[0].label : 'small'}, N = 1, median of 6): ${idle.map((x) => `${x.gap} ms idle: mapped ${x.mapped.toFixed(1)}, read ${x.read.toFixed(1)}`).join('; ')}`);
await llama.dispose();
mkdirSync('bench-results', { recursive: true });
writeFileSync('bench-results/mmap.json', JSON.stringify({ bench: 'mmap', threads: THREADS, tokens: TOKENS, rounds: ROUNDS, rows, idle, at: new Date().toISOString() }, null, 2));
console.log('written bench-results/mmap.json');
