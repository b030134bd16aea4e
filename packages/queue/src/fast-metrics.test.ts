import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { FastCounter, FastGauge, FastHistogram } from './fast-metrics.js';

const BUCKETS = [0.005, 0.01, 0.1, 1, 10];
const VALUES = [0, 0.004, 0.005, 0.0051, 0.02, 0.5, 1, 3, 10, 11, 1e6];

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
    const ref = new Registry();
    const fast = new Registry();
    const c1 = new Counter({ name: 'c_total', help: 'c', labelNames: ['model'], registers: [ref] });
    const c2 = new FastCounter({ name: 'c_total', help: 'c', labelNames: ['model'], registers: [fast] });
    const g1 = new Gauge({ name: 'g', help: 'g', labelNames: ['model'], registers: [ref] });
    const g2 = new FastGauge({ name: 'g', help: 'g', labelNames: ['model'], registers: [fast] });
    const hc = c2.hot({ model: 'echo' });
    const hg = g2.hot({ model: 'echo' });
    // A series is exported (at 0) as soon as it is bound, as prom-client's labels().inc(0) would.
    c1.inc({ model: 'echo' }, 0);
    g1.set({ model: 'echo' }, 0);
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
});
