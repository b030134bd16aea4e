/**
 * JSON output helpers: finishing JSON that the token budget cut short, and numbers JavaScript can hold.
 *
 * Finishing JSON that the token budget cut short.
 *
 * A grammar keeps every token valid JSON so far, but a string, array or object can go on for as
 * long as the model likes (random weights happily write a 300-token string). When a JSON job
 * nears its token budget the backend switches to "closing mode", a logit bias by token text:
 *
 * - `"` first (+40): inside a string it is the only way out; at a value it opens the shortest value, `""`;
 * - then tokens made only of `}` / `]` (+30): close the innermost array or object;
 * - then those that also hold a `,` (+20): needed between required keys, beaten by a closer elsewhere;
 * - tokens that open or extend (`{`, `[`, `\`, whitespace) are pushed down (-15).
 *
 * The grammar still decides what is allowed (a required key or the forced trailing newlines are
 * taken whatever their bias), so the result is a short valid completion. Biases are finite on
 * purpose: a token the grammar forces must stay selectable.
 */

/** Logit added to a token in closing mode, by its text; `undefined` for no bias. */
export function closingBias(text: string): number | undefined {
  if (text.length === 0) return undefined;
  if (/^["}\]]+$/.test(text)) return text.startsWith('"') ? 40 : 30;
  if (/^["}\],]+$/.test(text)) return 20;
  if (/[{[,\\]/.test(text) || /^\s+$/.test(text)) return -15;
  return undefined;
}

/**
 * Tokens generated before closing mode starts, given the budget (`max_tokens`, or the room the
 * context leaves when that is less) and the room. The earlier of:
 * - the budget less a quarter of it (at most 64 tokens): an answer may run past `max_tokens`
 *   into the rest of the context to close;
 * - the room less half of it (at most 512 tokens): nothing lies past the context, and closing a
 *   schema's required keys can take a hundred tokens or more.
 */
export function closingStart(budget: number, room: number = budget): number {
  const byBudget = budget - Math.min(64, Math.floor(budget / 4));
  const byRoom = room - Math.min(512, Math.ceil(room / 2));
  return Math.max(0, Math.min(byBudget, byRoom));
}

/**
 * Limits exponents in a GBNF JSON grammar to two digits, and takes them out of integers.
 * node-llama-cpp's number rules allow up to 16 exponent digits, so a model (random weights
 * especially) can write `85E6858533333`: valid JSON that `JSON.parse` turns into `Infinity`, which
 * then fails an `integer` or `number` schema. With at most 16 mantissa and 2 exponent digits every
 * number stays finite. An `integer` written `77e19` is one by JSON Schema's rule, but Python's
 * `json` reads it as a float: integers get plain digits (up to 16, so past 2^53 JavaScript still
 * rounds them).
 */
export function finiteJsonNumbers(gbnf: string): string {
  return gbnf
    .replace(/^(integer-number-rule[\w-]* ::= .*?) \(\[eE\] \[-\+\]\? \([^()\n]*\)\)\?$/gm, '$1')
    .replace(/(\[eE\] \[-\+\]\? [^)\n]*?)\{0,15\}/g, '$1{0,1}');
}
