import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { type CpuSnapshot, cpuSnapshot, stealPercent } from './cpu.js';
import type { RequestPlan } from './fixtures.js';
import { type RunningServer, rssMb } from './servers.js';

/** Connections per autocannon instance when a fixed rate is offered (see runLoad). */
const RATE_GROUP_CONNECTIONS = 20;
const RSS_SAMPLE_MS = 200;
/** Seconds before autocannon counts a request as timed out. */
const REQUEST_TIMEOUT_S = 10;

export interface LoadSpec {
  connections: number;
  durationSeconds: number;
  /** Offered requests per second over all connections (open loop); unset: closed loop. */
  overallRate?: number;
  /**
   * Seconds of load before measuring starts (and added to the run): opening 1 000
   * connections and starting the load instances take the first second or two, whose
   * latencies are those of connecting, not of serving.
   */
  rampUpSeconds?: number;
  plan: RequestPlan;
  /** Called every `everySeconds` with the server's RSS (the soak's memory record). */
  onRssTick?: { everySeconds: number; record: (seconds: number, mb: number) => void };
  /** PostgreSQL's processes serve this server (not PGlite, inside it): count their CPU too. */
  databaseCpu?: boolean;
}

export interface LoadResult {
  connections: number;
  offeredRate: number | null;
  durationSeconds: number;
  responses: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p95: number; p99: number; max: number };
  /** Non-2xx responses plus connection errors (timeouts included). */
  errors: number;
  timeouts: number;
  statusCodes: Record<string, number>;
  rssMaxMb: number | null;
  /**
   * CPU microseconds per response in the measured window: the server's process tree, and
   * PostgreSQL's processes (null when the database is inside the server).
   */
  cpuUsPerResponse: { server: number | null; database: number | null };
  /** Share of the machine's CPU time the hypervisor took in the measured window (steal). */
  stealPercent: number | null;
}

/** Growable list of latencies (ms). */
class Samples {
  private values = new Float64Array(1 << 16);
  length = 0;

  push(value: number) {
    if (this.length === this.values.length) {
      const grown = new Float64Array(this.values.length * 2);
      grown.set(this.values);
      this.values = grown;
    }
    this.values[this.length++] = value;
  }

  percentiles(): LoadResult['latencyMs'] {
    const sorted = this.values.slice(0, this.length).sort();
    const at = (p: number) =>
      sorted.length === 0
        ? Number.NaN
        : (sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ??
          Number.NaN);
    return { p50: at(50), p95: at(95), p99: at(99), max: at(100) };
  }
}

/**
 * Runs one load against one server and measures it: latency percentiles over every response
 * in the measured window (after the ramp-up), throughput in that window, errors and timeouts
 * over the whole run (ramp-up included), and the server's peak RSS sampled every 200 ms.
 *
 * autocannon's fixed rate releases each connection's quota at the start of every second, and
 * the connections of one instance start together: 1 000 connections at 2 000 req/s would
 * arrive as one burst of 1 000 requests each second. A fixed rate is therefore offered by
 * instances of 20 connections started evenly across the first second, which spreads the
 * same total over the second as independent users would.
 */
export async function runLoad(server: RunningServer, spec: LoadSpec): Promise<LoadResult> {
  const samples = new Samples();
  let nextConnection = 0;
  const groups =
    spec.overallRate === undefined
      ? [{ connections: spec.connections, rate: undefined, delayMs: 0 }]
      : splitIntoGroups(spec.connections, spec.overallRate);
  const lastDelayMs = Math.max(...groups.map((group) => group.delayMs));
  const rampUpMs = (spec.rampUpSeconds ?? 0) * 1000;
  // Every instance runs through the whole window [from, until); only responses in it count.
  const instanceSeconds = spec.durationSeconds + (lastDelayMs + rampUpMs) / 1000;
  const setupClient = (client: autocannon.Client) => {
    client.setRequests(spec.plan(nextConnection++));
  };

  let rssMax: number | undefined;
  const sampleRss = () => {
    const mb = rssMb(server.pid);
    if (mb !== undefined && (rssMax === undefined || mb > rssMax)) rssMax = mb;
    return mb;
  };
  const rssTimer = setInterval(sampleRss, RSS_SAMPLE_MS);
  const tick = spec.onRssTick;
  const started = performance.now();
  const tickTimer = tick
    ? setInterval(() => {
        const mb = sampleRss();
        if (mb !== undefined) tick.record(Math.round((performance.now() - started) / 1000), mb);
      }, tick.everySeconds * 1000)
    : undefined;

  const from = started + lastDelayMs + rampUpMs;
  const until = from + spec.durationSeconds * 1000;
  // Taken when the window opens and closes, beside the responses counted in it.
  let cpuAtFrom: CpuSnapshot | undefined;
  let cpuAtUntil: CpuSnapshot | undefined;
  const cpuTimers = [
    setTimeout(() => (cpuAtFrom = cpuSnapshot(server.pid)), from - started),
    setTimeout(() => (cpuAtUntil = cpuSnapshot(server.pid)), until - started),
  ];

  try {
    const results = await Promise.all(
      groups.map(async (group) => {
        await sleep(group.delayMs);
        const instance = autocannon({
          url: server.baseUrl,
          connections: group.connections,
          duration: instanceSeconds,
          timeout: REQUEST_TIMEOUT_S,
          setupClient,
          ...(group.rate === undefined ? {} : { overallRate: group.rate }),
        });
        instance.on('response', (_client, _status, _bytes, responseTime) => {
          const now = performance.now();
          if (now >= from && now < until) samples.push(responseTime);
        });
        return instance;
      }),
    );
    const statusCodes: Record<string, number> = {};
    let connectionErrors = 0;
    let timeouts = 0;
    let non2xx = 0;
    for (const result of results) {
      connectionErrors += result.errors;
      timeouts += result.timeouts;
      non2xx += result.non2xx;
      for (const [code, { count }] of Object.entries(result.statusCodeStats)) {
        statusCodes[code] = (statusCodes[code] ?? 0) + count;
      }
    }
    const perResponse = (pick: (snapshot: CpuSnapshot) => number) =>
      cpuAtFrom && cpuAtUntil && samples.length > 0
        ? ((pick(cpuAtUntil) - pick(cpuAtFrom)) * 1000) / samples.length
        : null;
    return {
      connections: spec.connections,
      offeredRate: spec.overallRate ?? null,
      durationSeconds: spec.durationSeconds,
      responses: samples.length,
      requestsPerSecond: samples.length / spec.durationSeconds,
      latencyMs: samples.percentiles(),
      errors: non2xx + connectionErrors,
      timeouts,
      statusCodes,
      rssMaxMb: rssMax ?? null,
      cpuUsPerResponse: {
        server: perResponse((snapshot) => snapshot.serverMs),
        database: spec.databaseCpu === true ? perResponse((snapshot) => snapshot.databaseMs) : null,
      },
      stealPercent:
        cpuAtFrom && cpuAtUntil ? stealPercent(cpuAtFrom.machine, cpuAtUntil.machine) : null,
    };
  } finally {
    for (const timer of cpuTimers) clearTimeout(timer);
    clearInterval(rssTimer);
    if (tickTimer) clearInterval(tickTimer);
  }
}

function splitIntoGroups(connections: number, rate: number) {
  const count = Math.max(1, Math.ceil(connections / RATE_GROUP_CONNECTIONS));
  return Array.from({ length: count }, (_, i) => {
    // Even shares; the first ones take the remainders.
    const share = (total: number) => Math.floor(total / count) + (i < total % count ? 1 : 0);
    return {
      connections: share(connections),
      rate: Math.max(1, share(rate)),
      delayMs: Math.round((i * 1000) / count),
    };
  });
}
