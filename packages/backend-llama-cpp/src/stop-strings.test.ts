import { describe, expect, it } from 'vitest';
import { StopStringStream } from './stop-strings.js';

function feed(stops: string[], chunks: string[], final?: string, options: { trimEnd?: boolean } = {}) {
  const streamed: string[] = [];
  const s = new StopStringStream(stops, (t) => streamed.push(t), options);
  let stoppedAfter = -1;
  chunks.forEach((c, i) => {
    if (stoppedAfter < 0 && s.push(c)) stoppedAfter = i;
  });
  const text = s.finish(final);
  return { text, streamed, stoppedAfter };
}

describe('StopStringStream', () => {
  it('cuts right before the first stop string, mid-chunk, keeping the text before it', () => {
    const r = feed(['t'], ['e', ' t', 'x']);
    expect(r.text).toBe('e ');
    expect(r.streamed.join('')).toBe('e ');
    expect(r.stoppedAfter).toBe(1);
  });

  it('finds a stop string split across chunks and never streams its start', () => {
    const r = feed(['END'], ['abc E', 'N', 'D more']);
    expect(r.text).toBe('abc ');
    expect(r.streamed.join('')).toBe('abc ');
    expect(r.streamed.some((c) => c.includes('E'))).toBe(false);
  });

  it('picks the earliest of several stop strings', () => {
    expect(feed(['zz', 'b'], ['a', 'bzz']).text).toBe('a');
  });

  it('streams held-back text at the end when no stop string came', () => {
    const r = feed(['STOP'], ['hello S', 'TO'], 'hello STO');
    expect(r.text).toBe('hello STO');
    expect(r.streamed.join('')).toBe('hello STO');
    expect(r.stoppedAfter).toBe(-1);
  });

  it('passes text straight through without stop strings', () => {
    const r = feed([], ['a', 'b'], 'ab');
    expect(r.streamed).toEqual(['a', 'b']);
    expect(r.text).toBe('ab');
  });

  it('with trimEnd, streams and returns the answer without its trailing whitespace', () => {
    // A JSON answer: the grammar ends it with newlines after the closing brace.
    const r = feed([], ['{"a":', ' 1}', ' ', '\n', '\n'], undefined, { trimEnd: true });
    expect(r.text).toBe('{"a": 1}');
    expect(r.streamed.join('')).toBe('{"a": 1}');
    // Whitespace inside the answer is streamed once text follows it.
    expect(r.streamed).toEqual(['{"a":', ' 1}']);
    const stopped = feed(['\n\n'], ['{} ', '\n', '\n'], undefined, { trimEnd: true });
    expect(stopped.text).toBe('{}');
    expect(stopped.streamed.join('')).toBe('{}');
    expect(feed([], ['{}', ' \n'], '{} \n', { trimEnd: true }).streamed.join('')).toBe('{}');
  });

  it('does not split a surrogate pair between streamed pieces', () => {
    const r = feed(['xy'], ['a😀', 'b']);
    for (const piece of r.streamed) expect(piece).toBe(piece.normalize());
    expect(r.streamed[0]).toBe('a');
    expect(r.text).toBe('a😀b');
  });
});
