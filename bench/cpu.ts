import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

/**
 * CPU time from /proc (Linux), for CPU per request: on a shared 2-core machine, throughput
 * moves with whatever else runs, while the CPU a request costs moves far less.
 */

/** /proc/<pid>/stat counts in USER_HZ ticks; 100 on every mainstream Linux, asked anyway. */
const TICKS_PER_SECOND = (() => {
  const asked = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout);
  return Number.isInteger(asked) && asked > 0 ? asked : 100;
})();

interface ProcessStat {
  command: string;
  parent: number;
  cpuMs: number;
}

function statOf(pid: number): ProcessStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid …": comm may hold spaces and parentheses, so split after the last ')'.
  const close = text.lastIndexOf(')');
  const command = text.slice(text.indexOf('(') + 1, close);
  const fields = text.slice(close + 2).split(' ');
  // After comm: state is field 3 of stat(5), so utime, stime, cutime and cstime (14–17)
  // sit at 11–14. The children's part keeps the CPU of processes that exited in the window
  // (a closed backend, an autovacuum worker), which the postmaster has reaped.
  const ticks = [11, 12, 13, 14].reduce((sum, index) => sum + Number(fields[index]), 0);
  return { command, parent: Number(fields[1]), cpuMs: (ticks * 1000) / TICKS_PER_SECOND };
}

function allStats(): Map<number, ProcessStat> {
  const stats = new Map<number, ProcessStat>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = statOf(Number(entry));
    if (stat) stats.set(Number(entry), stat);
  }
  return stats;
}

/** PostgreSQL's processes, and the PgBouncer of `--pgbouncer` in front of them. */
const DATABASE_COMMANDS = new Set(['postgres', 'pgbouncer']);

/** CPU milliseconds used so far by a server (and its cluster workers) and by PostgreSQL. */
export interface CpuSnapshot {
  serverMs: number;
  databaseMs: number;
  machine: MachineTicks;
}

/** The machine's CPU time so far (all cores, from /proc/stat), and how much the hypervisor took. */
export interface MachineTicks {
  total: number;
  steal: number;
}

function machineTicks(): MachineTicks {
  // "cpu  user nice system idle iowait irq softirq steal guest guest_nice": guest time is
  // already inside user and nice, so the total stops at steal.
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
  const ticks = line.trim().split(/\s+/).slice(1, 9).map(Number);
  return { total: ticks.reduce((sum, value) => sum + value, 0), steal: ticks[7] ?? 0 };
}

/**
 * Percent of the machine's CPU time between two snapshots that the hypervisor gave to other
 * guests: while it is high, every process here ran slower, the service and the reference alike.
 */
export function stealPercent(from: MachineTicks, until: MachineTicks): number | null {
  const total = until.total - from.total;
  return total > 0 ? ((until.steal - from.steal) * 100) / total : null;
}

/**
 * The server's figure sums `pid` and its live descendants (a cluster's workers). The
 * database's sums every `postgres` and `pgbouncer` process on the machine, so anything else
 * using that server at the same time (a test run) counts too.
 */
export function cpuSnapshot(pid: number): CpuSnapshot {
  const stats = allStats();
  const inTree = (candidate: number): boolean => {
    for (let at = candidate, hops = 0; at > 1 && hops < 64; hops++) {
      if (at === pid) return true;
      const parent = stats.get(at)?.parent;
      if (parent === undefined) return false;
      at = parent;
    }
    return false;
  };
  let serverMs = 0;
  let databaseMs = 0;
  for (const [candidate, stat] of stats) {
    if (inTree(candidate)) serverMs += stat.cpuMs;
    else if (DATABASE_COMMANDS.has(stat.command)) databaseMs += stat.cpuMs;
  }
  return { serverMs, databaseMs, machine: machineTicks() };
}
