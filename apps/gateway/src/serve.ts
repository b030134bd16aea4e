import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { listen, type Logger } from '@llmq/core';
import type { Platform } from '@llmq/platform';
import type { Registry } from 'prom-client';
import { createGateway, type Gateway } from './app.js';

export interface ServedGateway {
  gateway: Gateway;
  server: Server;
  url: string;
  close(): Promise<void>;
}

/** Builds the gateway and listens on `gateway.port` (0 picks a free port). */
export async function serveGateway(options: { platform: Platform; logger: Logger; registry?: Registry; port?: number; host?: string }): Promise<ServedGateway> {
  const config = options.platform.config;
  const gateway = await createGateway(options);
  gateway.finalize();
  if (config.gateway.api_keys.length === 0) options.logger.warn('no API keys configured (LLMQ_API_KEYS): the API is open to anyone who can reach it');
  const port = options.port ?? config.gateway.port;
  const host = options.host ?? config.gateway.host;
  const server = createServer(gateway.app);
  try {
    // A port passed in (`llmq dev --port`) is not the config's.
    const setting = options.port === undefined ? 'gateway.port (env PORT)' : 'port';
    await listen(server, { port, host, setting, fix: 'stop that process or choose another port' });
  } catch (err) {
    await gateway.close();
    throw err;
  }
  server.keepAliveTimeout = 65_000;
  const address = server.address() as AddressInfo;
  const url = `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${address.port}`;
  options.logger.info({ url, admin: config.gateway.admin.enabled ? `${url}${config.gateway.admin.path}` : null }, 'gateway listening');
  return {
    gateway,
    server,
    url,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      await gateway.close();
    },
  };
}
