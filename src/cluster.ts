/**
 * WEB_CONCURRENCY > 1: the process entry becomes a node:cluster primary that forks that many
 * workers, each running the ordinary server (buildApp + listen) on the one PORT. The primary
 * never builds the app nor opens a database; it only starts, watches, restarts and stops workers.
 *
 * - Start-up: every worker is forked at once (their migrations queue on an advisory lock, see
 *   src/db/client.ts). A worker that exits before it listens fails the start-up: the others are
 *   stopped and the primary exits 1 with that worker's one-line error on stderr, so a bad
 *   DATABASE_URL is reported once, not once per worker nor in a fork loop.
 * - Running: a worker that dies is replaced; workers that die soon after starting are replaced
 *   after a doubling delay (0.5 s … 30 s), so a crash loop does not burn the CPU.
 * - SIGTERM/SIGINT: forwarded as SIGTERM to every worker (each stops accepting, finishes its
 *   in-flight requests and closes its pool); the primary exits 0 once all have exited cleanly,
 *   1 if one did not, and kills them and exits 1 after a grace period.
 *
 * Workers' stdout (their JSON log lines) goes straight to the primary's; their stderr passes
 * through the primary, held back until the worker listens so that only the error of the worker
 * that failed the start-up is shown.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';

/** A worker's own shutdown gives up after 10 s (src/server.ts); the primary waits a little longer. */
const DEFAULT_SHUTDOWN_GRACE_MS = 12_000;
/** A worker that has listened this long did not crash at start-up: the back-off starts over. */
const STABLE_AFTER_MS = 10_000;
const RESTART_DELAY_FIRST_MS = 500;
const RESTART_DELAY_MAX_MS = 30_000;
/** What is kept of a worker's stderr before it listens. */
const PENDING_STDERR_LIMIT = 64 * 1024;

export interface PrimaryOptions {
  workers: number;
  logger: Logger;
  /** Logged once, when every worker of the first start listens. */
  readyMessage: string;
  shutdownGraceMs?: number;
}

interface WorkerState {
  worker: Worker;
  pid: number | undefined;
  /** When it started listening; undefined while it starts. */
  listenedAt: number | undefined;
  /** Its stderr until it listens: shown if it dies first, passed on once it listens. */
  pendingStderr: string;
}

type Phase = 'starting' | 'running' | 'stopping';

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  return signal === null ? `exit code ${code ?? 'unknown'}` : `signal ${signal}`;
}

/** Forks `workers` workers and supervises them until SIGTERM/SIGINT; exits the process itself. */
export function runPrimary(options: PrimaryOptions): void {
  const { logger, workers: wanted } = options;
  const graceMs = options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
  const live = new Map<number, WorkerState>();
  const pendingRestarts = new Set<NodeJS.Timeout>();
  let phase: Phase = 'starting';
  /** Workers in a row that died during or soon after start-up. */
  let crashStreak = 0;
  let exitCode = 0;

  // stderr piped (see above); stdin is not for the workers.
  cluster.setupPrimary({ stdio: ['ignore', 'inherit', 'pipe', 'ipc'] });

  function fork(): void {
    const worker = cluster.fork();
    const state: WorkerState = {
      worker,
      pid: worker.process.pid,
      listenedAt: undefined,
      pendingStderr: '',
    };
    live.set(worker.id, state);
    logger.info({ event: 'worker', worker: worker.id, workerPid: state.pid }, 'worker started');
    worker.process.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      if (state.listenedAt !== undefined) process.stderr.write(chunk);
      else state.pendingStderr = (state.pendingStderr + chunk).slice(-PENDING_STDERR_LIMIT);
    });
    worker.on('listening', () => onListening(state));
    // 'close' rather than 'exit': by then its stderr has been read to the end.
    worker.process.once('close', (code: number | null, signal: NodeJS.Signals | null) =>
      onExit(state, code, signal),
    );
  }

  function onListening(state: WorkerState): void {
    if (state.listenedAt !== undefined) return;
    state.listenedAt = Date.now();
    if (state.pendingStderr !== '') process.stderr.write(state.pendingStderr);
    state.pendingStderr = '';
    logger.info(
      { event: 'worker', worker: state.worker.id, workerPid: state.pid },
      'worker listening',
    );
    if (phase !== 'starting') return;
    const listening = [...live.values()].filter((s) => s.listenedAt !== undefined).length;
    if (listening >= wanted) {
      phase = 'running';
      logger.info({ workers: wanted }, options.readyMessage);
    }
  }

  function onExit(state: WorkerState, code: number | null, signal: NodeJS.Signals | null): void {
    live.delete(state.worker.id);
    const fields = {
      event: 'worker',
      worker: state.worker.id,
      workerPid: state.pid,
      code,
      signal,
    };

    if (phase === 'stopping') {
      // A worker stopped before it could catch SIGTERM (still starting) stopped cleanly too.
      const clean = code === 0 || (signal === 'SIGTERM' && state.listenedAt === undefined);
      if (!clean) exitCode = 1;
      logger[clean ? 'info' : 'error'](fields, 'worker exited');
      if (live.size === 0) finish();
      return;
    }

    if (state.listenedAt === undefined && phase === 'starting') {
      logger.error(fields, 'worker exited during start-up; stopping the others');
      process.stderr.write(
        state.pendingStderr !== ''
          ? state.pendingStderr
          : `todo-api: a worker exited during start-up (${describeExit(code, signal)})\n`,
      );
      stop(1);
      return;
    }

    // A replacement that cannot start (e.g. the database went away) says why each time.
    if (state.listenedAt === undefined && state.pendingStderr !== '') {
      process.stderr.write(state.pendingStderr);
    }
    const crashedEarly =
      state.listenedAt === undefined || Date.now() - state.listenedAt < STABLE_AFTER_MS;
    crashStreak = crashedEarly ? crashStreak + 1 : 0;
    const delayMs =
      crashStreak === 0
        ? 0
        : Math.min(RESTART_DELAY_MAX_MS, RESTART_DELAY_FIRST_MS * 2 ** (crashStreak - 1));
    logger.error(
      { ...fields, restartInMs: delayMs },
      `worker exited unexpectedly (${describeExit(code, signal)}); starting another`,
    );
    const timer = setTimeout(() => {
      pendingRestarts.delete(timer);
      if (phase !== 'stopping') fork();
    }, delayMs);
    pendingRestarts.add(timer);
  }

  function stop(code: number): void {
    if (phase === 'stopping') return;
    phase = 'stopping';
    exitCode = code;
    for (const timer of pendingRestarts) clearTimeout(timer);
    pendingRestarts.clear();
    for (const state of live.values()) state.worker.process.kill('SIGTERM');
    const forced = setTimeout(() => {
      logger.error(
        { workers: [...live.values()].map((state) => state.pid) },
        'workers did not stop in time; killing them',
      );
      for (const state of live.values()) state.worker.process.kill('SIGKILL');
      process.exit(1);
    }, graceMs);
    forced.unref();
    if (live.size === 0) finish();
  }

  function finish(): void {
    if (exitCode === 0) logger.info('all workers stopped; shut down cleanly');
    else logger.error('all workers stopped; exiting 1');
    process.exit(exitCode);
  }

  const onSignal = (signal: NodeJS.Signals) => {
    if (phase === 'stopping') return;
    logger.info(
      { signal, workers: live.size },
      'shutting down: every worker stops accepting and finishes its in-flight requests',
    );
    stop(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  logger.info({ workers: wanted }, `starting ${wanted} workers`);
  for (let i = 0; i < wanted; i++) fork();
}
