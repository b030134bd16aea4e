import { describe, expect, it } from 'vitest';
import { PulsarAckRegistry, pulsarAcks, settlePulsarJob } from './ack-registry.js';

function deferred(owner: object, log: string[], name: string) {
  return {
    owner,
    ack: async () => {
      log.push(`ack:${name}`);
    },
    onTimeout: () => log.push(`timeout:${name}`),
  };
}

describe('PulsarAckRegistry', () => {
  it('acks once on settle and reports whether it held the job', async () => {
    const r = new PulsarAckRegistry();
    const log: string[] = [];
    r.defer('j1', deferred({}, log, 'a'), 10_000);
    expect(await r.settle('j1')).toBe(true);
    expect(await r.settle('j1')).toBe(false);
    expect(await r.settle('unknown')).toBe(false);
    expect(log).toEqual(['ack:a']);
  });

  it('replaces an earlier delivery of the same job and times out only the live one', async () => {
    const r = new PulsarAckRegistry();
    const log: string[] = [];
    r.defer('j1', deferred({}, log, 'first'), 20);
    r.defer('j1', deferred({}, log, 'second'), 40);
    await new Promise((res) => setTimeout(res, 80));
    expect(log).toEqual(['timeout:second']);
    expect(r.size).toBe(0);
  });

  it("drops an owner's entries without acking them", () => {
    const r = new PulsarAckRegistry();
    const log: string[] = [];
    const mine = {};
    r.defer('a', deferred(mine, log, 'a'), 10_000);
    r.defer('b', deferred({}, log, 'b'), 10_000);
    expect(r.countOwner(mine)).toBe(1);
    expect(r.dropOwner(mine)).toBe(1);
    expect(r.has('a')).toBe(false);
    expect(r.has('b')).toBe(true);
    expect(log).toEqual([]);
    r.dropOwner(r);
  });

  it('knows whether a sink registered in this process', () => {
    const r = new PulsarAckRegistry();
    expect(r.hasSink).toBe(false);
    const off = r.registerSink();
    expect(r.hasSink).toBe(true);
    off();
    off();
    expect(r.hasSink).toBe(false);
  });

  it('is one registry per process, reachable through settlePulsarJob', async () => {
    const log: string[] = [];
    const owner = {};
    pulsarAcks.defer('global-job', deferred(owner, log, 'g'), 10_000);
    expect(await settlePulsarJob('global-job')).toBe(true);
    expect(log).toEqual(['ack:g']);
    expect((globalThis as unknown as Record<symbol, unknown>)[Symbol.for('llmq.adapter-pulsar.acks')]).toBe(pulsarAcks);
  });
});
