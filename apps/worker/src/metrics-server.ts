import { createServer, type Server } from 'node:http';
import { register as defaultRegistry, type Registry } from 'prom-client';
import { listen } from '@llmq/core';

/** The worker's own Prometheus endpoint (`GET /metrics`), so every worker process is scraped. */
export async function startMetricsServer(port: number, host = '0.0.0.0', registry: Registry = defaultRegistry): Promise<Server> {
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
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{"status":"ok"}');
    } else {
      res.writeHead(404).end();
    }
  });
  await listen(server, {
    port,
    host,
    setting: 'worker.metrics_port (env LLMQ_METRICS_PORT)',
    fix: 'each worker on a host needs a port of its own (or 0, which turns its /metrics off)',
  });
  return server;
}
