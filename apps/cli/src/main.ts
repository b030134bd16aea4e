#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { Client } from './client.js';
import { runDev } from './dev.js';
import { loadtest } from './loadtest.js';
import { runMongoWorker } from './mongo-worker.js';
import { pullModel } from '@llmq/backend-llama-cpp';

/** A numeric option's value; anything else stops the command with commander's own message. */
function number(value: string): number {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError(`expected a number, got "${value}"`);
  return n;
}

const program = new Command();
program
  .name('llmq')
  .description('A job queue for LLM work on Redis')
  .version((JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version, '-V, --version')
  .showHelpAfterError()
  .addOption(new Option('--url <url>', 'gateway URL').env('LLMQ_URL').default('http://127.0.0.1:8080'))
  .addOption(new Option('--api-key <key>', 'API key').env('LLMQ_API_KEY'));

const client = () => {
  const o = program.opts<{ url: string; apiKey?: string }>();
  return new Client({ url: o.url, apiKey: o.apiKey });
};
const print = (value: unknown) => console.log(JSON.stringify(value, null, 2));

program
  .command('dev')
  .description('run the gateway and a worker in one process (what `npm start` runs)')
  .option('-c, --config <path>', 'config file (default: $LLMQ_CONFIG or config/default.yaml)')
  .option('-p, --port <port>', 'gateway port (default: $PORT or 8080)', number)
  .action(async (opts: { config?: string; port?: number }) => runDev(opts));

program
  .command('enqueue')
  .description('enqueue a job; with --wait print the result, with --stream print tokens as they come')
  .argument('<model>', 'model name')
  .argument('[prompt]', 'prompt text (default: read stdin)')
  .option('--max-tokens <n>', 'max_tokens', number)
  .option('--temperature <t>', 'temperature', number)
  .option('--priority <n>', 'priority (1 = most urgent)', number)
  .option('--idempotency-key <key>', 'Idempotency-Key header')
  .option('--json <body>', 'extra JSON fields merged into the request')
  .option('-w, --wait', 'wait for the result')
  .option('-s, --stream', 'stream tokens to stdout')
  .action(async (model: string, prompt: string | undefined, o: { maxTokens?: number; temperature?: number; priority?: number; idempotencyKey?: string; json?: string; wait?: boolean; stream?: boolean }) => {
    const extra: unknown = o.json ? JSON.parse(o.json) : {};
    if (typeof extra !== 'object' || extra === null || Array.isArray(extra)) throw new InvalidArgumentError(`--json must be a JSON object, got ${o.json}`);
    // Standard input is the prompt only when neither the argument nor --json gives one.
    const fromJson = 'prompt' in extra || 'messages' in extra;
    const body = {
      model,
      ...(prompt !== undefined || !fromJson ? { prompt: prompt ?? readFileSync(0, 'utf8') } : {}),
      ...(o.maxTokens !== undefined ? { max_tokens: o.maxTokens } : {}),
      ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
      ...(o.priority !== undefined ? { priority: o.priority } : {}),
      ...extra,
    };
    const c = client();
    const job = await c.call('POST', '/v1/jobs', body, o.idempotencyKey ? { 'idempotency-key': o.idempotencyKey } : {});
    if (!o.wait && !o.stream) return print(job);
    // Ctrl-C stops watching, not the job: say how to stop that too.
    process.once('SIGINT', () => {
      process.stderr.write(`\njob ${job.id} keeps running; \`llmq cancel ${job.id}\` stops it\n`);
      process.exit(130);
    });
    /** The text printed of the current run's answer. */
    let printed = '';
    for await (const e of c.events(job.id)) {
      if (e.event === 'token' && o.stream) {
        process.stdout.write(e.data.text);
        printed += e.data.text;
      }
      // A retry or a fallback model starts the answer over: a terminal cannot take back what it
      // printed, so say where the new answer begins.
      if (e.event === 'status' && o.stream && printed !== '' && (e.data.will_retry || e.data.restarted)) {
        process.stdout.write('\n');
        process.stderr.write(e.data.will_retry ? `[attempt ${e.data.attempts} failed (${e.data.error?.code ?? 'error'}): the answer starts over]\n` : '[the answer starts over (a fallback model, or another worker)]\n');
        printed = '';
      }
      if (e.event === 'completed') {
        if (o.stream) {
          // A job done before its stream opened sends no tokens, only the stored result: print
          // what of it has not come as tokens.
          const text: string = e.data.result?.text ?? '';
          process.stdout.write(`${text.startsWith(printed) ? text.slice(printed.length) : `${printed ? '\n' : ''}${text}`}\n`);
        } else print(e.data);
        return;
      }
      if (e.event === 'failed' || e.event === 'cancelled') {
        if (printed !== '') process.stdout.write('\n');
        print(e.data);
        process.exitCode = 1;
        return;
      }
    }
  });

program.command('status').description('show a job').argument('<id>').action(async (id: string) => print(await client().call('GET', `/v1/jobs/${encodeURIComponent(id)}`)));
program.command('cancel').description('cancel a job').argument('<id>').action(async (id: string) => print(await client().call('DELETE', `/v1/jobs/${encodeURIComponent(id)}`)));
program.command('queues').description('job counts and worker processes per model queue').action(async () => print(await client().call('GET', '/v1/queues')));

const queue = program.command('queue').description('pause or resume a model queue');
queue.command('pause').argument('<model>').action(async (m: string) => print(await client().call('POST', `/v1/queues/${encodeURIComponent(m)}/pause`)));
queue.command('resume').argument('<model>').description('resume (e.g. after insufficient_quota paused it)').action(async (m: string) => print(await client().call('POST', `/v1/queues/${encodeURIComponent(m)}/resume`)));

const dlq = program.command('dlq').description('dead-letter queue');
dlq.command('list').option('--limit <n>', 'entries', number, 100).action(async (o: { limit: number }) => print(await client().call('GET', `/v1/dlq?limit=${o.limit}`)));
dlq.command('replay').argument('<id...>').description('put dead-lettered jobs back in their queues').action(async (ids: string[]) => {
  for (const id of ids) print(await client().call('POST', `/v1/dlq/${encodeURIComponent(id)}/replay`));
});

program
  .command('loadtest')
  .description('send N jobs (optionally paced) and report latency, time to first token and throughput')
  .requiredOption('-m, --model <model>', 'model')
  .option('-n, --count <n>', 'jobs', number, 100)
  .option('--rps <r>', 'requests per second (0 = unpaced)', number, 0)
  .option('-c, --concurrency <n>', 'jobs in flight', number, 16)
  .option('--prompt <text>', 'prompt', 'Say something about queues')
  .option('--max-tokens <n>', 'max_tokens', number)
  .action(async (o: { model: string; count: number; rps: number; concurrency: number; prompt: string; maxTokens?: number }) => {
    print(await loadtest(client(), o, (l) => console.error(l)));
  });

const model = program.command('model').description('local GGUF models');
model
  .command('pull')
  .description('download a GGUF model (needs internet), e.g. hf:bartowski/Phi-3.5-mini-instruct-GGUF:Q4_K_M')
  .argument('<uri>', 'hf:<user>/<repo>:<quant>, hf:<user>/<repo>/<file>.gguf, or an https URL')
  .option('-d, --dir <dir>', 'folder to save into', 'models')
  .action(async (uri: string, o: { dir: string }) => {
    console.error(`pulling ${uri} into ${o.dir}/`);
    let last = 0;
    let downloading = false;
    const path = await pullModel({
      uri,
      dir: o.dir,
      huggingFaceToken: process.env.HF_TOKEN,
      onProgress: ({ downloaded, total }) => {
        downloading = true;
        if (Date.now() - last < 1000) return;
        last = Date.now();
        const mb = (n: number) => (n / 1_048_576).toFixed(1);
        console.error(total ? `  ${mb(downloaded)} / ${mb(total)} MiB (${((downloaded / total) * 100).toFixed(0)}%)` : `  ${mb(downloaded)} MiB`);
      },
    });
    if (!downloading) console.error('already there (a complete GGUF file; delete it to download it again)');
    console.log(path);
  });

program
  .command('mongo-worker')
  .description("drop-in for the seed MongoDB worker: its flags (--parallel --model --mongo_connection_string --template --db_name --requests_collection --batch_size --timeout --min_len --max_len) and env vars (DB_URI DB_NAME REQUESTS_COLLECTION BATCH_SIZE WORKER_CNT TIMEOUT MIN_LEN MAX_LEN MODEL_NAME TEMPLATE); source, worker and write-back in one process")
  .allowUnknownOption(true)
  .helpOption(false)
  .argument('[args...]')
  .action(async (_args: string[], _options: unknown, command: Command) => {
    const at = process.argv.indexOf('mongo-worker');
    const args = process.argv.slice(at + 1);
    // The seed script's flags pass through as they are, so commander's own --help is off.
    if (args.includes('--help') || args.includes('-h')) return void process.stdout.write(command.helpInformation());
    await runMongoWorker(args);
  });

program.parseAsync(process.argv).catch((err: unknown) => {
  console.error(`llmq: ${(err as Error).message}`);
  process.exit(1);
});
