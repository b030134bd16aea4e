import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const root = fileURLToPath(new URL('.', import.meta.url));

export default defineConfig({
  resolve: {
    // Tests run against the TypeScript sources of workspace packages, not their dist builds.
    alias: [
      { find: /^@llmq\/(gateway|worker|connector|cli)$/, replacement: `${root}apps/$1/src/index.ts` },
      { find: /^@llmq\/([a-z0-9-]+)$/, replacement: `${root}packages/$1/src/index.ts` },
    ],
  },
  test: {
    include: ['packages/*/src/**/*.test.ts', 'apps/*/src/**/*.test.ts', 'test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: integration suites start their own redis-server and child processes.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
