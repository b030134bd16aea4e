import { describe, expect, it } from 'vitest';
import { fromBullId, toBullId } from './keys.js';
import { idempotentJobId } from './producer.js';

describe('job ids', () => {
  it('maps any llmq id to one BullMQ accepts, reversibly', () => {
    for (const id of ['job_abc', 'pulsar:persistent://t/n/topic:1:2:-1', 'mongodb:db.coll:65f0', '12345', 'a%3Ab', '%id7']) {
      const bull = toBullId(id);
      expect(bull.includes(':')).toBe(false);
      expect(/^\d+$/.test(bull)).toBe(false);
      expect(fromBullId(bull)).toBe(id);
    }
  });

  it('derives idempotent ids per key and scope', () => {
    expect(idempotentJobId('k', 'tenant-a')).toBe(idempotentJobId('k', 'tenant-a'));
    expect(idempotentJobId('k', 'tenant-a')).not.toBe(idempotentJobId('k', 'tenant-b'));
  });
});
