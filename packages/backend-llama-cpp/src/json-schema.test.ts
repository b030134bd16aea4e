import { describe, expect, it } from 'vitest';
import { checkJsonSchema, toGrammarSchema } from './json-schema.js';

/** What pydantic v2 writes for a model with an optional field, a nested model and an enum. */
const pydanticLike = {
  title: 'Ticket',
  type: 'object',
  $defs: { Priority: { title: 'Priority', type: 'string', enum: ['low', 'high'] }, Who: { type: 'object', properties: { name: { type: 'string', maxLength: 40 } }, required: ['name'] } },
  properties: {
    summary: { title: 'Summary', type: 'string', description: 'one line' },
    priority: { $ref: '#/$defs/Priority' },
    owner: { anyOf: [{ $ref: '#/$defs/Who' }, { type: 'null' }], default: null },
    due: { type: 'string', format: 'date' },
    tags: { type: 'array', items: { type: 'string' }, maxItems: 3 },
  },
  required: ['summary', 'priority'],
  additionalProperties: false,
};

describe('checkJsonSchema', () => {
  it('accepts what the grammar enforces, annotations included', () => {
    expect(checkJsonSchema(pydanticLike)).toBeUndefined();
    expect(checkJsonSchema({ type: ['integer', 'null'] })).toBeUndefined();
    expect(checkJsonSchema({ allOf: [{ $ref: '#/definitions/A' }], description: 'x', definitions: { A: { type: 'integer' } } })).toBeUndefined();
  });

  it('names the first keyword it cannot enforce, where it is', () => {
    const at = (schema: unknown) => checkJsonSchema(schema)?.path;
    expect(at({ type: 'object', properties: { age: { type: 'integer', minimum: 0 } } })).toBe('.properties.age.minimum');
    expect(at({ type: 'array', items: { type: 'string', pattern: '^a' } })).toBe('.items.pattern');
    expect(at({ type: 'string', format: 'email' })).toBe('.format');
    expect(at({ allOf: [{ type: 'string' }, { maxLength: 3 }] })).toBe('.allOf');
    expect(at({ type: 'object', allOf: [{ properties: {} }] })).toBe('.allOf');
    expect(at({ $ref: 'https://example.com/schema.json' })).toBe('.$ref');
    expect(at({ oneOf: [{ type: 'string' }, { not: { type: 'null' } }] })).toBe('.oneOf[1].not');
    expect(at({ type: 'date' })).toBe('.type');
    expect(at({ $defs: { A: { type: 'number', multipleOf: 2 } } })).toBe('.$defs.A.multipleOf');
    expect(checkJsonSchema({ type: 'object', properties: { a: { minimum: 1 } } })?.message).toMatch(/^"minimum" cannot be enforced by this model's grammar-constrained decoding/);
  });
});

describe('toGrammarSchema', () => {
  it('writes anyOf as oneOf, definitions as $defs, and a lone allOf into its parent', () => {
    expect(toGrammarSchema({ anyOf: [{ type: 'string' }, { type: 'null' }] })).toEqual({ oneOf: [{ type: 'string' }, { type: 'null' }] });
    expect(toGrammarSchema({ properties: { a: { $ref: '#/definitions/A' } }, definitions: { A: { anyOf: [{ type: 'integer' }] } } })).toEqual({
      properties: { a: { $ref: '#/$defs/A' } },
      $defs: { A: { oneOf: [{ type: 'integer' }] } },
    });
    expect(toGrammarSchema({ description: 'd', allOf: [{ type: 'string', maxLength: 2 }] })).toEqual({ description: 'd', type: 'string', maxLength: 2 });
    // Values that are not schemas are left as they are.
    expect(toGrammarSchema({ enum: [{ anyOf: 1 }], const: { definitions: 2 }, default: { anyOf: 3 } })).toEqual({ enum: [{ anyOf: 1 }], const: { definitions: 2 }, default: { anyOf: 3 } });
  });
});
