import { describe, expect, it } from 'vitest';
import { stealPercent } from './cpu.js';

describe('stealPercent', () => {
  it('is the stolen share of all the CPU time that passed between the two snapshots', () => {
    expect(stealPercent({ total: 10_000, steal: 100 }, { total: 12_000, steal: 200 })).toBe(5);
  });

  it('is not known when no time passed', () => {
    expect(stealPercent({ total: 10_000, steal: 100 }, { total: 10_000, steal: 100 })).toBeNull();
  });
});
