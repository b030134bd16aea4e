import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LlmqError } from './errors.js';
import { isAdapterDefinition, type Registry } from './registry.js';
import type { AdapterDefinition } from './adapters.js';

export interface PluginSpec {
  /** npm package name, or a path (absolute, or relative to `baseDir`). */
  module: string;
  /** Where the entry is in config, for error messages, e.g. `plugins[0]`. */
  configPath: string;
}

function isPathSpecifier(spec: string): boolean {
  return spec.startsWith('.') || isAbsolute(spec) || spec.startsWith('file:');
}

/** Collects the adapter definitions a plugin module exports (named exports, default, or arrays of them). */
export function definitionsFromModule(mod: Record<string, unknown>): AdapterDefinition[] {
  const found: AdapterDefinition[] = [];
  const seen = new Set<unknown>();
  const visit = (value: unknown) => {
    if (seen.has(value)) return;
    seen.add(value);
    if (isAdapterDefinition(value)) found.push(value);
    else if (Array.isArray(value)) value.forEach(visit);
  };
  for (const value of Object.values(mod)) {
    visit(value);
    if (value && typeof value === 'object' && !Array.isArray(value) && !isAdapterDefinition(value)) {
      Object.values(value as Record<string, unknown>).forEach(visit);
    }
  }
  return found;
}

/**
 * Imports each plugin and registers its definitions. A plugin that cannot be imported, exports
 * nothing usable, or collides with a registered type fails start-up naming its config entry.
 */
export async function loadPlugins(registry: Registry, specs: readonly PluginSpec[], baseDir: string): Promise<AdapterDefinition[]> {
  const loaded: AdapterDefinition[] = [];
  for (const spec of specs) {
    const target = spec.module.startsWith('file:')
      ? spec.module
      : isPathSpecifier(spec.module)
        ? pathToFileURL(resolve(baseDir, spec.module)).href
        : spec.module;
    let mod: Record<string, unknown>;
    try {
      mod = (await import(target)) as Record<string, unknown>;
    } catch (err) {
      throw new LlmqError(
        'ERR_CONFIG_PLUGIN',
        `${spec.configPath}: cannot load plugin "${spec.module}": ${(err as Error).message}`,
        { cause: err, param: spec.configPath },
      );
    }
    const defs = definitionsFromModule(mod);
    if (defs.length === 0) {
      throw new LlmqError(
        'ERR_CONFIG_PLUGIN',
        `${spec.configPath}: plugin "${spec.module}" exports no adapter definition (an object with kind, type, configSchema and create)`,
        { param: spec.configPath },
      );
    }
    for (const def of defs) {
      try {
        registry.register(def, `plugin "${spec.module}" (${spec.configPath})`);
      } catch (err) {
        if (err instanceof LlmqError) throw err;
        throw err;
      }
      loaded.push(def);
    }
  }
  return loaded;
}
