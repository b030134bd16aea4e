/**
 * Child process of {@link probeGpu}: starts llama.cpp on the GPU named in argv[2], loads the model
 * file argv[3] with one layer on it, decodes one token, prints "decoded" and exits 0. A GPU whose
 * binary loads can still fail at its first kernel (e.g. PTX from a newer CUDA toolkit than the
 * driver), and llama.cpp then aborts the whole process: here that costs this child, not the worker.
 * Exit codes say whose fault a failure is: 3, no binary for this GPU runs here; 2, the model file
 * did not load (the worker's own load reports that); 1, anything else.
 */
import { getLlama, LlamaLogLevel, NoBinaryFoundError, type LlamaGpuType } from 'node-llama-cpp';
import { PROBE_EXIT } from './gpu-check.js';

const [gpuArg = '', modelPath = ''] = process.argv.slice(2);
const gpu = (gpuArg === 'false' ? false : gpuArg) as LlamaGpuType;
// Never outlive the parent: its IPC channel closes when it dies (it kills this child on a timeout
// or when it exits).
process.on('disconnect', () => process.exit(PROBE_EXIT.other));

const fail = (code: number, message: string): never => {
  process.stderr.write(`${message}\n`);
  process.exit(code);
};
const llama = await getLlama({
  gpu,
  build: 'never',
  progressLogs: false,
  logLevel: LlamaLogLevel.error,
  logger: (_level, message) => void process.stderr.write(message.endsWith('\n') ? message : `${message}\n`),
}).catch((err: unknown) =>
  err instanceof NoBinaryFoundError
    ? fail(PROBE_EXIT.noBinary, `no node-llama-cpp binary for ${gpuArg} runs on this machine`)
    : fail(PROBE_EXIT.other, String((err as Error).message ?? err)),
);
if (llama.gpu !== gpu) fail(PROBE_EXIT.noBinary, `node-llama-cpp started ${String(llama.gpu)} when asked for ${gpuArg}`);
// node-llama-cpp's own choice of mapping, whatever the worker's `mmap`: this short-lived child only
// needs one layer to decode a token, and a mapped file loads fastest.
const model = await llama
  .loadModel({ modelPath, gpuLayers: gpu === false ? 0 : 1 })
  .catch((err: unknown) => fail(PROBE_EXIT.modelLoad, `the model did not load: ${String((err as Error).message ?? err)}`));
try {
  const context = await model.createContext({ contextSize: 128, sequences: 1 });
  const iterator = context.getSequence().evaluate(model.tokenize('Hello'), { temperature: 0 });
  await iterator.next();
  await iterator.return();
} catch (err) {
  fail(PROBE_EXIT.other, String((err as Error).message ?? err));
}
// Exit only once the pipe has the line: the parent counts it even if llama.cpp crashes on the way out.
process.stdout.write('decoded\n', () => process.exit(0));
