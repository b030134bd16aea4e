import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { errorCode, resolveCapabilities, silentLogger } from '@llmq/core';

// The gateway imports the definition to validate config; it must never load node-llama-cpp.
// Any import of it in this file's module graph fails.
const loads = vi.hoisted(() => ({ count: 0 }));
vi.mock('node-llama-cpp', () => {
  loads.count++;
  throw new Error('node-llama-cpp must not be loaded by the definition');
});

const { llamaCppBackend, resolveLlamaCppOptions, physicalCoreCount } = await import('./index.js');

/** A config folder whose templates/ holds these files; returns the folder. */
function configWithTemplates(files: Record<string, string>): string {
  const configDir = mkdtempSync(join(tmpdir(), 'llmq-templates-'));
  mkdirSync(join(configDir, 'templates'));
  for (const [name, text] of Object.entries(files)) writeFileSync(join(configDir, 'templates', name), text);
  return configDir;
}

describe('llamaCppBackend definition', () => {
  it('imports without loading node-llama-cpp', () => {
    expect(llamaCppBackend.type).toBe('llama-cpp');
    expect(llamaCppBackend.kind).toBe('backend');
    expect(loads.count).toBe(0);
  });

  it('declares every generation parameter it honours, chat, completion and templates', () => {
    const caps = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf' });
    expect([...caps.params].sort()).toEqual(
      [
        'frequency_penalty',
        'max_tokens',
        'min_p',
        'min_tokens',
        'presence_penalty',
        'repeat_penalty',
        'response_format',
        'seed',
        'stop',
        'temperature',
        'top_k',
        'top_p',
      ].sort(),
    );
    expect(caps).toMatchObject({ chat: true, completion: true, templates: true });
  });

  it('refuses at enqueue a seed that would not repeat, and a multi-turn chat for a single-turn template', () => {
    const configDir = configWithTemplates({ 'phi3.template': '<|user|>{prompt}<|end|>', 'chatml.jinja': '{{ messages[0].content }}' });
    const caps = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf' }, { configDir });
    const check = (request: Record<string, unknown>) => caps.checkRequest?.({ model: 'm', ...request });
    expect(check({ prompt: 'x', seed: 4294967295 })).toMatchObject({ param: 'seed', message: expect.stringMatching(/random seed.*0 to 4294967294/) });
    expect(check({ prompt: 'x', seed: 4294967294 })).toBeUndefined();
    const turns = [
      { role: 'user', content: 'a' },
      { role: 'assistant', content: 'b' },
      { role: 'user', content: 'c' },
    ];
    expect(check({ messages: turns, template: 'phi3' })).toMatchObject({ param: 'messages', message: expect.stringContaining('single-turn') });
    expect(check({ messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'a' }], template: 'phi3' })).toBeUndefined();
    // A Jinja template takes any chat, and so does the model's own template.
    expect(check({ messages: turns, template: 'chatml' })).toBeUndefined();
    expect(check({ messages: turns })).toBeUndefined();
    // The model's default template counts too.
    const withDefault = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf', template: 'phi3' }, { configDir });
    expect(withDefault.checkRequest?.({ model: 'm', messages: turns } as never)).toMatchObject({ param: 'messages' });
  });

  it('refuses at enqueue a min_tokens the context cannot hold, when context_size is set', () => {
    const sized = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf', context_size: 512 }, { configDir: configWithTemplates({}) });
    expect(sized.checkRequest?.({ model: 'm', prompt: 'x', min_tokens: 512 })).toMatchObject({ param: 'min_tokens', message: expect.stringMatching(/context of 512 tokens.*fewer than 512/) });
    expect(sized.checkRequest?.({ model: 'm', prompt: 'x', min_tokens: 511 })).toBeUndefined();
    // llama.cpp may round a context up to a multiple of 256: only what cannot fit that is refused.
    const odd = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf', context_size: 500 }, { configDir: configWithTemplates({}) });
    expect(odd.checkRequest?.({ model: 'm', prompt: 'x', min_tokens: 505 })).toBeUndefined();
    expect(odd.checkRequest?.({ model: 'm', prompt: 'x', min_tokens: 512 })).toMatchObject({ param: 'min_tokens', message: expect.stringMatching(/at most 512 tokens \(its context_size 500, rounded up\)/) });
    // Left to node-llama-cpp, the context's size is known only once the worker loads the model.
    const auto = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf' }, { configDir: configWithTemplates({}) });
    expect(auto.checkRequest?.({ model: 'm', prompt: 'x', min_tokens: 100_000 })).toBeUndefined();
  });

  it('looks a job\'s template up in the model\'s templates_dir at each check', () => {
    const configDir = configWithTemplates({ 'phi3.template': '<|user|>{prompt}<|end|>', 'notes.txt': 'not a template' });
    const caps = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf' }, { configDir });
    expect(caps.findTemplate?.('phi3')).toBeUndefined();
    expect(caps.findTemplate?.('chatml')).toEqual(['phi3']);
    // A file added later is found without a restart.
    writeFileSync(join(configDir, 'templates', 'chatml.jinja'), '{{ messages[0].content }}');
    expect(caps.findTemplate?.('chatml')).toBeUndefined();
    expect(caps.findTemplate?.('../templates/phi3')).toEqual(['chatml', 'phi3']);
    // The model's own templates_dir wins over the config's; a folder that is not there holds none.
    const own = resolveCapabilities(llamaCppBackend, { model_path: 'm.gguf', templates_dir: 'elsewhere' }, { configDir, templatesDir: join(configDir, 'templates') });
    expect(own.findTemplate?.('phi3')).toEqual([]);
  });

  it('validates options strictly', () => {
    const schema = llamaCppBackend.configSchema;
    expect(schema.safeParse({ model_path: 'm.gguf', threads: 2, gpu: false, gpu_layers: 'max', template: 'phi3' }).success).toBe(true);
    expect(schema.safeParse({ model_path: 'm.gguf', thread: 2 }).success).toBe(false);
    expect(schema.safeParse({}).success).toBe(false);
    expect(schema.safeParse({ model_path: 'm.gguf', gpu: true }).success).toBe(false);
    expect(schema.safeParse({ model_path: 'm.gguf', mmap: 'no' }).success).toBe(false);
    expect(schema.safeParse({ model_path: 'm.gguf', template: '../x' }).success).toBe(false);
    expect(schema.safeParse({ model_path: 'm.gguf', context_size: 8 }).success).toBe(false);
  });

  it('resolves defaults in one place: paths against the config dir, threads = physical cores', () => {
    const r = resolveLlamaCppOptions({ model_path: 'models/m.gguf' }, { configDir: '/etc/llmq' }, 4);
    expect(r).toMatchObject({
      modelPath: '/etc/llmq/models/m.gguf',
      templatesDir: '/etc/llmq/templates',
      threads: physicalCoreCount(),
      gpu: 'auto',
      gpuLayers: 'auto',
      mmap: false,
      sequences: 4,
      contextSize: undefined,
      template: undefined,
    });
    const abs = resolveLlamaCppOptions({ model_path: '/m.gguf', templates_dir: '/t', threads: 3, mmap: true }, { configDir: '/etc/llmq' }, 1);
    expect(abs).toMatchObject({ modelPath: '/m.gguf', templatesDir: '/t', threads: 3, mmap: true, sequences: 1 });
  });

  it('fails create() with ERR_DEPENDENCY_MISSING when node-llama-cpp cannot be loaded', async () => {
    const ctx = { logger: silentLogger, signal: new AbortController().signal, configDir: '/tmp', env: {} };
    const err = await Promise.resolve(llamaCppBackend.create({ name: 'm', config: { model_path: '/nope.gguf' }, concurrency: 1 }, ctx)).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(errorCode(err)).toBe('ERR_DEPENDENCY_MISSING');
    expect(loads.count).toBeGreaterThan(0);
  });
});
