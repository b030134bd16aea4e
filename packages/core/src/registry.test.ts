import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createRegistry, defineBackend, echoBackend, errorCode } from './index.js';

const other = defineBackend({
  kind: 'backend',
  type: 'other',
  configSchema: z.strictObject({}),
  capabilities: { params: [], chat: true, completion: true },
  create: () => {
    throw new Error('not used');
  },
});

describe('registry', () => {
  it('returns registered definitions by kind and type', () => {
    const registry = createRegistry([echoBackend, other]);
    expect(registry.get('backend', 'echo')).toBe(echoBackend);
    expect(registry.list('backend').map((d) => d.type)).toEqual(['echo', 'other']);
    expect(registry.list('sink')).toEqual([]);
  });

  it('rejects a duplicate type, naming both origins', () => {
    const registry = createRegistry([echoBackend]);
    let thrown: unknown;
    try {
      registry.register({ ...echoBackend }, 'plugin "x" (plugins[0])');
    } catch (err) {
      thrown = err;
    }
    expect(errorCode(thrown)).toBe('ERR_REGISTRY_DUPLICATE_TYPE');
    expect(String((thrown as Error).message)).toContain('plugins[0]');
    expect(String((thrown as Error).message)).toContain('built-in');
  });

  it('names the config line and the known types for an unknown type', () => {
    const registry = createRegistry([echoBackend]);
    expect(() => registry.get('backend', 'nope', 'models[2].backend')).toThrow(/models\[2\]\.backend: unknown backend type "nope" \(known: echo/);
  });

  it('refuses things that are not definitions', () => {
    const registry = createRegistry();
    expect(() => registry.register({ kind: 'backend', type: 'x' } as never)).toThrow(/not an adapter definition/);
  });
});
