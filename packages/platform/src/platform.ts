import {
  LlmqError,
  checkCapabilities,
  createRegistry,
  firstIssue,
  invalidGenerationParam,
  loadPlugins,
  noTemplate,
  resolveCapabilities,
  type AdapterContext,
  type AdapterDefinition,
  type Backend,
  type BackendCapabilities,
  type BackendDefinition,
  type GenerationRequest,
  type JobRequest,
  type Logger,
  type Registry,
  type SinkDefinition,
  type SourceDefinition,
} from '@llmq/core';
import type { AdapterInstanceConfig, ModelConfig, ResolvedConfig } from '@llmq/config';
import type { SinkBinding } from '@llmq/queue';
import { BUILTIN_DEFINITIONS } from './builtins.js';

export interface ResolvedModel {
  config: ModelConfig;
  definition: BackendDefinition<unknown>;
  /** Backend options after the backend's schema applied its defaults. */
  options: unknown;
  capabilities: BackendCapabilities;
}

export interface ResolvedAdapter<D> {
  config: AdapterInstanceConfig;
  definition: D;
  options: unknown;
}

export interface Platform {
  config: ResolvedConfig;
  registry: Registry;
  models: Map<string, ResolvedModel>;
  sources: ResolvedAdapter<SourceDefinition<unknown>>[];
  sinks: ResolvedAdapter<SinkDefinition<unknown>>[];
}

function parseOptions(def: AdapterDefinition, options: unknown, where: string, source: string): unknown {
  const parsed = def.configSchema.safeParse(options);
  if (parsed.success) return parsed.data;
  const { key, message } = firstIssue(parsed.error);
  const path = key ? `${where}.${key}` : where;
  throw new LlmqError('ERR_CONFIG_INVALID', `${source}: ${path}: ${message} (${def.kind} "${def.type}")`, { param: path });
}

/**
 * Registers built-ins and plugins, then validates every model, source and sink in config
 * against its adapter's schema. Fails start-up with a message naming the config line.
 */
export async function createPlatform(config: ResolvedConfig, options: { builtins?: readonly AdapterDefinition[] } = {}): Promise<Platform> {
  const registry = createRegistry(options.builtins ?? BUILTIN_DEFINITIONS);
  await loadPlugins(
    registry,
    config.plugins.map((module, i) => ({ module, configPath: `plugins[${i}]` })),
    config.config_dir,
  );
  const file = config.config_path ?? 'config';
  const models = new Map<string, ResolvedModel>();
  config.models.forEach((model, i) => {
    checkDefaults(model, `models[${i}].defaults`, file);
    const definition = registry.get('backend', model.backend, `${file}: models[${i}].backend`);
    const parsed = parseOptions(definition, model.options, `models[${i}].options`, file);
    const capabilities = resolveCapabilities(definition, parsed, { configDir: config.config_dir, templatesDir: config.templates_path });
    // A default template that is not there would make every job of the model a 400: a config error.
    const template = model.defaults.template;
    const others = typeof template === 'string' ? capabilities.findTemplate?.(template) : undefined;
    if (others !== undefined) {
      const param = `models[${i}].defaults.template`;
      throw new LlmqError('ERR_CONFIG_INVALID', `${file}: ${param}: ${noTemplate(String(template), others)}`, { param });
    }
    // Likewise a default the backend refuses (a JSON schema it cannot enforce).
    const problem = capabilities.checkRequest?.(model.defaults as GenerationRequest);
    if (problem !== undefined) {
      const param = `models[${i}].defaults.${problem.param}`;
      throw new LlmqError('ERR_CONFIG_INVALID', `${file}: ${param}: ${problem.message}`, { param });
    }
    models.set(model.name, { config: model, definition, options: parsed, capabilities });
  });
  const sources = config.sources.map((entry, i) => {
    const definition = registry.get('source', entry.type, `${file}: sources[${i}].type`);
    return { config: entry, definition, options: parseOptions(definition, entry.options, `sources[${i}].options`, file) };
  });
  const sinks = config.sinks.map((entry, i) => {
    const definition = registry.get('sink', entry.type, `${file}: sinks[${i}].type`);
    entry.models?.forEach((m, j) => {
      if (!models.has(m)) throw new LlmqError('ERR_CONFIG_INVALID', `${file}: sinks[${i}].models[${j}]: unknown model "${m}"`);
    });
    return { config: entry, definition, options: parseOptions(definition, entry.options, `sinks[${i}].options`, file) };
  });
  return { config, registry, models, sources, sinks };
}

/**
 * A model's `defaults` go into every job that leaves them out, unchecked by the request schema:
 * a bad one (repeat_penalty 0, min_tokens above max_tokens) would reach the backend with each job.
 */
function checkDefaults(model: ModelConfig, where: string, file: string): void {
  const bad = invalidGenerationParam(model.defaults);
  if (bad) {
    const param = `${where}.${bad.key}`;
    throw new LlmqError('ERR_CONFIG_INVALID', `${file}: ${param}: ${bad.message}`, { param });
  }
  const { min_tokens: min, max_tokens: max } = model.defaults;
  if (typeof min === 'number' && typeof max === 'number' && min > max) {
    const param = `${where}.min_tokens`;
    throw new LlmqError('ERR_CONFIG_INVALID', `${file}: ${param}: ${min} is more than ${where}.max_tokens (${max})`, { param });
  }
}

/**
 * A request's `min_tokens` above the `max_tokens` the job will run with can never be honoured. The
 * request schema compares the two only when the request gives both; here `max_tokens` may be the
 * model's default, so the message says where it comes from. A default `min_tokens` gives way to the
 * request's own `max_tokens` (the job stops there, as it always did): a client that sent no
 * `min_tokens` is not refused for the config's.
 */
function checkTokenRange(platform: Platform, request: JobRequest, model: ModelConfig, prefix: string): void {
  const min = request.min_tokens;
  const max = request.max_tokens ?? model.defaults.max_tokens;
  if (min === undefined || typeof max !== 'number' || min <= max) return;
  // The config's key, not its file: the path of a file on the server is not the client's business.
  const where = `config models[${platform.config.models.indexOf(model)}].defaults`;
  const param = prefix ? `${prefix}.min_tokens` : 'min_tokens';
  const hint = request.max_tokens === undefined ? `, the default of model "${model.name}" (${where}.max_tokens); lower min_tokens or send a max_tokens of at least ${min}` : '; min_tokens must not exceed max_tokens';
  throw new LlmqError('ERR_REQUEST_INVALID', `${param}: ${min} is more than max_tokens (${max})${hint}`, { param });
}

/** Throws a 4xx LlmqError when the request's model is unknown or uses something its backend cannot do. */
export function validateForModel(platform: Platform, request: JobRequest, prefix = ''): ResolvedModel {
  const model = platform.models.get(request.model);
  if (!model) {
    const param = prefix ? `${prefix}.model` : 'model';
    throw new LlmqError('ERR_MODEL_NOT_FOUND', `model "${request.model}" does not exist (available: ${[...platform.models.keys()].join(', ') || 'none'})`, { param });
  }
  const effective = { ...model.config.defaults, ...request } as JobRequest;
  checkCapabilities(effective, model.capabilities, model.definition.type, prefix);
  checkTokenRange(platform, request, model.config, prefix);
  return model;
}

export function adapterContext(platform: Platform, logger: Logger, signal: AbortSignal, env: Readonly<Record<string, string | undefined>> = process.env): AdapterContext {
  return { logger, signal, configDir: platform.config.config_dir, templatesDir: platform.config.templates_path, env };
}

export async function createBackend(platform: Platform, modelName: string, ctx: AdapterContext): Promise<Backend> {
  const model = platform.models.get(modelName);
  if (!model) throw new LlmqError('ERR_MODEL_NOT_FOUND', `model "${modelName}" is not declared in config`);
  return model.definition.create({ name: modelName, config: model.options, concurrency: model.config.concurrency }, { ...ctx, logger: ctx.logger.child({ model: modelName, backend: model.definition.type }) });
}

export async function createSinks(platform: Platform, ctx: AdapterContext): Promise<SinkBinding[]> {
  const out: SinkBinding[] = [];
  for (const s of platform.sinks) {
    const sink = await s.definition.create({ name: s.config.name, config: s.options }, { ...ctx, logger: ctx.logger.child({ sink: s.config.name }) });
    if (s.config.events.includes('usage') && !sink.writeUsage) {
      throw new LlmqError('ERR_CONFIG_INVALID', `sink "${s.config.name}" (${s.definition.type}) lists events: [usage] but cannot receive usage records`);
    }
    out.push({ sink, models: s.config.models, sources: s.config.sources, events: s.config.events });
  }
  return out;
}
