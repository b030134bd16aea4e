import { describe, expect, it } from 'vitest';
import { mongoSourceConfigSchema } from './config.js';
import { parseSeedWorkerArgs } from './seed-args.js';

const env = {
  DB_URI: 'mongodb://user:pw@env-host/',
  DB_NAME: 'envdb',
  REQUESTS_COLLECTION: 'env_requests',
  BATCH_SIZE: '20',
  WORKER_CNT: '4',
  TIMEOUT: '90',
  MIN_LEN: '10',
  MAX_LEN: '200',
  MODEL_NAME: 'phi3-mini',
  TEMPLATE: 'phi3.template',
};

describe('parseSeedWorkerArgs', () => {
  it('maps the seed environment, keeping the connection string in the environment', () => {
    const fragment = parseSeedWorkerArgs([], env);
    expect(fragment).toEqual({
      source: {
        type: 'mongodb',
        options: {
          url_env: 'DB_URI',
          db: 'envdb',
          collection: 'env_requests',
          model: 'phi3-mini',
          batch_size: 20,
          template: 'phi3.template',
          timeout_ms: 90_000,
          params: { min_tokens: 10, max_tokens: 200 },
        },
      },
      model: 'phi3-mini',
      concurrency: 4,
      timeout_ms: 90_000,
      min_tokens: 10,
      max_tokens: 200,
      template: 'phi3.template',
    });
    // The fragment is a valid source config as it stands.
    expect(mongoSourceConfigSchema.safeParse(fragment.source.options).success).toBe(true);
  });

  it('lets flags win over the environment, in both --flag value and --flag=value forms', () => {
    const fragment = parseSeedWorkerArgs(
      ['--parallel', '16', '--model=llama3', '--mongo_connection_string', 'mongodb://flag-host/', '--db_name', 'flagdb', '--requests_collection=jobs', '--batch_size', '50', '--timeout', '2.5', '--min_len', '0', '--max_len', '64', '--template', '/etc/seed/templates/llama3.template'],
      env,
    );
    expect(fragment.source.options).toEqual({
      url: 'mongodb://flag-host/',
      db: 'flagdb',
      collection: 'jobs',
      model: 'llama3',
      batch_size: 50,
      template: 'llama3.template',
      timeout_ms: 2500,
      params: { min_tokens: 0, max_tokens: 64 },
    });
    expect(fragment).toMatchObject({ model: 'llama3', concurrency: 16, timeout_ms: 2500, min_tokens: 0, max_tokens: 64 });
  });

  it('accepts dashes for underscores', () => {
    expect(parseSeedWorkerArgs(['--batch-size', '3', '--db-name', 'x'], env).source.options).toMatchObject({ batch_size: 3, db: 'x' });
  });

  it('leaves out what neither gives', () => {
    const fragment = parseSeedWorkerArgs([], { DB_URI: 'mongodb://h/', DB_NAME: 'd', REQUESTS_COLLECTION: 'c', MODEL_NAME: 'm' });
    expect(fragment).toEqual({ source: { type: 'mongodb', options: { url_env: 'DB_URI', db: 'd', collection: 'c', model: 'm', params: {} } }, model: 'm' });
  });

  it('names the flag and variable of a missing required setting', () => {
    expect(() => parseSeedWorkerArgs([], { ...env, DB_NAME: undefined })).toThrow(/ERR_CONFIG_INVALID: mongo-worker: --db_name \(or env DB_NAME\) is required/);
    expect(() => parseSeedWorkerArgs([], { ...env, DB_URI: '' })).toThrow(/--mongo_connection_string \(or env DB_URI\) is required/);
  });

  it('rejects bad values, unknown flags and repeats, naming them', () => {
    expect(() => parseSeedWorkerArgs(['--parallel', 'many'], env)).toThrow(/--parallel must be a whole number, got "many"/);
    expect(() => parseSeedWorkerArgs([], { ...env, BATCH_SIZE: '0' })).toThrow(/BATCH_SIZE must be between 1 and 10000/);
    expect(() => parseSeedWorkerArgs(['--timeout', '-1'], env)).toThrow(/--timeout must be a number of seconds/);
    expect(() => parseSeedWorkerArgs(['--min_len', '300'], env)).toThrow(/--min_len \(300\) must not exceed --max_len \(200\)/);
    expect(() => parseSeedWorkerArgs(['--gpu', '1'], env)).toThrow(/unknown flag --gpu/);
    expect(() => parseSeedWorkerArgs(['--model', 'a', '--model', 'b'], env)).toThrow(/given twice/);
    expect(() => parseSeedWorkerArgs(['--model'], env)).toThrow(/--model needs a value/);
    expect(() => parseSeedWorkerArgs(['phi3'], env)).toThrow(/unexpected argument "phi3"/);
  });

  it('never puts the connection string into an error message', () => {
    const messages: string[] = [];
    for (const argv of [['--parallel', 'x'], ['--mongo_connection_string', ' '], ['--bogus=mongodb://user:pw@h/']]) {
      try {
        parseSeedWorkerArgs(argv, env);
      } catch (err) {
        messages.push(String(err));
      }
    }
    expect(messages).toHaveLength(3);
    for (const m of messages) expect(m).not.toContain('pw@');
  });
});
