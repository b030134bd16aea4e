#!/usr/bin/env node
// The `llmq` command. A committed file rather than dist/main.js, so that `npm install` (which
// runs before the build) can link it: `npx llmq …` then works once `npm run build` has run.
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const main = fileURLToPath(new URL('../dist/main.js', import.meta.url));
if (!existsSync(main)) {
  console.error('llmq: the command is not built yet; run `npm run build` in the repository first');
  process.exit(1);
}
await import(pathToFileURL(main).href);
