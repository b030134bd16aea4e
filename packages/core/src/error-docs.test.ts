import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { renderErrorDocs } from './error-docs.js';

describe('docs/errors.md', () => {
  it('lists every error code as the registry defines it (run `npm run docs:errors` to refresh)', () => {
    const file = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8');
    expect(file).toBe(renderErrorDocs());
  });
});
