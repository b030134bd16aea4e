import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRegistry, echoBackend, errorCode, loadPlugins } from './index.js';

const outside = mkdtempSync(join(tmpdir(), 'llmq-plugin-'));
const pluginSource = `
export const shout = {
  kind: 'backend', type: 'shout',
  configSchema: { safeParse: (v) => ({ success: true, data: v ?? {} }) },
  capabilities: { params: [], chat: false, completion: true },
  create: ({ name }) => ({ name, check: async () => {}, close: async () => {},
    generate: async (input) => ({ text: input.request.prompt.toUpperCase(), finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1 } }) }),
};
export const notAnAdapter = { hello: 'world' };
`;
writeFileSync(join(outside, 'shout.mjs'), pluginSource);
writeFileSync(join(outside, 'empty.mjs'), 'export const x = 1;\n');
writeFileSync(join(outside, 'dupe.mjs'), `export default [{ kind: 'backend', type: 'echo', configSchema: { safeParse: () => ({ success: true }) }, capabilities: { params: [], chat: true, completion: true }, create() {} }];\n`);

describe('plugin loading', () => {
  it('loads a backend from a file outside the workspace, by relative and absolute path', async () => {
    const registry = createRegistry([echoBackend]);
    const loaded = await loadPlugins(registry, [{ module: './shout.mjs', configPath: 'plugins[0]' }], outside);
    expect(loaded.map((d) => d.type)).toEqual(['shout']);
    const def = registry.get('backend', 'shout');
    const backend = await def.create({ name: 'loud', config: {}, concurrency: 1 }, {} as never);
    const out = await backend.generate({ request: { model: 'loud', prompt: 'hi there' } } as never);
    expect(out.text).toBe('HI THERE');
    const again = createRegistry();
    await loadPlugins(again, [{ module: join(outside, 'shout.mjs'), configPath: 'plugins[0]' }], '/');
    expect(again.has('backend', 'shout')).toBe(true);
  });

  it('names the config entry when a plugin is missing, empty or collides', async () => {
    const registry = createRegistry([echoBackend]);
    const attempt = (module: string) => loadPlugins(registry, [{ module, configPath: 'plugins[3]' }], outside).then(() => null, (e: unknown) => e as Error);
    const missing = await attempt('./nope.mjs');
    expect(errorCode(missing)).toBe('ERR_CONFIG_PLUGIN');
    expect(missing?.message).toMatch(/plugins\[3\]: cannot load plugin "\.\/nope\.mjs"/);
    const empty = await attempt('./empty.mjs');
    expect(empty?.message).toMatch(/plugins\[3\]: plugin "\.\/empty\.mjs" exports no adapter definition/);
    const dupe = await attempt('./dupe.mjs');
    expect(errorCode(dupe)).toBe('ERR_REGISTRY_DUPLICATE_TYPE');
    expect(dupe?.message).toMatch(/plugins\[3\]/);
    const pkg = await attempt('llmq-no-such-package');
    expect(errorCode(pkg)).toBe('ERR_CONFIG_PLUGIN');
  });
});
