import { describe, expect, it } from 'vitest';
import { closingBias, closingStart, finiteJsonNumbers } from './json-grammar.js';

describe('closing-mode bias', () => {
  it('ranks the quote over closers over commas over neutral text over openers', () => {
    const quote = closingBias('"')!;
    const close = closingBias('}')!;
    const closeQuote = closingBias('"]')!;
    const comma = closingBias('",')!;
    const open = closingBias('{')!;
    expect(quote).toBeGreaterThan(close);
    expect(closeQuote).toBe(quote);
    expect(close).toBeGreaterThan(comma);
    expect(comma).toBeGreaterThan(0);
    expect(open).toBeLessThan(0);
    expect(closingBias('[')).toBe(open);
    expect(closingBias('\\')).toBe(open);
    expect(closingBias('\n')).toBe(open);
    expect(closingBias('  ')).toBe(open);
  });

  it('leaves ordinary tokens and empty (control) tokens alone', () => {
    expect(closingBias('hello')).toBeUndefined();
    expect(closingBias('7')).toBeUndefined();
    expect(closingBias('":')).toBeUndefined();
    expect(closingBias('')).toBeUndefined();
  });

  it('keeps a quarter of max_tokens, at most 64 tokens, for closing when the context has room past it', () => {
    expect(closingStart(8, 4000)).toBe(6);
    expect(closingStart(100, 4000)).toBe(75);
    expect(closingStart(1000, 4000)).toBe(936);
    expect(closingStart(3, 4000)).toBe(3);
    expect(closingStart(0, 4000)).toBe(0);
  });

  it('keeps half the room, at most 512 tokens, when the context is what ends the answer', () => {
    // No max_tokens (or one past the context): the budget is the room.
    expect(closingStart(508)).toBe(254);
    expect(closingStart(41)).toBe(20);
    expect(closingStart(4000)).toBe(3488);
    expect(closingStart(1)).toBe(0);
    // max_tokens just under the room: whichever starts closing first.
    expect(closingStart(500, 508)).toBe(254);
    expect(closingStart(300, 4000)).toBe(236);
  });
});

describe('finiteJsonNumbers', () => {
  // Number rules as node-llama-cpp 3.22 writes them (JSON-schema grammar and its json.gbnf).
  const schemaRule = 'integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';
  const fractionRule =
    'fractional-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';
  const jsonGbnf = 'number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws';

  it('caps exponents at two digits, writes integers with plain digits, and leaves mantissas alone', () => {
    expect(finiteJsonNumbers(schemaRule)).toBe('integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15})');
    expect(finiteJsonNumbers(`root ::= integer-number-rule\n${schemaRule}\n${fractionRule}`)).toBe(
      `root ::= integer-number-rule\ninteger-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15})\n${finiteJsonNumbers(fractionRule)}`,
    );
    expect(finiteJsonNumbers(fractionRule)).toContain('("." [0-9]{1,16})? ([eE] [-+]? ("0" | [1-9] [0-9]{0,1}))?');
    expect(finiteJsonNumbers(jsonGbnf)).toBe('number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,1})? ws');
  });

  it('keeps the largest number it allows finite', () => {
    expect(Number.isFinite(JSON.parse('-9999999999999999.9999999999999999E99'))).toBe(true);
    expect(Number.isInteger(JSON.parse('9999999999999999E99'))).toBe(true);
  });
});
