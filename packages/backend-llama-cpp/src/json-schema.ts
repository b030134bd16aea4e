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

/** Keywords the grammar enforces (`anyOf`, `allOf` and `definitions` through {@link toGrammarSchema}). */
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
/** Keywords that describe and constrain nothing. */
const ANNOTATIONS = new Set(['title', 'description', '$schema', '$id', '$anchor', '$comment', 'examples', 'default', 'deprecated', 'readOnly', 'writeOnly']);
const FORMATS = new Set(['date-time', 'date', 'time']);
const TYPES = new Set(['string', 'number', 'integer', 'boolean', 'object', 'array', 'null']);

export interface SchemaProblem {
  /** Where, below the schema: `.properties.age.minimum`. */
  path: string;
  message: string;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The first part of `schema` that grammar-constrained decoding cannot enforce, or `undefined`. */
export function checkJsonSchema(schema: unknown, path = ''): SchemaProblem | undefined {
  if (typeof schema === 'boolean' && path !== '') return undefined;
  if (!isObject(schema)) return { path, message: 'must be a JSON schema object' };
  if ('allOf' in schema && Object.keys(schema).some((key) => key !== 'allOf' && key !== '$defs' && key !== 'definitions' && ENFORCED.has(key))) {
    return { path: `${path}.allOf`, message: 'allOf next to other keywords cannot be enforced (merge them into one schema)' };
  }
  for (const [key, value] of Object.entries(schema)) {
    const at = `${path}.${key}`;
    if (ANNOTATIONS.has(key)) continue;
    if (!ENFORCED.has(key)) {
      return {
        path: at,
        message: `"${key}" cannot be enforced by this model's grammar-constrained decoding, so the answer might not match; leave it out and check it after (enforced: ${[...ENFORCED].join(', ')})`,
      };
    }
    const problem = checkKeyword(key, value, at);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function checkEach(values: unknown, at: string): SchemaProblem | undefined {
  if (!Array.isArray(values) || values.length === 0) return { path: at, message: 'must be a non-empty array of schemas' };
  for (let i = 0; i < values.length; i++) {
    const problem = checkJsonSchema(values[i], `${at}[${i}]`);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function checkEachValue(values: unknown, at: string): SchemaProblem | undefined {
  if (!isObject(values)) return { path: at, message: 'must be an object of schemas' };
  for (const [name, sub] of Object.entries(values)) {
    const problem = checkJsonSchema(sub, `${at}.${name}`);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

function checkKeyword(key: string, value: unknown, at: string): SchemaProblem | undefined {
  switch (key) {
    case 'type': {
      const types = Array.isArray(value) ? value : [value];
      const bad = types.find((t) => typeof t !== 'string' || !TYPES.has(t));
      return bad === undefined && types.length > 0 ? undefined : { path: at, message: `must be one of ${[...TYPES].join(', ')}, or an array of them` };
    }
    case 'properties':
    case '$defs':
    case 'definitions':
      return checkEachValue(value, at);
    case 'additionalProperties':
    case 'items':
      return typeof value === 'boolean' ? undefined : checkJsonSchema(value, at);
    case 'prefixItems':
    case 'oneOf':
    case 'anyOf':
      return checkEach(value, at);
    case 'allOf':
      return Array.isArray(value) && value.length === 1
        ? checkJsonSchema(value[0], `${at}[0]`)
        : { path: at, message: 'only an allOf of one schema can be enforced (merge the schemas into one)' };
    case 'format':
      return typeof value === 'string' && FORMATS.has(value)
        ? undefined
        : { path: at, message: `format "${String(value)}" cannot be enforced (enforced: ${[...FORMATS].join(', ')}); leave it out and check it after` };
    case '$ref':
      return typeof value === 'string' && /^#\/(\$defs|definitions)\/[^/]+$/.test(value)
        ? undefined
        : { path: at, message: 'only references to "#/$defs/<name>" (or "#/definitions/<name>") can be followed' };
    default:
      return undefined;
  }
}

/**
 * The schema as node-llama-cpp's grammar should see it (a checked schema): `anyOf` as `oneOf`
 * (for generation both are "one of these": a value the grammar allows matches at least one),
 * a one-schema `allOf` merged into its parent, and `definitions` as `$defs`.
 */
export function toGrammarSchema(schema: unknown): unknown {
  if (Array.isArray(schema)) return schema.map(toGrammarSchema);
  if (!isObject(schema)) return schema;
  const eachValue = (value: unknown) => (isObject(value) ? Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toGrammarSchema(v)])) : value);
  let out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === 'anyOf') out.oneOf = toGrammarSchema(value);
    else if (key === 'definitions' || key === '$defs') out.$defs = { ...(out.$defs as object | undefined), ...(eachValue(value) as object) };
    else if (key === 'properties') out.properties = eachValue(value);
    else if (key === '$ref' && typeof value === 'string') out.$ref = value.replace(/^#\/definitions\//, '#/$defs/');
    // Checked: a one-schema allOf stands alone but for annotations.
    else if (key === 'allOf' && Array.isArray(value) && value.length === 1) out = { ...out, ...(toGrammarSchema(value[0]) as Record<string, unknown>) };
    else if (key === 'enum' || key === 'const' || key === 'required' || ANNOTATIONS.has(key)) out[key] = value;
    else out[key] = toGrammarSchema(value);
  }
  return out;
}
