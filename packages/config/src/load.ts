import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { LlmqError, firstIssue } from '@llmq/core';
import { configSchema, type LlmqConfig } from './schema.js';

export interface LoadConfigOptions {
  /** Environment to read overrides from (tests pass their own). */
  env?: Readonly<Record<string, string | undefined>>;
  /** Config file; else env LLMQ_CONFIG; else `config/default.yaml` under `cwd` when it exists. */
  path?: string;
  cwd?: string;
  /** Inline config instead of a file (tests). */
  inline?: unknown;
}

export interface ResolvedConfig extends LlmqConfig {
  /** Directory relative paths in the config are resolved against. */
  config_dir: string;
  /** The file read, if any. */
  config_path: string | null;
  /** Absolute templates folder. */
  templates_path: string;
}

function configError(source: string, key: string, message: string): LlmqError {
  return new LlmqError('ERR_CONFIG_INVALID', `${source}: ${key ? `${key}: ` : ''}${message}`, { param: key || undefined });
}

function parseIntEnv(source: string, name: string, value: string): number {
  if (!/^\d+$/.test(value.trim())) throw configError(source, name, `expected a whole number, got "${value}"`);
  return Number(value);
}

function list(value: string): string[] {
  return value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** Environment variables that override config keys. */
export const ENV_OVERRIDES = {
  REDIS_URL: 'redis.url',
  LLMQ_REDIS_PREFIX: 'redis.prefix',
  PORT: 'gateway.port',
  LLMQ_API_KEYS: 'gateway.api_keys',
  LLMQ_LOG_LEVEL: 'log_level',
  LLMQ_WORKER_MODELS: 'worker.models',
  LLMQ_METRICS_PORT: 'worker.metrics_port',
  LLMQ_PLUGINS: 'plugins',
} as const;

function applyEnv(raw: Record<string, any>, env: Readonly<Record<string, string | undefined>>): void {
  const section = (key: string): Record<string, any> => {
    const current = raw[key];
    if (current === undefined || current === null) raw[key] = {};
    else if (typeof current !== 'object' || Array.isArray(current)) throw configError('config', key, 'expected a mapping');
    return raw[key] as Record<string, any>;
  };
  const set = (name: string, fn: (v: string) => void) => {
    const v = env[name];
    if (v !== undefined && v !== '') fn(v);
  };
  set('REDIS_URL', (v) => (section('redis').url = v));
  set('LLMQ_REDIS_PREFIX', (v) => (section('redis').prefix = v));
  set('PORT', (v) => (section('gateway').port = parseIntEnv('env', 'PORT', v)));
  set('LLMQ_API_KEYS', (v) => (section('gateway').api_keys = list(v)));
  set('LLMQ_LOG_LEVEL', (v) => (raw.log_level = v));
  set('LLMQ_WORKER_MODELS', (v) => (section('worker').models = list(v)));
  set('LLMQ_METRICS_PORT', (v) => (section('worker').metrics_port = parseIntEnv('env', 'LLMQ_METRICS_PORT', v)));
  set('LLMQ_PLUGINS', (v) => (raw.plugins = [...((raw.plugins as string[] | undefined) ?? []), ...list(v)]));
}

/**
 * Reads YAML, applies env overrides and validates. Unknown keys and bad values throw
 * ERR_CONFIG_INVALID naming the file and key.
 */
export function loadConfig(options: LoadConfigOptions = {}): ResolvedConfig {
  const env = options.env ?? process.env;
  const cwd = options.cwd ?? process.cwd();
  let path: string | null = null;
  let raw: unknown;
  let source = 'config';
  if (options.inline !== undefined) {
    raw = structuredClone(options.inline);
  } else {
    const explicit = options.path ?? env.LLMQ_CONFIG;
    if (explicit) {
      path = resolve(cwd, explicit);
      if (!existsSync(path)) throw configError(explicit, '', 'file not found (set LLMQ_CONFIG to an existing YAML file)');
    } else {
      const fallback = resolve(cwd, 'config/default.yaml');
      path = existsSync(fallback) ? fallback : null;
    }
    if (path) {
      source = path;
      try {
        raw = parseYaml(readFileSync(path, 'utf8')) ?? {};
      } catch (err) {
        throw configError(path, '', `not valid YAML: ${(err as Error).message}`);
      }
    } else {
      raw = {};
    }
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw configError(source, '', 'the top level must be a mapping');
  applyEnv(raw as Record<string, any>, env);
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const { key, message } = firstIssue(parsed.error);
    const envName = Object.entries(ENV_OVERRIDES).find(([, k]) => key.startsWith(k))?.[0];
    const hint = envName && env[envName] ? ` (set by env ${envName})` : '';
    throw configError(source, key, message + hint);
  }
  const config = parsed.data;
  const seen = new Set<string>();
  config.models.forEach((m, i) => {
    if (seen.has(m.name)) throw configError(source, `models[${i}].name`, `duplicate model name "${m.name}"`);
    seen.add(m.name);
  });
  config.models.forEach((m, i) => {
    m.fallbacks.forEach((f, j) => {
      if (!seen.has(f)) throw configError(source, `models[${i}].fallbacks[${j}]`, `unknown model "${f}"`);
      if (f === m.name) throw configError(source, `models[${i}].fallbacks[${j}]`, 'a model cannot fall back to itself');
    });
  });
  config.worker.models.forEach((name, i) => {
    if (!seen.has(name)) throw configError(source, `worker.models[${i}]`, `unknown model "${name}" (declared: ${[...seen].join(', ') || 'none'})`);
  });
  for (const [listName, entries] of [['sources', config.sources], ['sinks', config.sinks]] as const) {
    const names = new Set<string>();
    entries.forEach((e, i) => {
      if (names.has(e.name)) throw configError(source, `${listName}[${i}].name`, `duplicate name "${e.name}"`);
      names.add(e.name);
    });
  }
  const configDir = path ? dirname(path) : resolve(cwd, 'config');
  return {
    ...config,
    config_dir: configDir,
    config_path: path,
    templates_path: resolve(configDir, config.templates_dir),
  };
}

/** Models a worker should serve: `worker.models`, or all. */
export function servedModels(config: LlmqConfig): string[] {
  return config.worker.models.length > 0 ? config.worker.models : config.models.map((m) => m.name);
}
