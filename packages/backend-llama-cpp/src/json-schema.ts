/**
 * JSON schemas for grammar-constrained decoding: what node-llama-cpp 3.22's grammar can enforce,
 * checked at enqueue, and the rewrites that make it enforce what it otherwise gets wrong.
 *
 * node-llama-cpp turns a schema into a GBNF grammar but silently ignores every keyword it does
 * not know, and some it misreads: `anyOf` / `allOf` become `null`, a `#/definitions/` reference
 * becomes "any JSON", `pattern`, `minimum` or `format: "email"` constrain nothing. The answer
 * would then parse but not match the schema, which is the one thing `json_schema` promises. So a
 * schema using a keyword the grammar cannot enforce is a 400 at enqueue, and the forms it can
 * express another way are rewritten ({@link toGrammarSchema}).
 */

import type { ResponseFormat } from '@llmq/core';

/** Keywords the grammar enforces (some only in the combinations {@link checkJsonSchema} allows). */
const ENFORCED = new Set([
  'type',
  'properties',
  'required',
  'additionalProperties',
  'minProperties',
  'maxProperties',
  'items',
  'prefixItems',
  'minItems',
  'maxItems',
  'enum',
  'const',
  'oneOf',
  'anyOf',
  'allOf',
  'minLength',
  'maxLength',
  'format',
  '$ref',
  '$defs',
  'definitions',
]);
/** Keywords that describe and constrain nothing (and `x-…` extensions). */
const ANNOTATIONS = new Set([
  'title',
  'description',
  '$schema',
  '$id',
  '$anchor',
  '$comment',
  'examples',
  'default',
  'deprecated',
  'readOnly',
  'writeOnly',
  'discriminator',
  'contentEncoding',
  'contentMediaType',
]);
const FORMATS = new Set(['date-time', 'date', 'time']);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null']);
/** node-llama-cpp reads one of these per schema and drops every other keyword beside it. */
const EXCLUSIVE = ['$ref', 'oneOf', 'anyOf', 'allOf'] as const;

export interface SchemaProblem {
  /** Where, below the schema: `.properties.age.minimum`. */
  path: string;
  message: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isAnnotation = (key: string) => ANNOTATIONS.has(key) || key.startsWith('x-');
const isPrimitive = (v: unknown) => v === null || ['string', 'number', 'boolean'].includes(typeof v);
const problem = (path: string, message: string): SchemaProblem => ({ path, message });
/** `properties` that list something: `properties: {}` lists nothing, an open object as without it. */
const listsProperties = (v: unknown): v is Record<string, unknown> => isObject(v) && Object.keys(v).length > 0;

/** The first part of `schema` that grammar-constrained decoding cannot enforce, or `undefined`. */
export function checkJsonSchema(schema: unknown): SchemaProblem | undefined {
  if (!isObject(schema)) return problem('', 'must be a JSON schema object');
  const defs = new Set<string>();
  for (const key of ['$defs', 'definitions']) {
    const group = schema[key];
    if (!isObject(group)) continue;
    for (const name of Object.keys(group)) {
      if (defs.has(name)) return problem(`.${key}.${name}`, `"${name}" is defined in both $defs and definitions`);
      defs.add(name);
    }
  }
  return checkSchema(schema, '', defs, true);
}

/**
 * The largest minLength / maxLength / minItems / maxItems / min- or maxProperties enforced:
 * llama.cpp's grammar parser refuses a string of 1,001 characters or more (as node-llama-cpp writes
 * it), and arrays from about 1,000 items depending on their items.
 */
const MAX_COUNT = 1000;

function checkSchema(schema: unknown, path: string, defs: ReadonlySet<string>, root = false): SchemaProblem | undefined {
  if (schema === true) return undefined;
  if (!isObject(schema)) return problem(path, 'must be a schema object (or true)');
  const keys = Object.keys(schema).filter((key) => !isAnnotation(key));
  const unknown = keys.find((key) => !ENFORCED.has(key));
  if (unknown !== undefined) {
    return problem(
      `${path}.${unknown}`,
      `"${unknown}" cannot be enforced by this model's grammar-constrained decoding, so the answer might not match; leave it out and check it after (enforced: ${[...ENFORCED].join(', ')})`,
    );
  }
  const constraints = keys.filter((key) => key !== '$defs' && key !== 'definitions');
  for (const key of EXCLUSIVE) {
    if (constraints.includes(key) && constraints.length > 1) {
      return problem(`${path}.${key}`, `${key} next to other keywords cannot be enforced (move them into ${key === '$ref' ? 'the referenced schema' : 'each alternative'})`);
    }
  }
  if (!root && keys.some((key) => key === '$defs' || key === 'definitions')) return problem(path, 'definitions are followed only at the top of the schema');
  if ('format' in schema && ('minLength' in schema || 'maxLength' in schema)) return problem(`${path}.format`, 'format next to minLength/maxLength cannot be enforced (the format wins)');
  const properties = listsProperties(schema.properties) ? schema.properties : undefined;
  const extra = schema.additionalProperties;
  if (properties !== undefined && extra !== undefined && extra !== false) {
    return problem(`${path}.additionalProperties`, 'additionalProperties next to properties cannot be enforced (an extra key may repeat a listed one); use false, or leave properties out');
  }
  // Without properties an object is open (additionalProperties, or any values when left out).
  if (('minProperties' in schema || 'maxProperties' in schema) && (properties !== undefined || extra === false)) {
    return problem(`${path}.${'minProperties' in schema ? 'minProperties' : 'maxProperties'}`, 'minProperties/maxProperties are enforced only on an object without properties whose additionalProperties is not false');
  }
  for (const key of keys) {
    const found = checkKeyword(schema, key, `${path}.${key}`, defs);
    if (found !== undefined) return found;
  }
  return undefined;
}

function checkEach(values: unknown, at: string, defs: ReadonlySet<string>): SchemaProblem | undefined {
  if (!Array.isArray(values) || values.length === 0) return problem(at, 'must be a non-empty array of schemas');
  for (let i = 0; i < values.length; i++) {
    const found = checkSchema(values[i], `${at}[${i}]`, defs);
    if (found !== undefined) return found;
  }
  return undefined;
}

function checkEachValue(values: unknown, at: string, defs: ReadonlySet<string>): SchemaProblem | undefined {
  if (!isObject(values)) return problem(at, 'must be an object of schemas');
  for (const [name, sub] of Object.entries(values)) {
    const found = checkSchema(sub, `${at}.${name}`, defs);
    if (found !== undefined) return found;
  }
  return undefined;
}

function checkKeyword(schema: Record<string, unknown>, key: string, at: string, defs: ReadonlySet<string>): SchemaProblem | undefined {
  const value = schema[key];
  switch (key) {
    case 'type': {
      const types = Array.isArray(value) ? value : [value];
      const ok = types.length > 0 && types.every((t) => typeof t === 'string' && TYPES.has(t));
      if (!ok) return problem(at, `must be one of ${[...TYPES].join(', ')}, or an array of them`);
      return Array.isArray(value) && ('oneOf' in schema || 'anyOf' in schema) ? problem(at, 'a list of types next to oneOf/anyOf cannot be enforced') : undefined;
    }
    case 'properties':
    case '$defs':
    case 'definitions':
      return checkEachValue(value, at, defs);
    case 'required': {
      if (!Array.isArray(value)) return problem(at, 'must be an array of property names');
      const listed = isObject(schema.properties) ? schema.properties : {};
      const missing = value.find((name) => typeof name !== 'string' || !(name in listed));
      return missing === undefined ? undefined : problem(at, `"${String(missing)}" is required but not in properties, so it would never be written`);
    }
    case 'additionalProperties':
      return value === false ? undefined : checkSchema(value, at, defs);
    case 'items':
      return value === false ? problem(at, 'items: false cannot be enforced; give maxItems instead') : checkSchema(value, at, defs);
    case 'prefixItems': {
      const found = checkEach(value, at, defs);
      if (found !== undefined) return found;
      const max = schema.maxItems;
      return typeof max === 'number' && Array.isArray(value) && value.length > max ? problem(at, `holds ${value.length} schemas but maxItems is ${max}`) : undefined;
    }
    case 'oneOf':
    case 'anyOf':
      return checkEach(value, at, defs);
    case 'allOf':
      return Array.isArray(value) && value.length === 1 ? checkSchema(value[0], `${at}[0]`, defs) : problem(at, 'only an allOf of one schema can be enforced (merge the schemas into one)');
    case 'enum':
      return Array.isArray(value) && value.length > 0 && value.every(isPrimitive) ? undefined : problem(at, 'must list strings, numbers, booleans or null (objects and arrays cannot be enforced)');
    case 'const':
      return isPrimitive(value) ? undefined : problem(at, 'must be a string, number, boolean or null (objects and arrays cannot be enforced)');
    case 'format':
      return typeof value === 'string' && FORMATS.has(value) ? undefined : problem(at, `format "${String(value)}" cannot be enforced (enforced: ${[...FORMATS].join(', ')}); leave it out and check it after`);
    case 'minLength':
    case 'maxLength':
    case 'minItems':
    case 'maxItems':
    case 'minProperties':
    case 'maxProperties': {
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) return problem(at, 'must be a whole number, 0 or more');
      // llama.cpp refuses a grammar that repeats a rule more often (a job would fail in the worker).
      if (value > MAX_COUNT) return problem(at, `at most ${MAX_COUNT} can be enforced by the grammar`);
      const max = key.startsWith('min') ? `max${key.slice(3)}` : undefined;
      const bound = max === undefined ? undefined : schema[max];
      return typeof bound === 'number' && value > bound ? problem(at, `${key} ${value} is more than ${max} ${bound}: no answer could match`) : undefined;
    }
    case '$ref': {
      const match = typeof value === 'string' ? /^#\/(?:\$defs|definitions)\/([^/]+)$/.exec(value) : null;
      if (match === null) return problem(at, 'only references to "#/$defs/<name>" (or "#/definitions/<name>") can be followed');
      return defs.has(match[1] ?? '') ? undefined : problem(at, `"${String(value)}" names no definition at the top of the schema`);
    }
    default:
      return undefined;
  }
}

/**
 * The first problem of a request's `response_format` schema, as the request field it is about;
 * `undefined` for any other format. Tolerates an unparsed value (config defaults reach here).
 */
export function responseFormatProblem(format: ResponseFormat | undefined): { param: string; message: string } | undefined {
  if (format?.type !== 'json_schema') return undefined;
  const problem = checkJsonSchema((format.json_schema as Partial<typeof format.json_schema> | undefined)?.schema);
  return problem === undefined ? undefined : { param: `response_format.json_schema.schema${problem.path}`, message: problem.message };
}

/** The definition {@link toGrammarSchema} adds for "any JSON value" (node-llama-cpp has no schema for it). */
export const ANY_JSON_DEF = '__llmq_any_json';
const ANY_JSON_REF = { $ref: `#/$defs/${ANY_JSON_DEF}` };
/** Keywords that say which kind of value a schema is (without one, node-llama-cpp writes `null`). */
const KIND_KEYWORDS = ['type', 'oneOf', 'anyOf', 'allOf', 'enum', 'const', '$ref'];
/** The keywords that apply to each type; the others are ignored by JSON Schema for a value of it. */
const KEYWORDS_OF: Record<string, readonly string[]> = {
  object: ['properties', 'required', 'additionalProperties', 'minProperties', 'maxProperties'],
  array: ['items', 'prefixItems', 'minItems', 'maxItems'],
  string: ['minLength', 'maxLength', 'format'],
};

/**
 * The schema as node-llama-cpp's grammar should see it (a checked schema): `anyOf` as `oneOf`
 * (for generation both are "one of these": a value the grammar allows matches at least one), a
 * list of types as a `oneOf` of one schema per type (node-llama-cpp reads `["object", "null"]` as
 * always null), a one-schema `allOf` merged into its parent, and `definitions` as `$defs`.
 *
 * What JSON Schema leaves open stays open, where node-llama-cpp would close it to one answer:
 * a schema without a type (`{}`, `true`, pydantic's `Any`) is any value, not always `null`,
 * and one whose keywords describe an object (an array, a string), such as a bare `{ properties }`,
 * is that; `{ type: "object" }` without properties is any object, not
 * always `{}`; `{ type: "array" }` without items holds any values, not none. "Any value" is a
 * definition added at the top, {@link ANY_JSON_DEF}.
 */
export function toGrammarSchema(schema: unknown): unknown {
  const state = { anyJson: false };
  const out = rewrite(schema, state);
  if (!state.anyJson) return out;
  const any = {
    oneOf: [{ type: 'string' }, { type: 'number' }, { type: 'boolean' }, { type: 'null' }, { type: 'array', items: ANY_JSON_REF }, { type: 'object', additionalProperties: true }],
  };
  const root: Record<string, unknown> = isObject(out) ? out : ANY_JSON_REF;
  return { ...root, $defs: { ...(root.$defs as object | undefined), [ANY_JSON_DEF]: any } };
}

function rewrite(schema: unknown, state: { anyJson: boolean }): unknown {
  if (schema === true) {
    state.anyJson = true;
    return ANY_JSON_REF;
  }
  if (Array.isArray(schema)) return schema.map((s) => rewrite(s, state));
  if (!isObject(schema)) return schema;
  const eachValue = (value: unknown) => (isObject(value) ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, rewrite(v, state)])) : value);
  let out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'anyOf') out.oneOf = rewrite(value, state);
    else if (key === 'definitions' || key === '$defs') out.$defs = { ...(out.$defs as object | undefined), ...(eachValue(value) as object) };
    else if (key === 'properties') out.properties = eachValue(value);
    else if (key === '$ref' && typeof value === 'string') out.$ref = value.replace(/^#\/definitions\//, '#/$defs/');
    else if (key === 'allOf' && Array.isArray(value) && value.length === 1) {
      // Checked: a one-schema allOf stands alone but for annotations and definitions.
      const inner = rewrite(value[0], state) as Record<string, unknown>;
      const $defs = out.$defs === undefined && inner.$defs === undefined ? undefined : { ...(out.$defs as object | undefined), ...(inner.$defs as object | undefined) };
      out = { ...out, ...inner, ...($defs === undefined ? {} : { $defs }) };
    } else if (key === 'enum' || key === 'const' || key === 'required' || key === 'type' || isAnnotation(key)) out[key] = value;
    else out[key] = rewrite(value, state);
  }
  const { $defs, ...rest } = out;
  const annotations = Object.fromEntries(Object.entries(rest).filter(([key]) => isAnnotation(key)));
  const keywords = Object.fromEntries(Object.entries(rest).filter(([key]) => !isAnnotation(key)));
  const withDefs = (s: Record<string, unknown>) => ({ ...annotations, ...($defs === undefined ? {} : { $defs }), ...s });
  if (Object.keys(keywords).some((key) => KIND_KEYWORDS.includes(key)) && !Array.isArray(keywords.type)) return withDefs(openEnded(keywords, state));
  let types: string[];
  if (Array.isArray(keywords.type)) types = keywords.type as string[];
  else {
    // No type. Without keywords: any value. With keywords of an object (or an array, a string),
    // that: what they describe, and an answer that matches (any value would, `null` included).
    types = Object.keys(KEYWORDS_OF).filter((t) => KEYWORDS_OF[t]!.some((key) => key in keywords));
    if (types.length === 0) {
      state.anyJson = true;
      return withDefs(ANY_JSON_REF);
    }
  }
  const { type: _type, ...constraints } = keywords;
  const alternatives = types.map((t) => openEnded(t === 'null' ? { type: t } : { ...constraints, type: t }, state));
  return withDefs(alternatives.length === 1 ? alternatives[0]! : { oneOf: alternatives });
}

/** An object without properties is any object, an array without items any array (JSON Schema's reading). */
function openEnded(s: Record<string, unknown>, state: { anyJson: boolean }): Record<string, unknown> {
  if (s.type === 'object' && !listsProperties(s.properties)) {
    const { properties: _none, ...rest } = s;
    return rest.additionalProperties === undefined ? { ...rest, additionalProperties: true } : rest;
  }
  if (s.type === 'array' && s.items === undefined && s.prefixItems === undefined) {
    state.anyJson = true;
    return { ...s, items: ANY_JSON_REF };
  }
  return s;
}
