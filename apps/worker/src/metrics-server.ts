import { createServer, type Server } from 'node:http';
import { register as defaultRegistry, type Registry } from 'prom-client';
import { listen } from '@llmq/core';

export interface MetricsServer {
  server: Server;
  /**
   * From now on `/healthz` answers 200 (until then 503 `starting`): call it once the process takes
   * work. `problem`, when given, is asked on each request: a body it returns is answered with 503.
   */
  ready(problem?: () => object | undefined): void;
  close(): Promise<void>;
}

/**
 * The process's own Prometheus endpoint (`GET /metrics`), so every worker and connector is
 * scraped, and its `/healthz`. Started before the process takes any work, so a port in use stops
 * it with nothing in flight; `/healthz` says `starting` until {@link MetricsServer.ready}, so a
 * health check does not count a worker still loading its models as one that serves them.
 */
export async function startMetricsServer(port: number, host = '0.0.0.0', registry: Registry = defaultRegistry): Promise<MetricsServer> {
  let isReady = false;
  let problemOf: (() => object | undefined) | undefined;
  const server = createServer((req, res) => {
    if (req.url === '/metrics' || req.url?.startsWith('/metrics?')) {
      registry.metrics().then(
        (body) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(body);
        },
        (err: unknown) => {
          res.writeHead(500, { 'content-type': 'text/plain' });
          res.end(String(err));
        },
      );
    } else if (req.url === '/healthz') {
      const problem = isReady ? problemOf?.() : { status: 'starting' };
      res.writeHead(problem ? 503 : 200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(problem ?? { status: 'ok' }));
    } else {
      res.writeHead(404).end();
    }
  });
  await listen(server, {
    port,
    host,
    setting: 'worker.metrics_port (env LLMQ_METRICS_PORT)',
    fix: 'each worker or connector on a host needs a port of its own (or 0, which turns its /metrics off)',
  });
  return {
    server,
    ready(problem) {
      isReady = true;
      problemOf = problem;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
