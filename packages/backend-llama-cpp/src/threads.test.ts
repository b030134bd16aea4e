import { describe, expect, it } from 'vitest';
import { parseCpuList, physicalCoreCount } from './threads.js';

function sysfs(files: Record<string, string>) {
  return (path: string) => files[path];
}

function smtMachine(cores: number, threadsPerCore: number): Record<string, string> {
  const logical = cores * threadsPerCore;
  const files: Record<string, string> = { '/sys/devices/system/cpu/online': `0-${logical - 1}` };
  for (let cpu = 0; cpu < logical; cpu++) {
    const core = cpu % cores;
    const siblings = Array.from({ length: threadsPerCore }, (_, t) => core + t * cores).join(',');
    files[`/sys/devices/system/cpu/cpu${cpu}/topology/core_cpus_list`] = `${siblings}\n`;
  }
  return files;
}

describe('physicalCoreCount', () => {
  it('counts SMT sibling groups, not logical CPUs', () => {
    expect(physicalCoreCount(sysfs(smtMachine(4, 2)), 8)).toBe(4);
    expect(physicalCoreCount(sysfs(smtMachine(2, 1)), 2)).toBe(2);
  });

  it('is capped by the CPUs the process may use and by a cgroup quota', () => {
    expect(physicalCoreCount(sysfs(smtMachine(8, 2)), 3)).toBe(3);
    const quota = { ...smtMachine(8, 1), '/sys/fs/cgroup/cpu.max': '150000 100000\n' };
    expect(physicalCoreCount(sysfs(quota), 8)).toBe(2);
    const unlimited = { ...smtMachine(8, 1), '/sys/fs/cgroup/cpu.max': 'max 100000\n' };
    expect(physicalCoreCount(sysfs(unlimited), 8)).toBe(8);
  });

  it('falls back to the logical count without sysfs, and is at least 1', () => {
    expect(physicalCoreCount(sysfs({}), 6)).toBe(6);
    expect(physicalCoreCount(sysfs({}), 0)).toBe(1);
  });

  it('parses CPU lists', () => {
    expect(parseCpuList('0-2,5,7-8\n')).toEqual([0, 1, 2, 5, 7, 8]);
    expect(parseCpuList('garbage')).toEqual([]);
  });
});
