import { z } from 'zod';
import { LlmqError } from './errors.js';
import type { BackendCapabilities } from './adapters.js';
import { GENERATION_PARAMS, generationParamsShape, jobRequestSchema, type JobRequest } from './schemas.js';

/** `a.b[2].c` from a zod path. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out;
}

/**
 * zod says only "Invalid input" when a value matches no branch of a union. When the value has the
 * type of exactly one branch, that branch's complaint is the one that helps; when it has none of
 * the types, name them (`Invalid input: expected string or array`).
 */
function explainUnion(issue: z.core.$ZodIssueInvalidUnion): { path: readonly PropertyKey[]; message: string } {
  const expected = new Set<string>();
  const matched: z.core.$ZodIssue[][] = [];
  for (const branch of issue.errors) {
    const only = branch.length === 1 ? branch[0] : undefined;
    if (only?.code === 'invalid_type' && only.path.length === 0) expected.add(only.expected);
    else matched.push(branch);
  }
  const inner = matched.length === 1 ? matched[0]?.[0] : undefined;
  if (inner) return { path: inner.path as PropertyKey[], message: inner.message };
  const message = matched.length === 0 && expected.size > 0 ? `${issue.message}: expected ${[...expected].join(' or ')}` : issue.message;
  return { path: [], message };
}

/**
 * The first issue of a zod error: the dotted key it is about (for an unknown key, that key) and
 * zod's message (`unknown key` for an unknown key). `key` is '' for the value as a whole.
 */
export function firstIssue(error: z.ZodError): { key: string; message: string; unknownKey: boolean } {
  const first = error.issues[0];
  if (!first) return { key: '', message: 'invalid', unknownKey: false };
  // z.int()'s own safe-integer bound (±9007199254740991) comes before the field's real limit: say the real one.
  const issue =
    (first.code === 'too_big' || first.code === 'too_small') && first.origin === 'int'
      ? (error.issues.find((i) => i !== first && i.code === first.code && formatPath(i.path as PropertyKey[]) === formatPath(first.path as PropertyKey[])) ?? first)
      : first;
  const base = formatPath(issue.path as PropertyKey[]);
  if (issue.code === 'unrecognized_keys') {
    const key = String(issue.keys[0] ?? '');
    return { key: base ? `${base}.${key}` : key, message: 'unknown key', unknownKey: true };
  }
  if (issue.code === 'invalid_union' && issue.message === 'Invalid input') {
    const { path, message } = explainUnion(issue);
    return { key: formatPath([...(issue.path as PropertyKey[]), ...path]), message, unknownKey: false };
  }
  return { key: base, message: issue.message, unknownKey: false };
}

/** The first zod issue as an LlmqError whose `param` names the field and whose message says what to fix. */
export function zodToLlmqError(error: z.ZodError, prefix = ''): LlmqError {
  if (error.issues.length === 0) return new LlmqError('ERR_REQUEST_INVALID', 'invalid request');
  const { key, message, unknownKey } = firstIssue(error);
  const param = prefix && key ? `${prefix}.${key}` : prefix || key;
  if (unknownKey) return new LlmqError('ERR_REQUEST_INVALID', `unknown field "${param}"`, { param });
  return new LlmqError('ERR_REQUEST_INVALID', param ? `${param}: ${message}` : message, { param: param || undefined });
}

/** Parses a job request body; throws an ERR_REQUEST_INVALID naming the bad field. */
export function parseJobRequest(body: unknown, prefix = ''): JobRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new LlmqError('ERR_REQUEST_INVALID', 'the body must be a JSON object', { param: prefix || undefined });
  }
  const parsed = jobRequestSchema.safeParse(body);
  if (!parsed.success) throw zodToLlmqError(parsed.error, prefix);
  return parsed.data;
}

const generationParamsSchema = z.object(generationParamsShape);

/**
 * The first generation parameter in `values` (e.g. a model's config `defaults`) that a request
 * could not give, with the schema's message; keys that are not generation parameters are ignored.
 */
export function invalidGenerationParam(values: Record<string, unknown>): { key: string; message: string } | undefined {
  const parsed = generationParamsSchema.safeParse(values);
  return parsed.success ? undefined : firstIssue(parsed.error);
}

/** A template name a backend's `findTemplate` did not find, with the ones it has. */
export function noTemplate(name: string, available: readonly string[]): string {
  return `no template "${name}" (available: ${available.join(', ') || 'none'})`;
}

/** Rejects parameters or prompt forms the model's backend cannot honour. */
export function checkCapabilities(request: JobRequest, caps: BackendCapabilities, backendType: string, prefix = ''): void {
  const p = (name: string) => (prefix ? `${prefix}.${name}` : name);
  if (request.messages !== undefined && !caps.chat) {
    throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `${p('messages')}: the ${backendType} backend of model "${request.model}" takes "prompt", not "messages"`, { param: p('messages') });
  }
  if (request.prompt !== undefined && !caps.completion) {
    throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `${p('prompt')}: the ${backendType} backend of model "${request.model}" takes "messages", not "prompt"`, { param: p('prompt') });
  }
  if (request.template !== undefined && !caps.templates) {
    throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `${p('template')}: the ${backendType} backend of model "${request.model}" does not take named templates`, { param: p('template') });
  }
  const others = request.template === undefined ? undefined : caps.findTemplate?.(request.template);
  if (others !== undefined) {
    throw new LlmqError('ERR_REQUEST_INVALID', `${p('template')}: model "${request.model}" has ${noTemplate(request.template ?? '', others)}`, { param: p('template') });
  }
  const problem = caps.checkRequest?.(request);
  if (problem !== undefined) {
    throw new LlmqError('ERR_REQUEST_UNSUPPORTED_PARAM', `${p(problem.param)}: ${problem.message}`, { param: p(problem.param) });
  }
  const allowed = new Set<string>(caps.params);
  for (const name of GENERATION_PARAMS) {
    if (request[name] !== undefined && !allowed.has(name)) {
      throw new LlmqError(
        'ERR_REQUEST_UNSUPPORTED_PARAM',
        `${p(name)}: not supported by the ${backendType} backend of model "${request.model}" (supported: ${[...allowed].join(', ')})`,
        { param: p(name) },
      );
    }
  }
}
