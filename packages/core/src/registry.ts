import { LlmqError } from './errors.js';
import type { AdapterDefinition, AdapterKind, BackendDefinition, SinkDefinition, SourceDefinition } from './adapters.js';

type DefinitionOf<K extends AdapterKind> = K extends 'backend'
  ? BackendDefinition<any>
  : K extends 'source'
    ? SourceDefinition<any>
    : SinkDefinition<any>;

export interface Registry {
  /** Adds a definition; `origin` names where it came from in error messages. */
  register(def: AdapterDefinition, origin?: string): void;
  get<K extends AdapterKind>(kind: K, type: string, configPath?: string): DefinitionOf<K>;
  has(kind: AdapterKind, type: string): boolean;
  list(kind?: AdapterKind): AdapterDefinition[];
}

const KINDS = new Set<AdapterKind>(['backend', 'source', 'sink']);

/** True for anything shaped like an adapter definition (used on plugin exports). */
export function isAdapterDefinition(value: unknown): value is AdapterDefinition {
  if (value === null || typeof value !== 'object') return false;
  const v = value as Record<string, unknown>;
  return (
    typeof v.kind === 'string' &&
    KINDS.has(v.kind as AdapterKind) &&
    typeof v.type === 'string' &&
    typeof v.create === 'function' &&
    typeof v.configSchema === 'object' &&
    v.configSchema !== null
  );
}

/** An explicit registry: every adapter the process may use is registered here, nothing implicit. */
export function createRegistry(definitions: readonly AdapterDefinition[] = [], origin = 'built-in'): Registry {
  const entries = new Map<string, { def: AdapterDefinition; origin: string }>();
  const registry: Registry = {
    register(def, from = origin) {
      if (!isAdapterDefinition(def)) {
        throw new LlmqError('ERR_CONFIG_PLUGIN', `${from}: not an adapter definition (needs kind, type, configSchema, create)`);
      }
      const key = `${def.kind}:${def.type}`;
      const existing = entries.get(key);
      if (existing) {
        throw new LlmqError(
          'ERR_REGISTRY_DUPLICATE_TYPE',
          `${def.kind} type "${def.type}" from ${from} is already registered by ${existing.origin}`,
        );
      }
      entries.set(key, { def, origin: from });
    },
    get(kind, type, configPath) {
      const entry = entries.get(`${kind}:${type}`);
      if (!entry) {
        const known = [...entries.values()].filter((e) => e.def.kind === kind).map((e) => e.def.type);
        const where = configPath ? `${configPath}: ` : '';
        throw new LlmqError(
          'ERR_REGISTRY_UNKNOWN_TYPE',
          `${where}unknown ${kind} type "${type}" (known: ${known.join(', ') || 'none'}; add a plugin that provides it)`,
          { param: configPath },
        );
      }
      return entry.def as never;
    },
    has(kind, type) {
      return entries.has(`${kind}:${type}`);
    },
    list(kind) {
      return [...entries.values()].map((e) => e.def).filter((d) => kind === undefined || d.kind === kind);
    },
  };
  for (const def of definitions) registry.register(def, origin);
  return registry;
}
