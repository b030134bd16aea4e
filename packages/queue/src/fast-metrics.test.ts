import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastCounter, FastGauge, FastHistogram } from './fast-metrics.js';

const BUCKETS = [0.005, 0.01, 0.1, 1, 10];
const VALUES = [0, 0.004, 0.005, 0.0051, 0.02, 0.5, 1, 3, 10, 11, 1e6];

/**
 * prom-client's counter and gauge beside ours (each pair in its own registry, same names), with a
 * hot series of each bound for `model` and the reference series exported at 0 to match.
 */
function counterAndGauge(suffix: string, model: string) {
  const ref = new Registry();
  const fast = new Registry();
  const c1 = new Counter({ name: `c${suffix}_total`, help: 'c', labelNames: ['model'], registers: [ref] });
  const c2 = new FastCounter({ name: `c${suffix}_total`, help: 'c', labelNames: ['model'], registers: [fast] });
  const g1 = new Gauge({ name: `g${suffix}`, help: 'g', labelNames: ['model'], registers: [ref] });
  const g2 = new FastGauge({ name: `g${suffix}`, help: 'g', labelNames: ['model'], registers: [fast] });
  const hc = c2.hot({ model });
  const hg = g2.hot({ model });
  // A series is exported (at 0) as soon as it is bound, as prom-client's labels().inc(0) would.
  c1.inc({ model }, 0);
  g1.set({ model }, 0);
  return { ref, fast, c1, c2, g1, g2, hc, hg };
}

describe('fast metrics expose exactly what prom-client would', () => {
  it('histogram: same text exposition and JSON for the same observations, through every way in', async () => {
    const ref = new Registry();
    const fast = new Registry();
    const a = new Histogram({ name: 'h_seconds', help: 'h', labelNames: ['model'], buckets: BUCKETS, registers: [ref] });
    const b = new FastHistogram({ name: 'h_seconds', help: 'h', labelNames: ['model'], buckets: BUCKETS, registers: [fast] });
    const hot = b.hot({ model: 'echo' });
    const bound = b.labels({ model: 'other' });
    for (const v of VALUES) {
      a.observe({ model: 'echo' }, v);
      hot.observe(v);
      a.labels({ model: 'other' }).observe(v * 2);
      bound.observe(v * 2);
      a.observe({ model: 'third' }, v / 3);
      b.observe({ model: 'third' }, v / 3);
    }
    expect(await fast.metrics()).toBe(await ref.metrics());
    expect(await fast.getMetricsAsJSON()).toEqual(await ref.getMetricsAsJSON());
    expect(() => hot.observe(Number.NaN)).toThrow(/valid number/);
    expect(() => b.hot({ nope: 'x' } as never)).toThrow(/label/);
    b.reset();
    a.reset();
    expect(await fast.metrics()).toBe(await ref.metrics());
  });

  it('counter and gauge: hot series fold into the same totals when read, and keep counting after', async () => {
    const { ref, fast, c1, c2, g1, hc, hg } = counterAndGauge('', 'echo');
    expect(await fast.metrics()).toBe(await ref.metrics());
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 100; i++) {
        hc.inc();
        c1.inc({ model: 'echo' });
        hc.inc(i);
        c1.inc({ model: 'echo' }, i);
        hg.inc();
        g1.inc({ model: 'echo' });
        if (i % 3 === 0) {
          hg.dec();
          g1.dec({ model: 'echo' });
        }
      }
      c2.inc({ model: 'cold' }, 2);
      c1.inc({ model: 'cold' }, 2);
      expect(await fast.metrics()).toBe(await ref.metrics());
    }
    expect(() => hc.inc(-1)).toThrow(/decrease/);
  });

  it('histogram: reset, remove, zero, partial labels, no labels and bad values behave as prom-client', async () => {
    const ref = new Registry();
    const fast = new Registry();
    const a = new Histogram({ name: 'h2_seconds', help: 'h', labelNames: ['model', 'kind'], buckets: BUCKETS, registers: [ref] });
    const b = new FastHistogram({ name: 'h2_seconds', help: 'h', labelNames: ['model', 'kind'], buckets: BUCKETS, registers: [fast] });
    const a0 = new Histogram({ name: 'plain_seconds', help: 'p', buckets: BUCKETS, registers: [ref] });
    const b0 = new FastHistogram({ name: 'plain_seconds', help: 'p', buckets: BUCKETS, registers: [fast] });
    const same = async () => expect(await fast.metrics()).toBe(await ref.metrics());
    await same(); // the label-less histogram is exported at zero from the start
    const hot = b.hot({ model: 'x', kind: 'k' });
    hot.observe(0.5);
    a.observe({ model: 'x', kind: 'k' }, 0.5);
    a.observe({ model: 'y' }, 0.02); // partial labels
    b.observe({ model: 'y' }, 0.02);
    a0.observe(3);
    b0.observe(3);
    await same();
    expect(() => b.observe({ model: 'z', kind: 'k' }, Number.NaN)).toThrow(/valid number/);
    expect(() => a.observe({ model: 'z', kind: 'k' }, Number.NaN)).toThrow(/valid number/);
    await same(); // no empty series left behind by the bad value
    ref.resetMetrics();
    fast.resetMetrics();
    await same();
    hot.observe(0.007); // a bound series keeps working after a reset
    a.observe({ model: 'x', kind: 'k' }, 0.007);
    await same();
    a.remove({ model: 'x', kind: 'k' });
    b.remove({ model: 'x', kind: 'k' });
    await same();
    hot.observe(2);
    a.observe({ model: 'x', kind: 'k' }, 2);
    a.zero({ model: 'q', kind: 'k' });
    b.zero({ model: 'q', kind: 'k' });
    await same();
  });

  it('counter and gauge: remove and set see the amounts added on the hot path before them', async () => {
    const { ref, fast, c1, c2, g1, g2, hc, hg } = counterAndGauge('2', 'a');
    hc.inc(5);
    c1.inc({ model: 'a' }, 5);
    c1.remove({ model: 'a' });
    c2.remove({ model: 'a' });
    hg.inc();
    g1.inc({ model: 'a' });
    g1.set({ model: 'a' }, 7);
    g2.set({ model: 'a' }, 7);
    expect(await fast.metrics()).toBe(await ref.metrics());
    hg.dec(2);
    g1.dec({ model: 'a' }, 2);
    hc.inc(1);
    c1.inc({ model: 'a' }, 1);
    expect(await fast.metrics()).toBe(await ref.metrics());
  });
});
