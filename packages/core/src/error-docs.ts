import { ERROR_CODES } from './errors.js';

/** The text of docs/errors.md, generated from the one registry of codes. */
export function renderErrorDocs(): string {
  let out = `# Error codes

Every llmq error carries a code \`ERR_<AREA>_<WHAT>\`. HTTP errors have one shape everywhere (OpenAI's):

\`\`\`json
{ "error": { "message": "temperature: Too big: expected number to be <=2", "type": "invalid_request_error", "code": "ERR_REQUEST_INVALID", "param": "temperature" } }
\`\`\`

An error that carries machine-readable numbers adds \`details\` (only JSON scalars and short lists), e.g.
\`{ "prompt_tokens": 5000, "context_size": 4096 }\` for \`ERR_BACKEND_CONTEXT_LENGTH\` or
\`{ "retry_after_s": 5 }\` for \`ERR_QUEUE_FULL\`. A failed job shows them in its \`error\`
(\`GET /v1/jobs/:id\`, the \`failed\` event, the DLQ entry).

A failed job keeps its code at the start of BullMQ's failure reason (\`ERR_JOB_TIMEOUT: …\`), so check
errors by code (\`errorCode(err)\` from \`@llmq/core\`), never with \`instanceof\`. *Retried* says whether
a job failing with the code is attempted again (exponential backoff) before it is dead-lettered.

| code | HTTP | type | retried | meaning |
| --- | --- | --- | --- | --- |
`;
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    out += `| \`${code}\` | ${info.status} | ${info.type} | ${info.retryable ? 'yes' : 'no'} | ${info.meaning} |\n`;
  }
  out += '\nGenerated from `packages/core/src/errors.ts` by `npm run docs:errors`; a unit test fails when it is stale.\n';
  return out;
}
