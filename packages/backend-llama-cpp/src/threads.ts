import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/** Reads a small text file, or `undefined` when it cannot be read. */
export type ReadText = (path: string) => string | undefined;

const readText: ReadText = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/** Parses a Linux CPU list such as `0-3,8,10-11`. */
export function parseCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.trim().split(',')) {
    if (part === '') continue;
    const [a, b] = part.split('-');
    const from = Number(a);
    const to = b === undefined ? from : Number(b);
    if (!Number.isInteger(from) || !Number.isInteger(to) || to < from) return [];
    for (let i = from; i <= to; i++) out.push(i);
  }
  return out;
}

/**
 * Physical cores this process may use: distinct SMT sibling groups among the online CPUs (Linux
 * sysfs), capped by the CPUs the process may run on and by a cgroup v2 CPU quota. llama.cpp's
 * threads spin while they wait for each other, so one thread per hyper-thread or beyond the quota
 * slows decoding down instead of speeding it up.
 *
 * Where sysfs is not there (macOS, Windows) it falls back to the logical CPU count.
 */
export function physicalCoreCount(read: ReadText = readText, logical: number = availableParallelism()): number {
  let cores = logical;
  const online = read('/sys/devices/system/cpu/online');
  if (online !== undefined) {
    const groups = new Set<string>();
    for (const cpu of parseCpuList(online)) {
      const base = `/sys/devices/system/cpu/cpu${cpu}/topology`;
      const siblings = read(`${base}/core_cpus_list`) ?? read(`${base}/thread_siblings_list`);
      groups.add(siblings === undefined ? `cpu${cpu}` : siblings.trim());
    }
    if (groups.size > 0) cores = Math.min(cores, groups.size);
  }
  const quota = read('/sys/fs/cgroup/cpu.max');
  if (quota !== undefined) {
    const [max, period] = quota.trim().split(/\s+/);
    const q = Number(max);
    const p = Number(period);
    if (max !== 'max' && Number.isFinite(q) && Number.isFinite(p) && q > 0 && p > 0) {
      cores = Math.min(cores, Math.ceil(q / p));
    }
  }
  return Math.max(1, cores);
}
