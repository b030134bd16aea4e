import { basename } from 'node:path';
import { LlmqError } from '@llmq/core';
import type { MongoSourceConfigInput } from './config.js';

/**
 * What the seed MongoDB worker's command line and environment mean in llmq terms. `source`
 * is a `sources:` entry; `model`, `concurrency` and `timeout_ms` go on the model entry.
 */
export interface SeedWorkerFragment {
  source: { type: 'mongodb'; options: MongoSourceConfigInput };
  /** Model name (`--model` / MODEL_NAME). */
  model: string;
  /** Jobs at once (`--parallel` / WORKER_CNT). */
  concurrency?: number;
  /** Per-job limit (`--timeout` / TIMEOUT, given in seconds). */
  timeout_ms?: number;
  /** `--min_len` / MIN_LEN. */
  min_tokens?: number;
  /** `--max_len` / MAX_LEN. */
  max_tokens?: number;
  /** Template name (`--template` / TEMPLATE), without any directory part. */
  template?: string;
}

interface Option {
  flag: string;
  env: string;
  kind: 'string' | 'int' | 'seconds';
  min?: number;
  max?: number;
}

const OPTIONS = {
  parallel: { flag: 'parallel', env: 'WORKER_CNT', kind: 'int', min: 1, max: 10_000 },
  model: { flag: 'model', env: 'MODEL_NAME', kind: 'string' },
  url: { flag: 'mongo_connection_string', env: 'DB_URI', kind: 'string' },
  template: { flag: 'template', env: 'TEMPLATE', kind: 'string' },
  db: { flag: 'db_name', env: 'DB_NAME', kind: 'string' },
  collection: { flag: 'requests_collection', env: 'REQUESTS_COLLECTION', kind: 'string' },
  batchSize: { flag: 'batch_size', env: 'BATCH_SIZE', kind: 'int', min: 1, max: 10_000 },
  timeout: { flag: 'timeout', env: 'TIMEOUT', kind: 'seconds' },
  minLen: { flag: 'min_len', env: 'MIN_LEN', kind: 'int', min: 0, max: 1_000_000 },
  maxLen: { flag: 'max_len', env: 'MAX_LEN', kind: 'int', min: 1, max: 1_000_000 },
} as const satisfies Record<string, Option>;

type Key = keyof typeof OPTIONS;

function invalid(message: string, param: string): LlmqError {
  return new LlmqError('ERR_CONFIG_INVALID', `mongo-worker: ${message}`, { param });
}

const FLAGS = new Map<string, Key>(
  (Object.entries(OPTIONS) as [Key, Option][]).flatMap(([key, o]) => [
    [o.flag, key],
    [o.flag.replace(/_/g, '-'), key],
  ]),
);

/** `--flag value` and `--flag=value` (underscores or dashes), each flag once. */
function readFlags(argv: readonly string[]): Map<Key, string> {
  const found = new Map<Key, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--')) throw invalid(`unexpected argument "${arg}" (flags look like --batch_size 10)`, arg);
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const key = FLAGS.get(name);
    if (key === undefined) {
      const known = Object.values(OPTIONS)
        .map((o) => `--${o.flag}`)
        .join(' ');
      throw invalid(`unknown flag --${name} (known: ${known})`, `--${name}`);
    }
    let value: string | undefined;
    if (eq >= 0) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      if (value === undefined || value.startsWith('--')) throw invalid(`--${name} needs a value`, `--${name}`);
      i++;
    }
    if (found.has(key)) throw invalid(`--${OPTIONS[key].flag} is given twice`, `--${OPTIONS[key].flag}`);
    found.set(key, value);
  }
  return found;
}

function parseValue(option: Option, raw: string, from: string): string | number {
  const value = raw.trim();
  if (option.kind === 'string') {
    if (value === '') throw invalid(`${from} is empty`, from);
    return value;
  }
  if (option.kind === 'seconds') {
    if (!/^\d+(\.\d+)?$/.test(value)) throw invalid(`${from} must be a number of seconds, got "${raw}"`, from);
    const ms = Math.round(Number(value) * 1000);
    if (ms < 1 || ms > 86_400_000) throw invalid(`${from} must be between 0.001 and 86400 seconds, got "${raw}"`, from);
    return ms;
  }
  if (!/^\d+$/.test(value)) throw invalid(`${from} must be a whole number, got "${raw}"`, from);
  const n = Number(value);
  if ((option.min !== undefined && n < option.min) || (option.max !== undefined && n > option.max)) {
    throw invalid(`${from} must be between ${option.min ?? 0} and ${option.max ?? '∞'}, got ${n}`, from);
  }
  return n;
}

/**
 * Maps the seed MongoDB worker's flags and environment onto llmq config. Flags win over the
 * environment. A connection string from DB_URI stays in the environment (`url_env: DB_URI`)
 * rather than being copied into config; one from the flag is used as given.
 *
 * `--timeout`/TIMEOUT is in seconds, as the seed worker took it; `--min_len`/`--max_len` are
 * token counts.
 */
export function parseSeedWorkerArgs(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): SeedWorkerFragment {
  const flags = readFlags(argv);
  const values = new Map<Key, { value: string | number; from: 'flag' | 'env' }>();
  for (const [key, option] of Object.entries(OPTIONS) as [Key, Option][]) {
    const flag = flags.get(key);
    if (flag !== undefined) {
      values.set(key, { value: parseValue(option, flag, `--${option.flag}`), from: 'flag' });
      continue;
    }
    const fromEnv = env[option.env];
    if (fromEnv !== undefined && fromEnv.trim() !== '') values.set(key, { value: parseValue(option, fromEnv, option.env), from: 'env' });
  }
  const required = (key: Key) => {
    const v = values.get(key);
    if (v === undefined) {
      const o = OPTIONS[key];
      throw invalid(`--${o.flag} (or env ${o.env}) is required`, `--${o.flag}`);
    }
    return v;
  };
  const str = (key: Key) => values.get(key)?.value as string | undefined;
  const num = (key: Key) => values.get(key)?.value as number | undefined;

  const url = required('url');
  const model = required('model').value as string;
  const db = required('db').value as string;
  const collection = required('collection').value as string;
  const minTokens = num('minLen');
  const maxTokens = num('maxLen');
  if (minTokens !== undefined && maxTokens !== undefined && minTokens > maxTokens) {
    throw invalid(`--min_len (${minTokens}) must not exceed --max_len (${maxTokens})`, '--min_len');
  }
  const rawTemplate = str('template');
  const template = rawTemplate === undefined ? undefined : basename(rawTemplate);
  const timeoutMs = num('timeout');

  const options: MongoSourceConfigInput = {
    ...(url.from === 'env' ? { url_env: OPTIONS.url.env } : { url: url.value as string }),
    db,
    collection,
    model,
    ...(num('batchSize') === undefined ? {} : { batch_size: num('batchSize') }),
    ...(template === undefined ? {} : { template }),
    ...(timeoutMs === undefined ? {} : { timeout_ms: timeoutMs }),
    params: {
      ...(minTokens === undefined ? {} : { min_tokens: minTokens }),
      ...(maxTokens === undefined ? {} : { max_tokens: maxTokens }),
    },
  };
  return {
    source: { type: 'mongodb', options },
    model,
    ...(num('parallel') === undefined ? {} : { concurrency: num('parallel') }),
    ...(timeoutMs === undefined ? {} : { timeout_ms: timeoutMs }),
    ...(minTokens === undefined ? {} : { min_tokens: minTokens }),
    ...(maxTokens === undefined ? {} : { max_tokens: maxTokens }),
    ...(template === undefined ? {} : { template }),
  };
}
