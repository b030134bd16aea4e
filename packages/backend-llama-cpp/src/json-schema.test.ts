import { describe, expect, it } from 'vitest';
import { ANY_JSON_DEF, checkJsonSchema, toGrammarSchema } from './json-schema.js';

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
    // pydantic's discriminated union; a dict with a size; a tuple; extensions.
    const pet = { oneOf: [{ $ref: '#/$defs/Cat' }, { $ref: '#/$defs/Dog' }], discriminator: { propertyName: 'kind', mapping: {} } };
    const cat = { type: 'object', properties: { kind: { const: 'cat' } }, required: ['kind'] };
    expect(checkJsonSchema({ type: 'object', properties: { pet }, $defs: { Cat: cat, Dog: { ...cat, properties: { kind: { const: 'dog' } } } } })).toBeUndefined();
    expect(checkJsonSchema({ type: 'object', additionalProperties: { type: 'integer' }, maxProperties: 3, 'x-origin': 'api' })).toBeUndefined();
    expect(checkJsonSchema({ type: 'array', prefixItems: [{ type: 'string' }, { type: 'integer' }], minItems: 2, maxItems: 2 })).toBeUndefined();
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
    // Combinations node-llama-cpp would read only part of.
    expect(at({ type: 'object', properties: { k: { type: 'string' } }, anyOf: [{ required: ['k'] }] })).toBe('.anyOf');
    expect(at({ $ref: '#/$defs/A', maxLength: 2, $defs: { A: { type: 'string' } } })).toBe('.$ref');
    expect(at({ type: ['string', 'null'], oneOf: [{ type: 'string' }] })).toBe('.oneOf');
    expect(at({ type: 'string', format: 'date', maxLength: 4 })).toBe('.format');
    expect(at({ type: 'object', properties: { a: { type: 'string' } }, required: ['a', 'b'] })).toBe('.required');
    expect(at({ type: 'object', properties: { a: { type: 'string' } }, additionalProperties: true })).toBe('.additionalProperties');
    expect(at({ type: 'object', properties: { a: { type: 'string' } }, minProperties: 2 })).toBe('.minProperties');
    expect(at({ type: 'object', properties: { a: false } })).toBe('.properties.a');
    expect(at({ type: 'array', prefixItems: [{ type: 'string' }], items: false })).toBe('.items');
    expect(at({ type: 'array', prefixItems: [{ type: 'string' }, { type: 'string' }], maxItems: 1 })).toBe('.prefixItems');
    expect(at({ enum: [{ a: 1 }] })).toBe('.enum');
    expect(at({ const: [1] })).toBe('.const');
    expect(at({ $ref: '#/$defs/Missing' })).toBe('.$ref');
    expect(at({ type: 'object', properties: { a: { $defs: { X: { type: 'string' } } } } })).toBe('.properties.a');
    expect(at({ $defs: { A: { type: 'string' } }, definitions: { A: { type: 'integer' } } })).toBe('.definitions.A');
    expect(checkJsonSchema({ type: 'object', properties: { a: { minimum: 1 } } })?.message).toMatch(/^"minimum" cannot be enforced by this model's grammar-constrained decoding/);
  });
});

describe('toGrammarSchema', () => {
  it('refuses bounds no answer could meet, and counts the grammar cannot hold', () => {
    const at = (schema: unknown) => checkJsonSchema(schema);
    expect(at({ type: 'array', items: { type: 'integer' }, minItems: 3, maxItems: 1 })).toMatchObject({ path: '.minItems', message: 'minItems 3 is more than maxItems 1: no answer could match' });
    expect(at({ type: 'string', minLength: 5, maxLength: 2 })?.path).toBe('.minLength');
    expect(at({ type: 'object', additionalProperties: { type: 'integer' }, minProperties: 3, maxProperties: 1 })?.path).toBe('.minProperties');
    expect(at({ type: 'array', items: { type: 'integer' }, minItems: -1 })).toMatchObject({ path: '.minItems', message: 'must be a whole number, 0 or more' });
    expect(at({ type: 'string', maxLength: 2.5 })?.path).toBe('.maxLength');
    expect(at({ type: 'string', minLength: 5000 })).toMatchObject({ path: '.minLength', message: 'at most 1000 can be enforced by the grammar' });
    expect(at({ type: 'array', items: { type: 'boolean' }, minItems: 1001 })?.path).toBe('.minItems');
    // Equal bounds, and either bound alone, are fine.
    expect(at({ type: 'string', minLength: 2, maxLength: 2 })).toBeUndefined();
    expect(at({ type: 'array', items: { type: 'integer' }, minItems: 1000 })).toBeUndefined();
    expect(at({ type: 'object', properties: { s: { type: 'string', maxLength: 10 } } })).toBeUndefined();
  });

  it('writes anyOf as oneOf, definitions as $defs, and a lone allOf into its parent', () => {
    expect(toGrammarSchema({ anyOf: [{ type: 'string' }, { type: 'null' }] })).toEqual({ oneOf: [{ type: 'string' }, { type: 'null' }] });
    expect(toGrammarSchema({ properties: { a: { $ref: '#/definitions/A' } }, definitions: { A: { anyOf: [{ type: 'integer' }] } } })).toEqual({
      properties: { a: { $ref: '#/$defs/A' } },
      type: 'object',
      $defs: { A: { oneOf: [{ type: 'integer' }] } },
    });
    expect(toGrammarSchema({ description: 'd', allOf: [{ type: 'string', maxLength: 2 }] })).toEqual({ description: 'd', type: 'string', maxLength: 2 });
    expect(toGrammarSchema({ $defs: { A: { type: 'integer' } }, allOf: [{ $defs: { B: { type: 'string' } }, $ref: '#/$defs/A' }] })).toEqual({
      $defs: { A: { type: 'integer' }, B: { type: 'string' } },
      $ref: '#/$defs/A',
    });
  });

  it('writes a list of types as one schema per type (node-llama-cpp reads ["object", "null"] as always null)', () => {
    expect(toGrammarSchema({ title: 't', type: ['object', 'null'], properties: { a: { anyOf: [{ type: 'integer' }] } }, required: ['a'] })).toEqual({
      title: 't',
      oneOf: [{ type: 'object', properties: { a: { oneOf: [{ type: 'integer' }] } }, required: ['a'] }, { type: 'null' }],
    });
    expect(toGrammarSchema({ type: ['string'], maxLength: 3 })).toEqual({ type: 'string', maxLength: 3 });
    // Values that are not schemas are left as they are.
    expect(toGrammarSchema({ enum: [{ anyOf: 1 }], const: { definitions: 2 }, default: { anyOf: 3 } })).toEqual({ enum: [{ anyOf: 1 }], const: { definitions: 2 }, default: { anyOf: 3 } });
  });

  it('keeps open what JSON Schema leaves open, where node-llama-cpp would allow one answer', () => {
    const any = { $ref: `#/$defs/${ANY_JSON_DEF}` };
    const anyDef = toGrammarSchema({}) as { $defs: Record<string, { oneOf: { type: string }[] }> };
    // Any value: every kind, arrays and objects of any values (node-llama-cpp alone: always null).
    expect(anyDef).toMatchObject(any);
    expect(anyDef.$defs[ANY_JSON_DEF]!.oneOf.map((s) => s.type)).toEqual(['string', 'number', 'boolean', 'null', 'array', 'object']);
    expect(anyDef.$defs[ANY_JSON_DEF]!.oneOf).toContainEqual({ type: 'array', items: any });
    expect(anyDef.$defs[ANY_JSON_DEF]!.oneOf).toContainEqual({ type: 'object', additionalProperties: true });
    // pydantic's `Any` field (annotations only), and `true`, anywhere below.
    expect(toGrammarSchema({ type: 'object', properties: { a: { title: 'A' }, b: true }, required: ['a', 'b'] })).toEqual({
      type: 'object',
      properties: { a: { title: 'A', ...any }, b: any },
      required: ['a', 'b'],
      $defs: { [ANY_JSON_DEF]: anyDef.$defs[ANY_JSON_DEF] },
    });
    // An object without properties has any keys (node-llama-cpp alone: always {}); an array without items any items.
    expect(toGrammarSchema({ type: 'object' })).toEqual({ type: 'object', additionalProperties: true });
    expect(toGrammarSchema({ type: 'object', properties: {} })).toEqual({ type: 'object', additionalProperties: true });
    // So counts of an open object's keys can be enforced.
    expect(checkJsonSchema({ type: 'object', minProperties: 1 })).toBeUndefined();
    expect(toGrammarSchema({ type: 'object', minProperties: 1 })).toEqual({ type: 'object', minProperties: 1, additionalProperties: true });
    expect(checkJsonSchema({ type: 'object', additionalProperties: false, maxProperties: 1 })?.path).toBe('.maxProperties');
    expect(toGrammarSchema({ type: 'object', properties: { a: { type: 'string' } } })).toEqual({ type: 'object', properties: { a: { type: 'string' } } });
    expect(toGrammarSchema({ type: 'array', maxItems: 2 })).toMatchObject({ type: 'array', maxItems: 2, items: any });
    expect(toGrammarSchema({ type: 'array', prefixItems: [{ type: 'integer' }] })).toEqual({ type: 'array', prefixItems: [{ type: 'integer' }] });
    // Without a type, keywords of one kind say which (node-llama-cpp alone: always null).
    expect(toGrammarSchema({ items: { type: 'integer' } })).toEqual({ type: 'array', items: { type: 'integer' } });
    expect(toGrammarSchema({ description: 'd', maxLength: 3 })).toEqual({ description: 'd', type: 'string', maxLength: 3 });
    // A list of types with an open object.
    expect(toGrammarSchema({ type: ['object', 'null'] })).toEqual({ oneOf: [{ type: 'object', additionalProperties: true }, { type: 'null' }] });
    // Schemas that say what they are stay as they were.
    for (const closed of [{ type: 'string' }, { enum: ['a'] }, { const: 1 }, { oneOf: [{ type: 'integer' }] }]) expect(toGrammarSchema(closed)).toEqual(closed);
  });
});
