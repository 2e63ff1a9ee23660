import type { LoadResult } from './load.js';
import type { PgliteAloneResult } from './pglite-alone.js';

/** Which server a record measured: the service, the reference, or the service without RLS. */
export type Target = 'service' | 'reference' | 'no RLS';

export interface ScenarioRecord extends LoadResult {
  id: string;
  label: string;
  target: Target;
}

export interface SoakRecord {
  durationSeconds: number;
  /** RSS of the service every 10 s. */
  samples: { seconds: number; rssMb: number }[];
  /** When the first sample counted in the growth was taken (after the settling minute). */
  countedFromSeconds: number | null;
  firstMb: number | null;
  lastMb: number | null;
  growthPercent: number | null;
}

export interface Ratio {
  name: string;
  /** service / reference throughput in each alternation. */
  pairs: number[];
  /** The median of `pairs`: what the target is checked on. */
  overall: number | null;
  /**
   * Mean service throughput over mean reference throughput, the figure of runs before the
   * median (bench/HISTORY.md until 2026-12-07): printed beside it so the two can be compared.
   */
  meanOfMeans: number | null;
}

export interface TargetCheck {
  target: string;
  figure: string;
  met: boolean | null;
}

const mean = (values: number[]) =>
  values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0) / values.length;

/** The middle value; the mean of the two middle ones for an even count. */
export const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const upper = sorted[Math.floor(sorted.length / 2)];
  if (upper === undefined) return null;
  const lower = sorted[Math.ceil(sorted.length / 2) - 1] ?? upper;
  return (lower + upper) / 2;
};

const fixed = (value: number | null | undefined, digits: number) =>
  value === null || value === undefined || Number.isNaN(value) ? 'n/a' : value.toFixed(digits);

export function throughputRatio(
  records: ScenarioRecord[],
  id: string,
  name: string,
  against: Target = 'reference',
): Ratio {
  const service = records.filter((record) => record.id === id && record.target === 'service');
  const reference = records.filter((record) => record.id === id && record.target === against);
  const pairs = service.flatMap((record, i) => {
    const other = reference[i];
    return other ? [record.requestsPerSecond / other.requestsPerSecond] : [];
  });
  const meanOfMeans =
    reference.length === 0
      ? null
      : mean(service.map((record) => record.requestsPerSecond)) /
        mean(reference.map((record) => record.requestsPerSecond));
  // One disturbed window (a neighbour on this shared machine) moves a mean of a few windows
  // far; it moves the median of the alternations by one place. In one --quick run on
  // 2026-12-07 the create alternations ranged from 0.55 to 1.54.
  return { name, pairs, overall: median(pairs), meanOfMeans };
}

export function formatTable(records: ScenarioRecord[]): string {
  const header = [
    'scenario',
    'server',
    'conns',
    'offered',
    'req/s',
    'p50 ms',
    'p95 ms',
    'p99 ms',
    'errors',
    'timeouts',
    'RSS MB',
    'CPU µs/resp',
    'DB µs/resp',
    'steal %',
  ];
  const rows = records.map((record) => [
    record.label,
    record.target,
    String(record.connections),
    record.offeredRate === null ? 'max' : `${record.offeredRate}/s`,
    fixed(record.requestsPerSecond, 0),
    fixed(record.latencyMs.p50, 1),
    fixed(record.latencyMs.p95, 1),
    fixed(record.latencyMs.p99, 1),
    String(record.errors),
    String(record.timeouts),
    fixed(record.rssMaxMb, 0),
    fixed(record.cpuUsPerResponse.server, 0),
    fixed(record.cpuUsPerResponse.database, 0),
    fixed(record.stealPercent, 1),
  ]);
  const widths = header.map((title, column) =>
    Math.max(title.length, ...rows.map((row) => (row[column] ?? '').length)),
  );
  const line = (cells: string[]) =>
    `| ${cells
      .map((cell, column) =>
        column < 2 ? cell.padEnd(widths[column] ?? 0) : cell.padStart(widths[column] ?? 0),
      )
      .join(' | ')} |`;
  const rule = `|${widths.map((width, column) => (column < 2 ? `:${'-'.repeat(width + 1)}` : `${'-'.repeat(width + 1)}:`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export function formatRatio(ratio: Ratio): string {
  if (ratio.overall === null) return `${ratio.name}: n/a (not measured in this run)`;
  const pairs = ratio.pairs.map((value) => value.toFixed(2)).join(', ');
  const count = ratio.pairs.length;
  return `${ratio.name}: ${ratio.overall.toFixed(2)}, the median of ${count} alternation${count === 1 ? '' : 's'}: ${pairs} (mean over mean: ${fixed(ratio.meanOfMeans, 2)})`;
}

export interface TargetInputs {
  records: ScenarioRecord[];
  ratios: Ratio[];
  /** List throughput of the service over the same build with row-level security off. */
  rlsRatio: Ratio | null;
  pageRatio: number | null;
  soak: SoakRecord | null;
  /** The most list requests PGlite itself answers here (bench/pglite-alone.ts). */
  pgliteAlone?: PgliteAloneResult | null;
  databaseKind: 'postgres' | 'pglite';
}

/** The targets of issue 6, with this run's figure for each (null: not measured here). */
export function checkTargets(inputs: TargetInputs): TargetCheck[] {
  const { records } = inputs;
  const find = (id: string) =>
    records.find((record) => record.id === id && record.target === 'service');
  const checks: TargetCheck[] = [];

  for (const ratio of inputs.ratios) {
    checks.push({
      target: `${ratio.name} >= 0.70`,
      figure: fixed(ratio.overall, 2),
      met: ratio.overall === null ? null : ratio.overall >= 0.7,
    });
  }

  const open = find('open');
  const openReference = records.find(
    (record) => record.id === 'open' && record.target === 'reference',
  );
  const openFigure = (record: ScenarioRecord) =>
    `p95 ${fixed(record.latencyMs.p95, 1)} ms, p99 ${fixed(record.latencyMs.p99, 1)} ms, ${record.errors} errors, ${fixed(record.requestsPerSecond, 0)} of ${record.offeredRate} req/s served`;
  checks.push({
    target: 'open loop 1000 conns: p95 < 100 ms, p99 < 250 ms, 0 errors',
    figure: open
      ? `${openFigure(open)}${openReference ? ` (the reference at the same rate: ${openFigure(openReference)})` : ''}`
      : 'not run',
    met: open ? open.latencyMs.p95 < 100 && open.latencyMs.p99 < 250 && open.errors === 0 : null,
  });

  const closed = find('closed');
  checks.push({
    target: 'closed loop 1000 conns: 0 errors, 0 timeouts',
    figure: closed ? `${closed.errors} errors, ${closed.timeouts} timeouts` : 'not run',
    met: closed ? closed.errors === 0 && closed.timeouts === 0 : null,
  });

  const rls = inputs.rlsRatio?.overall ?? null;
  checks.push({
    target: 'row-level security <= 15 % of list throughput',
    figure:
      rls === null
        ? 'not run (scenario rls, PostgreSQL only)'
        : `${fixed((1 - rls) * 100, 1)} % (service/no RLS ${fixed(rls, 2)})`,
    met: rls === null ? null : rls >= 0.85,
  });

  if (inputs.databaseKind === 'pglite') {
    const list = records.filter((record) => record.id === 'list20' && record.target === 'service');
    const best = Math.max(...list.map((record) => record.requestsPerSecond));
    checks.push({
      target: 'PGlite: >= 1000 list req/s',
      figure:
        list.length > 0
          ? `${best.toFixed(0)} req/s${inputs.pgliteAlone ? ` (PGlite alone, no HTTP: ${inputs.pgliteAlone.listsPerSecond.toFixed(0)} lists/s)` : ''}`
          : 'not run',
      met: list.length > 0 ? best >= 1000 : null,
    });
  }

  checks.push({
    target: 'page of 50: 100 000-task user within 1.5 x the 20-task user (p50)',
    figure: inputs.pageRatio === null ? 'not run' : `x${inputs.pageRatio.toFixed(2)}`,
    met: inputs.pageRatio === null ? null : inputs.pageRatio <= 1.5,
  });

  const rss = records
    .filter((record) => record.target === 'service' && record.rssMaxMb !== null)
    .map((record) => record.rssMaxMb ?? 0);
  const rssMax = rss.length > 0 ? Math.max(...rss) : null;
  checks.push({
    target: 'service RSS < 200 MB under load',
    figure: rssMax === null ? 'n/a' : `max ${rssMax.toFixed(0)} MB`,
    met: rssMax === null ? null : rssMax < 200,
  });

  checks.push({
    target: 'soak: RSS growth < 10 %',
    figure:
      inputs.soak === null
        ? 'not run (--soak)'
        : `${fixed(inputs.soak.firstMb, 0)} -> ${fixed(inputs.soak.lastMb, 0)} MB (${fixed(inputs.soak.growthPercent, 1)} %) from ${inputs.soak.countedFromSeconds ?? 0} s to ${inputs.soak.durationSeconds} s`,
    met:
      inputs.soak === null || inputs.soak.growthPercent === null
        ? null
        : inputs.soak.growthPercent < 10,
  });
  return checks;
}

export function formatTargets(checks: TargetCheck[]): string {
  return checks
    .map((check) => {
      const verdict = check.met === null ? ' -- ' : check.met ? ' met' : 'MISS';
      return `[${verdict}] ${check.target}: ${check.figure}`;
    })
    .join('\n');
}

/**
 * The soak starts in the process the other scenarios loaded: its first samples still hold
 * their peak (1 000 connections, whole lists) until the collector gives it back, which would
 * read as shrinking and hide a leak of that size. Growth is counted from after it settles.
 */
const SOAK_SETTLE_SECONDS = 60;

/**
 * Growth from the median of the first samples after the settling minute to the median of the
 * last ones (three each, fewer in a short soak so that the two windows never overlap; a soak
 * too short to leave two samples after its first minute is counted from its start).
 */
export function soakRecord(
  durationSeconds: number,
  samples: { seconds: number; rssMb: number }[],
): SoakRecord {
  const settled = samples.filter((sample) => sample.seconds >= SOAK_SETTLE_SECONDS);
  const counted = settled.length >= 2 ? settled : samples;
  const window = Math.max(1, Math.min(3, Math.floor(counted.length / 2)));
  const first = median(counted.slice(0, window).map((sample) => sample.rssMb));
  const last = median(counted.slice(-window).map((sample) => sample.rssMb));
  return {
    durationSeconds,
    samples,
    countedFromSeconds: counted[0]?.seconds ?? null,
    firstMb: first,
    lastMb: last,
    growthPercent: first === null || last === null ? null : ((last - first) / first) * 100,
  };
}
