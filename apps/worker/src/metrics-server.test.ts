import type { AddressInfo } from 'node:net';
import { Counter, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { startMetricsServer } from './metrics-server.js';

describe('the worker metrics server', () => {
  it('serves /metrics at once, and /healthz only once the process is ready', async () => {
    const registry = new Registry();
    new Counter({ name: 'probe_total', help: 'probe', registers: [registry] }).inc(3);
    const metrics = await startMetricsServer(0, '127.0.0.1', registry);
    try {
      const url = `http://127.0.0.1:${(metrics.server.address() as AddressInfo).port}`;
      const starting = await fetch(`${url}/healthz`);
      expect(starting.status).toBe(503);
      expect(await starting.json()).toEqual({ status: 'starting' });
      expect(await (await fetch(`${url}/metrics`)).text()).toContain('probe_total 3');
      metrics.ready();
      const ok = await fetch(`${url}/healthz`);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ status: 'ok' });
      expect((await fetch(`${url}/nope`)).status).toBe(404);
    } finally {
      await metrics.close();
    }
  });

  it('answers /healthz with 503 and the problem while the process reports one (a worker serving no model)', async () => {
    const metrics = await startMetricsServer(0, '127.0.0.1', new Registry());
    try {
      const url = `http://127.0.0.1:${(metrics.server.address() as AddressInfo).port}`;
      let problem: object | undefined = { status: 'serving_no_model', not_served: [{ model: 'm', reason: 'ERR_MODEL_FILE_MISSING: x' }] };
      metrics.ready(() => problem);
      const bad = await fetch(`${url}/healthz`);
      expect(bad.status).toBe(503);
      expect(await bad.json()).toEqual(problem);
      problem = undefined;
      const ok = await fetch(`${url}/healthz`);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ status: 'ok' });
    } finally {
      await metrics.close();
    }
  });
});
