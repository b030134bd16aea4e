import { Counter, Gauge, Histogram, type CounterConfiguration, type GaugeConfiguration, type HistogramConfiguration, type MetricObjectWithValues, type MetricValueWithName } from 'prom-client';

/**
 * prom-client metrics for the worker's per-job path. prom-client validates, hashes and re-keys the
 * labels on every `inc`/`observe`, even through `labels()` (about 1 µs and ~200 bytes of garbage
 * per call, several calls per job). These keep one plain record per label set, bound once, and
 * hand prom-client the totals only when the registry is read: same names, same exposition, the
 * per-job cost of adding two numbers.
 */

type Labels = Record<string, string | number>;

/** One key per label set; a label left out (prom-client allows that) is its own value. */
function labelKey(labelNames: readonly string[], labels: Labels): string {
  let key = '';
  for (const name of labelNames) {
    const v = labels[name];
    key += v === undefined ? '\u0001' : `${String(v)}\u0000`;
  }
  for (const name of Object.keys(labels)) if (!labelNames.includes(name)) throw new Error(`unknown label "${name}"`);
  return key;
}

function labelsOf(labelNames: readonly string[], args: unknown[]): Labels {
  if (args.length === 1 && typeof args[0] === 'object' && args[0] !== null) return { ...(args[0] as Labels) };
  const out: Labels = {};
  labelNames.forEach((name, i) => {
    if (args[i] !== undefined) out[name] = args[i] as string | number;
  });
  return out;
}

/**
 * Per label set, an amount added on the hot path and not yet handed to prom-client. Both fast
 * metrics below fold it in through prom-client's own `inc` (`apply`) when the registry reads them.
 */
class Pending {
  private readonly records = new Map<string, { labels: Labels; amount: number }>();

  constructor(private readonly apply: (labels: Labels, amount: number) => void) {}

  /** The record for these labels; a new label set is exported at 0 at once, as prom-client's labels().inc(0) would. */
  bind(labelNames: readonly string[], labels: Labels): { amount: number } {
    const key = labelKey(labelNames, labels);
    let rec = this.records.get(key);
    if (!rec) {
      rec = { labels: { ...labels }, amount: 0 };
      this.records.set(key, rec);
      this.apply(labels, 0);
    }
    return rec;
  }

  /** Hands every non-zero amount to `apply` and zeroes it. */
  fold(): void {
    for (const rec of this.records.values()) {
      if (rec.amount === 0) continue;
      const amount = rec.amount;
      rec.amount = 0;
      this.apply(rec.labels, amount);
    }
  }

  clear(): void {
    for (const rec of this.records.values()) rec.amount = 0;
  }
}

const labelNamesOf = (metric: unknown): string[] => (metric as { labelNames: string[] }).labelNames;

function checkValue(value: number): void {
  if (!Number.isFinite(value)) throw new TypeError(`Value is not a valid number: ${value}`);
}

/** A counter series whose increments are summed locally and folded in when the metric is read. */
export interface HotCounter {
  inc(value?: number): void;
}

export class FastCounter<T extends string = string> extends Counter<T> {
  private readonly pending = new Pending((labels, amount) => this.inc(labels as never, amount));

  constructor(config: CounterConfiguration<T>) {
    super(config);
  }

  /** A bound series for the hot path (the labels are fixed once here). */
  hot(labels: Partial<Record<T, string | number>>): HotCounter {
    const rec = this.pending.bind(labelNamesOf(this), labels as Labels);
    return {
      inc(value = 1) {
        if (!(value >= 0) || !Number.isFinite(value)) throw new Error(`It is not possible to decrease a counter (or add ${value})`);
        rec.amount += value;
      },
    };
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<T>>> {
    this.pending.fold();
    return (await super.get()) as MetricObjectWithValues<MetricValueWithName<T>>;
  }

  override remove(...args: unknown[]): void {
    this.pending.fold();
    (super.remove as (...a: unknown[]) => void)(...args);
  }

  override reset(): void {
    // Also called by prom-client's constructor, before our fields exist.
    this.pending?.clear();
    super.reset();
  }
}

/** A gauge series moved by ±1 per job, folded in when read. */
export interface HotGauge {
  inc(value?: number): void;
  dec(value?: number): void;
}

export class FastGauge<T extends string = string> extends Gauge<T> {
  private readonly pending = new Pending((labels, amount) => this.inc(labels as never, amount));

  constructor(config: GaugeConfiguration<T>) {
    super(config);
  }

  hot(labels: Partial<Record<T, string | number>>): HotGauge {
    const rec = this.pending.bind(labelNamesOf(this), labels as Labels);
    return {
      inc(value = 1) {
        rec.amount += value;
      },
      dec(value = 1) {
        rec.amount -= value;
      },
    };
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<T>>> {
    this.pending.fold();
    return (await super.get()) as MetricObjectWithValues<MetricValueWithName<T>>;
  }

  // Order-sensitive updates see the amounts added so far.
  override set(...args: unknown[]): void {
    this.pending.fold();
    (super.set as (...a: unknown[]) => void)(...args);
  }

  override setToCurrentTime(...args: unknown[]): void {
    this.pending.fold();
    (super.setToCurrentTime as (...a: unknown[]) => void)(...args);
  }

  override remove(...args: unknown[]): void {
    this.pending.fold();
    (super.remove as (...a: unknown[]) => void)(...args);
  }

  override reset(): void {
    this.pending?.clear();
    super.reset();
  }
}

/** A histogram series: one bucket search and three additions per observation. */
export interface HotHistogram {
  observe(value: number): void;
}

interface Series {
  /** Exported: observed (or zeroed) since it was made, reset or removed, as prom-client would. */
  live: boolean;
  labels: Labels;
  counts: Float64Array;
  sum: number;
  count: number;
}

/**
 * A prom-client Histogram whose series keep their bucket counts in a typed array. Every way in
 * (`observe(labels, v)`, `labels(...).observe(v)`, `hot(labels)`) lands in the same series, and
 * the exposition is prom-client's: cumulative `_bucket` lines with `le`, `+Inf`, `_sum`, `_count`.
 */
export class FastHistogram<T extends string = string> extends Histogram<T> {
  private series = new Map<string, Series>();
  private readonly bounds: number[];

  constructor(config: HistogramConfiguration<T>) {
    super(config);
    this.bounds = [...((this as unknown as { upperBounds: number[] }).upperBounds ?? config.buckets ?? [])];
    // prom-client sets `observe` on the instance in its constructor; ours replaces it.
    const observe = (labelsOrValue: Partial<Record<T, string | number>> | number, value?: number): void => {
      const v = typeof labelsOrValue === 'number' ? labelsOrValue : (value as number);
      checkValue(v);
      this.record(this.seriesFor(typeof labelsOrValue === 'number' ? {} : (labelsOrValue as Labels)), v);
    };
    this.observe = observe as Histogram<T>['observe'];
    // Like prom-client: a histogram without labels is exported (at zero) from the start.
    if (labelNamesOf(this).length === 0) this.seriesFor({}).live = true;
  }

  /** prom-client declares these fields only on its JavaScript side. */
  private get meta(): { name: string; help: string; labelNames: string[]; aggregator: MetricObjectWithValues<MetricValueWithName<T>>['aggregator'] } {
    return this as unknown as { name: string; help: string; labelNames: string[]; aggregator: MetricObjectWithValues<MetricValueWithName<T>>['aggregator'] };
  }

  private seriesFor(labels: Labels): Series {
    const key = labelKey(labelNamesOf(this), labels);
    let s = this.series.get(key);
    if (!s) {
      s = { live: false, labels: { ...labels }, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    return s;
  }

  private record(s: Series, value: number): void {
    checkValue(value);
    s.live = true;
    const b = this.bounds;
    for (let i = 0; i < b.length; i++) {
      if (value <= b[i]!) {
        s.counts[i]!++;
        break;
      }
    }
    s.sum += value;
    s.count++;
  }

  hot(labels: Partial<Record<T, string | number>>): HotHistogram {
    const s = this.seriesFor(labels as Labels);
    return { observe: (value: number) => this.record(s, value) };
  }

  override labels(...args: unknown[]): { observe(value: number): void; startTimer(): (labels?: Partial<Record<T, string | number>>) => number } {
    const labels = labelsOf(labelNamesOf(this), args);
    const s = this.seriesFor(labels);
    return {
      observe: (value: number) => this.record(s, value),
      startTimer: () => {
        const start = process.hrtime.bigint();
        return (more?: Partial<Record<T, string | number>>) => {
          const seconds = Number(process.hrtime.bigint() - start) / 1e9;
          this.record(more ? this.seriesFor({ ...labels, ...(more as Labels) }) : s, seconds);
          return seconds;
        };
      },
    };
  }

  private static clear(s: Series): void {
    s.counts.fill(0);
    s.sum = 0;
    s.count = 0;
  }

  override zero(labels: Partial<Record<T, string | number>>): void {
    const s = this.seriesFor(labels as Labels);
    FastHistogram.clear(s);
    s.live = true;
  }

  // Series stay in the map (bound ones keep working), zeroed and unexported until observed again.
  override remove(...args: unknown[]): void {
    const s = this.series.get(labelKey(labelNamesOf(this), labelsOf(labelNamesOf(this), args)));
    if (s) {
      FastHistogram.clear(s);
      s.live = false;
    }
  }

  override reset(): void {
    // Also called by prom-client's constructor, before our fields exist.
    if (!this.series) return;
    for (const s of this.series.values()) {
      FastHistogram.clear(s);
      s.live = false;
    }
  }

  override async get(): Promise<MetricObjectWithValues<MetricValueWithName<T>>> {
    const collect = (this as unknown as { collect?: () => unknown }).collect;
    if (collect) await collect.call(this);
    const values: MetricValueWithName<T>[] = [];
    for (const s of this.series.values()) {
      if (!s.live) continue;
      let acc = 0;
      this.bounds.forEach((le, i) => {
        acc += s.counts[i]!;
        values.push({ labels: { le, ...s.labels } as never, value: acc, metricName: `${this.meta.name}_bucket`, exemplar: null } as never);
      });
      values.push({ labels: { le: '+Inf', ...s.labels } as never, value: s.count, metricName: `${this.meta.name}_bucket`, exemplar: null } as never);
      values.push({ labels: { ...s.labels } as never, value: s.sum, metricName: `${this.meta.name}_sum` });
      values.push({ labels: { ...s.labels } as never, value: s.count, metricName: `${this.meta.name}_count` });
    }
    const { name, help, aggregator } = this.meta;
    return { name, help, type: 'histogram', values, aggregator } as unknown as MetricObjectWithValues<MetricValueWithName<T>>;
  }

  /** The registry prefers this to get(); same data. */
  async getForPromString(): Promise<MetricObjectWithValues<MetricValueWithName<T>>> {
    return this.get();
  }
}
