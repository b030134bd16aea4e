import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '@llmq/config';
import { parseJobRequest } from '@llmq/core';
import { createPlatform, validateForModel } from './index.js';

const repo = fileURLToPath(new URL('../../../', import.meta.url));

describe('platform', () => {
  it('accepts the shipped configs', async () => {
    for (const file of ['config/default.yaml', 'config/connector.example.yaml']) {
      const p = await createPlatform(loadConfig({ path: repo + file, env: {} }));
      expect(p.models.size).toBeGreaterThan(0);
    }
  });

  it('validates backend options with the backend schema, naming the config line', async () => {
    const bad = loadConfig({ inline: { models: [{ name: 'e', backend: 'echo' }, { name: 'x', backend: 'echo', options: { delay: 5 } }] }, env: {} });
    await expect(createPlatform(bad)).rejects.toThrow(/models\[1\]\.options\.delay: unknown key \(backend "echo"\)/);
    const unknown = loadConfig({ inline: { models: [{ name: 'x', backend: 'gpt-magic' }] }, env: {} });
    await expect(createPlatform(unknown)).rejects.toThrow(/models\[0\]\.backend: unknown backend type "gpt-magic"/);
    const sink = loadConfig({ inline: { sinks: [{ name: 's', type: 'webhook', options: {} }] }, env: {} });
    await expect(createPlatform(sink)).rejects.toThrow(/sinks\[0\]\.options\.url/);
  });

  it('refuses at start-up, not at every enqueue, defaults the backend would refuse (a missing template, a JSON schema it cannot enforce)', async () => {
    const config = (template: string) =>
      loadConfig({ inline: { templates_dir: `${repo}config/templates`, models: [{ name: 'l', backend: 'llama-cpp', defaults: { template }, options: { model_path: 'm.gguf' } }] }, env: {} });
    expect((await createPlatform(config('phi3'))).models.has('l')).toBe(true);
    await expect(createPlatform(config('phi-3'))).rejects.toThrow(/models\[0\]\.defaults\.template: no template "phi-3" \(available: chatml, phi3\)/);
    const schema = { type: 'object', properties: { n: { type: 'integer', maximum: 9 } } };
    const withSchema = loadConfig({ inline: { models: [{ name: 'l', backend: 'llama-cpp', defaults: { response_format: { type: 'json_schema', json_schema: { schema } } }, options: { model_path: 'm.gguf' } }] }, env: {} });
    await expect(createPlatform(withSchema)).rejects.toThrow(/models\[0\]\.defaults\.response_format\.json_schema\.schema\.properties\.n\.maximum: "maximum" cannot be enforced/);
  });

  it('rejects at enqueue what the model cannot do, with model defaults applied', async () => {
    const p = await createPlatform(loadConfig({ inline: { models: [{ name: 'e', backend: 'echo', defaults: { max_tokens: 5 } }] }, env: {} }));
    expect(() => validateForModel(p, parseJobRequest({ model: 'e', prompt: 'x', min_p: 0.2 }))).toThrow(/min_p: not supported/);
    expect(() => validateForModel(p, parseJobRequest({ model: 'zz', prompt: 'x' }))).toThrow(/model "zz" does not exist/);
    expect(validateForModel(p, parseJobRequest({ model: 'e', prompt: 'x' })).config.name).toBe('e');
  });
});
