import { describe, expect, it } from 'vitest';
import {
  checkTargets,
  type ScenarioRecord,
  soakRecord,
  type Target,
  throughputRatio,
} from './report.js';

function record(id: string, target: Target, requestsPerSecond: number): ScenarioRecord {
  return {
    id,
    label: id,
    target,
    connections: 64,
    offeredRate: null,
    durationSeconds: 10,
    responses: requestsPerSecond * 10,
    requestsPerSecond,
    latencyMs: { p50: 1, p95: 2, p99: 3, max: 4 },
    errors: 0,
    timeouts: 0,
    statusCodes: {},
    rssMaxMb: 100,
    cpuUsPerResponse: { server: null, database: null },
    stealPercent: null,
  };
}

/** Service and reference alternated: one pair of records per [service, reference] throughput. */
function alternations(id: string, pairs: [number, number][], against: Target = 'reference') {
  return pairs.flatMap(([service, other]) => [
    record(id, 'service', service),
    record(id, against, other),
  ]);
}

describe('throughputRatio', () => {
  it('is the median of the alternations, so one disturbed window does not decide it', () => {
    // The third reference window ran while a neighbour held the cores: 0.8, 0.8, 4.0.
    const records = alternations('create', [
      [800, 1000],
      [800, 1000],
      [800, 200],
    ]);
    const ratio = throughputRatio(records, 'create', 'create service/reference');
    expect(ratio.pairs).toEqual([0.8, 0.8, 4]);
    expect(ratio.overall).toBeCloseTo(0.8, 10);
    // The former figure, mean over mean, is kept beside it: 800 / 733.3.
    expect(ratio.meanOfMeans).toBeCloseTo(800 / (2200 / 3), 10);
  });

  it('takes the mean of the two middle alternations for an even count', () => {
    const records = alternations('list20', [
      [600, 1000],
      [900, 1000],
      [700, 1000],
      [1200, 1000],
    ]);
    expect(throughputRatio(records, 'list20', 'list 20').overall).toBeCloseTo(0.8, 10);
  });

  it('compares against the server it is asked for', () => {
    const records = [
      ...alternations('rls', [[1000, 500]], 'no RLS'),
      ...alternations('rls', [[1000, 2000]], 'reference'),
    ];
    expect(throughputRatio(records, 'rls', 'rls', 'no RLS').pairs).toEqual([2]);
  });

  it('is not measured when the run had no reference', () => {
    const records = [record('list20', 'service', 1000), record('list20', 'service', 1100)];
    const ratio = throughputRatio(records, 'list20', 'list 20');
    expect(ratio.overall).toBeNull();
    expect(ratio.meanOfMeans).toBeNull();
  });
});

describe('checkTargets', () => {
  it('judges the 0.7 target on the median, not on the mean over mean', () => {
    // Mean over mean 2100 / 2800 = 0.75 would pass; the median alternation, 0.6, does not.
    const records = alternations('create', [
      [600, 1000],
      [600, 1000],
      [900, 800],
    ]);
    const ratio = throughputRatio(records, 'create', 'create service/reference');
    const [check] = checkTargets({
      records,
      ratios: [ratio],
      rlsRatio: null,
      pageRatio: null,
      soak: null,
      databaseKind: 'postgres',
    });
    expect(check).toEqual({
      target: 'create service/reference >= 0.70',
      figure: '0.60',
      met: false,
    });
  });
});

/** RSS every 10 s, as the soak samples it. */
function rssEvery10s(megabytes: number[]) {
  return megabytes.map((rssMb, index) => ({ seconds: (index + 1) * 10, rssMb }));
}

describe('soakRecord', () => {
  // The first samples hold what the whole-list scenario left; from 60 s on, 100 -> 120.
  const leakBehindAPeak = rssEvery10s([
    190, 190, 170, 150, 130, 100, 100, 100, 105, 110, 120, 120, 120,
  ]);

  it("counts growth from after the first minute, not from the previous scenario's peak", () => {
    const soak = soakRecord(130, leakBehindAPeak);
    expect(soak.countedFromSeconds).toBe(60);
    expect(soak.firstMb).toBe(100);
    expect(soak.lastMb).toBe(120);
    expect(soak.growthPercent).toBeCloseTo(20);
  });

  it('fails the 10 % target on a leak that the inherited peak would have hidden', () => {
    const checks = checkTargets({
      records: [],
      ratios: [],
      rlsRatio: null,
      pageRatio: null,
      soak: soakRecord(130, leakBehindAPeak),
      databaseKind: 'postgres',
    });
    expect(checks.find((check) => check.target.startsWith('soak'))).toEqual({
      target: 'soak: RSS growth < 10 %',
      figure: '100 -> 120 MB (20.0 %) from 60 s to 130 s',
      met: false,
    });
  });

  it('counts a soak too short to settle from its start', () => {
    const soak = soakRecord(40, rssEvery10s([100, 104, 106, 110]));
    expect(soak.countedFromSeconds).toBe(10);
    expect(soak.firstMb).toBe(102);
    expect(soak.lastMb).toBe(108);
  });
});
