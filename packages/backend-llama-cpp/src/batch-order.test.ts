import { describe, expect, it } from 'vitest';
import type { BatchItem, LlamaContext, Token } from 'node-llama-cpp';
import { SequenceOrder, shareTokens } from './batch-order.js';

const item = (tokens: number, evaluationPriority: BatchItem['evaluationPriority'] = 5): BatchItem => ({
  tokens: Array.from({ length: tokens }, (_, i) => i as Token),
  logits: [],
  evaluationPriority,
});

/** A context as node-llama-cpp 3.22 keeps its queued decodes: the batch items share their token arrays. */
const contextQueuing = (queued: { tokens: readonly Token[]; sequenceId: number }[]) => ({ _queuedDecodes: queued }) as unknown as LlamaContext;

describe('SequenceOrder', () => {
  it('lays a batch out in ascending sequence order, whatever order the sequences queued in', () => {
    const items = [item(1), item(1), item(1), item(1)];
    const order = new SequenceOrder();
    // Queued as sequences 3, 0, 2, 1: the order their samplings happened to finish.
    expect(order.attach(contextQueuing([3, 0, 2, 1].map((sequenceId, i) => ({ tokens: items[i]!.tokens, sequenceId }))))).toBe(true);
    const batch = order.strategy({ items, size: 512 });
    expect(batch.map((b) => items.indexOf(b.item))).toEqual([1, 3, 2, 0]);
    expect(batch.map((b) => b.processAmount)).toEqual([1, 1, 1, 1]);
  });

  it('keeps the queue order when the context does not show its queue', () => {
    const order = new SequenceOrder();
    expect(order.attach({} as LlamaContext)).toBe(false);
    const items = [item(2), item(1)];
    expect(order.strategy({ items, size: 512 }).map((b) => b.item)).toEqual(items);
  });

  it('says once when it finds the sequence of no item in a batch', () => {
    let told = 0;
    const order = new SequenceOrder(() => told++);
    // A node-llama-cpp that copied the tokens into its batch items: the arrays no longer match.
    const items = [item(1), item(1)];
    order.attach(contextQueuing(items.map((it, sequenceId) => ({ tokens: [...it.tokens], sequenceId }))));
    expect(order.strategy({ items, size: 512 }).map((b) => b.item)).toEqual(items);
    order.strategy({ items, size: 512 });
    expect(told).toBe(1);
    // A batch where some match is not a miss.
    let toldAgain = 0;
    const partly = new SequenceOrder(() => toldAgain++);
    partly.attach(contextQueuing([{ tokens: items[1]!.tokens, sequenceId: 0 }]));
    partly.strategy({ items, size: 512 });
    expect(toldAgain).toBe(0);
  });

  it('puts items it cannot place after those it can', () => {
    const items = [item(1), item(1), item(1)];
    const order = new SequenceOrder();
    order.attach(contextQueuing([{ tokens: items[1]!.tokens, sequenceId: 4 }, { tokens: items[2]!.tokens, sequenceId: 2 }]));
    expect(order.strategy({ items, size: 512 }).map((b) => items.indexOf(b.item))).toEqual([2, 1, 0]);
  });
});

describe('shareTokens', () => {
  it('gives every item what it has when the batch holds it all', () => {
    expect(shareTokens([item(34), item(1), item(36)], 512).map((s) => s.processAmount)).toEqual([34, 1, 36]);
  });

  it('shares a full batch equally, then gives what is left to the items that have more', () => {
    // 100 tokens: 33 each would leave 1; the short item takes 10, so the other two share 90.
    const shares = shareTokens([item(200), item(10), item(200)], 100);
    expect(shares.map((s) => s.processAmount)).toEqual([45, 10, 45]);
    expect(shares.reduce((a, s) => a + s.processAmount, 0)).toBe(100);
  });

  it('serves higher priorities first when there are more items than tokens', () => {
    const low = item(5, 1);
    const middle = item(5);
    const high = item(5, 9);
    const shares = shareTokens([low, middle, high], 2);
    expect(shares.map((s) => [s.item, s.processAmount])).toEqual([
      [middle, 1],
      [high, 1],
    ]);
  });

  it('never gives an item more than it has, nor the batch more than its size', () => {
    for (const size of [1, 7, 64, 512]) {
      const items = [item(3), item(90), item(1), item(40), item(17)];
      const shares = shareTokens(items, size);
      expect(shares.reduce((a, s) => a + s.processAmount, 0)).toBe(Math.min(size, 151));
      for (const s of shares) expect(s.processAmount).toBeLessThanOrEqual(s.item.tokens.length);
    }
  });
});
