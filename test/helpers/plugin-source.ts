/**
 * Source of a plugin module written to a temp dir outside the workspace at test time: it proves
 * plugins load from any path, and gives tests a backend that fails, records and waits on command.
 * It imports nothing, so it needs no node_modules next to it.
 */
export const TEST_PLUGIN_SOURCE = `
import { appendFileSync, existsSync } from 'node:fs';

const defaults = { delay_ms: 0, record_file: null, fail_file: null };

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason); }, { once: true });
  });
}

export const scriptedSource = {
  kind: 'source',
  type: 'test-source',
  configSchema: { safeParse: (v) => ({ success: true, data: { count: 10, model: 'echo', redeliver: true, ...(v ?? {}) } }) },
  create({ name, config }, ctx) {
    let acked = 0;
    return {
      name,
      acked: () => acked,
      async check() {},
      async close() {},
      async start() {
        const jobs = Array.from({ length: config.count }, (_, i) => ({ id: 'test:' + name + ':' + i, request: { model: config.model, prompt: 'doc ' + i }, source: { type: 'test-source', ref: { i } } }));
        const first = await ctx.enqueue(jobs);
        // A re-delivery of the same messages collapses on their ids.
        const again = config.redeliver ? await ctx.enqueue(jobs) : [];
        acked = first.length;
        ctx.logger.info({ created: first.filter((r) => r.created).length, recreated: again.filter((r) => r.created).length }, 'test source enqueued');
      },
    };
  },
};

export const scriptedSink = {
  kind: 'sink',
  type: 'test-sink',
  configSchema: { safeParse: (v) => ({ success: true, data: { record_file: null, fail_file: null, ...(v ?? {}) } }) },
  create({ name, config }) {
    return {
      name,
      async check() {},
      async close() {},
      async write(input) {
        if (config.fail_file && existsSync(config.fail_file)) throw new Error('ERR_SINK_WRITE: receiver down');
        if (config.record_file) appendFileSync(config.record_file, input.jobId + ' ' + input.result.text + '\\n');
      },
      async writeUsage(record) {
        if (config.fail_file && existsSync(config.fail_file)) throw new Error('ERR_SINK_WRITE: receiver down');
        if (config.record_file) appendFileSync(config.record_file, 'usage ' + JSON.stringify(record) + '\\n');
      },
    };
  },
};

export const scriptedBackend = {
  kind: 'backend',
  type: 'test-scripted',
  configSchema: {
    safeParse(value) {
      const v = { ...defaults, ...(value ?? {}) };
      const bad = Object.keys(v).find((k) => !(k in defaults));
      if (bad) return { success: false, error: { issues: [{ code: 'unrecognized_keys', keys: [bad], path: [], message: 'unknown key' }] } };
      return { success: true, data: v };
    },
  },
  capabilities: { params: ['max_tokens'], chat: true, completion: true },
  create({ name, config }) {
    return {
      name,
      async check() {},
      async close() {},
      async generate(input) {
        if (config.record_file) appendFileSync(config.record_file, input.jobId + ' ' + Date.now() + '\\n');
        const meta = input.request.metadata ?? {};
        if (input.attempt <= (meta.fail_attempts ?? 0)) throw new Error('ERR_BACKEND_UNAVAILABLE: scripted failure on attempt ' + input.attempt);
        if (config.fail_file && existsSync(config.fail_file)) throw new Error('ERR_BACKEND_UNAVAILABLE: fail file present');
        if (meta.bad_request) throw new Error('ERR_BACKEND_BAD_REQUEST: scripted bad request');
        const delay = meta.delay_ms ?? config.delay_ms;
        if (delay > 0) await sleep(delay, input.signal);
        input.onToken('ok');
        return { text: 'ok:' + input.jobId, finish_reason: 'stop', usage: { prompt_tokens: 1, completion_tokens: 1 } };
      },
    };
  },
};
`;
