/**
 * Child process of {@link probeGpu}: starts llama.cpp on the GPU named in argv[2], loads the model
 * file argv[3] with one layer on it, decodes one token, and exits 0. A GPU whose binary loads can
 * still fail at its first kernel (e.g. PTX from a newer CUDA toolkit than the driver), and llama.cpp
 * then aborts the whole process: here that costs this child, not the worker.
 */
import { getLlama, LlamaLogLevel, type LlamaGpuType } from 'node-llama-cpp';

const [gpuArg = '', modelPath = ''] = process.argv.slice(2);
const gpu = (gpuArg === 'false' ? false : gpuArg) as LlamaGpuType;
try {
  const llama = await getLlama({
    gpu,
    build: 'never',
    progressLogs: false,
    logLevel: LlamaLogLevel.error,
    logger: (_level, message) => void process.stderr.write(message.endsWith('\n') ? message : `${message}\n`),
  });
  if (llama.gpu !== gpu) throw new Error(`node-llama-cpp started ${String(llama.gpu)} when asked for ${gpuArg}`);
  const model = await llama.loadModel({ modelPath, gpuLayers: gpu === false ? 0 : 1 });
  const context = await model.createContext({ contextSize: 128, sequences: 1 });
  const tokens = [...(model.tokens.bos === null ? [] : [model.tokens.bos]), ...model.tokenize('Hello')];
  const iterator = context.getSequence().evaluate(tokens, { temperature: 0 });
  await iterator.next();
  await iterator.return();
  process.stdout.write('decoded\n');
  process.exit(0);
} catch (err) {
  const message = (err as Error).name === 'NoBinaryFoundError' ? `no node-llama-cpp binary for ${gpuArg} runs on this machine` : ((err as Error).message ?? String(err));
  process.stderr.write(`${message}\n`);
  process.exit(1);
}
