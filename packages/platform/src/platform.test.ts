import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '@llmq/config';
import { parseJobRequest, toErrorBody } from '@llmq/core';
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

  it("refuses at enqueue a min_tokens above the model's default max_tokens, naming both values and the config line", async () => {
    const config = (defaults: Record<string, unknown>) =>
      loadConfig({ inline: { models: [{ name: 'e', backend: 'echo' }, { name: 'l', backend: 'llama-cpp', defaults, options: { model_path: 'm.gguf' } }] }, env: {} });
    const p = await createPlatform(config({ max_tokens: 256 }));
    const refuse = (body: Record<string, unknown>, prefix = '') => {
      try {
        validateForModel(p, parseJobRequest({ model: 'l', prompt: 'x', ...body }, prefix), prefix);
      } catch (err) {
        return toErrorBody(err);
      }
      throw new Error('expected a 400');
    };
    expect(refuse({ min_tokens: 1_000_000 })).toEqual({
      status: 400,
      body: {
        error: {
          message: 'min_tokens: 1000000 is more than max_tokens (256), the default of model "l" (config models[1].defaults.max_tokens); lower min_tokens or send a max_tokens of at least 1000000',
          type: 'invalid_request_error',
          code: 'ERR_REQUEST_INVALID',
          param: 'min_tokens',
        },
      },
    });
    expect(refuse({ min_tokens: 300 }, 'jobs[2]').body.error).toMatchObject({ param: 'jobs[2].min_tokens', message: expect.stringMatching(/^jobs\[2\]\.min_tokens: 300 is more than max_tokens \(256\)/) });
    // The request's own max_tokens replaces the default.
    expect(validateForModel(p, parseJobRequest({ model: 'l', prompt: 'x', min_tokens: 300, max_tokens: 400 })).config.name).toBe('l');
    expect(validateForModel(p, parseJobRequest({ model: 'l', prompt: 'x', min_tokens: 256 })).config.name).toBe('l');
    // A default min_tokens gives way to the request's max_tokens: a client that sent no min_tokens
    // is not refused for the config's (the TextSynth door always sends a max_tokens).
    const withMin = await createPlatform(config({ min_tokens: 150 }));
    expect(validateForModel(withMin, parseJobRequest({ model: 'l', prompt: 'x', max_tokens: 100 })).config.name).toBe('l');
  });

  it('refuses at start-up model defaults a request could not give', async () => {
    const config = (defaults: Record<string, unknown>) => loadConfig({ inline: { models: [{ name: 'l', backend: 'llama-cpp', defaults, options: { model_path: 'm.gguf' } }] }, env: {} });
    await expect(createPlatform(config({ repeat_penalty: 0 }))).rejects.toThrow(/models\[0\]\.defaults\.repeat_penalty: must be greater than 0 \(1 = no penalty/);
    await expect(createPlatform(config({ min_tokens: 500, max_tokens: 100 }))).rejects.toThrow(/models\[0\]\.defaults\.min_tokens: 500 is more than models\[0\]\.defaults\.max_tokens \(100\)/);
    await expect(createPlatform(config({ stop: 5 }))).rejects.toThrow(/models\[0\]\.defaults\.stop: must be a string or an array of at most 16 strings/);
    expect((await createPlatform(config({ max_tokens: 100, repeat_penalty: 1.1 }))).models.has('l')).toBe(true);
  });
});
