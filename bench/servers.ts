import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  closeSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  rmSync,
  statSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startScriptNodeOptions } from '../test/start-script.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const READY_TIMEOUT_MS = 180_000;
const STOP_TIMEOUT_MS = 15_000;

export { freePort } from '../test/free-port.js';

/** Resident memory of one process in MiB, from /proc (Linux); undefined once it has exited. */
function ownRssMb(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match?.[1] ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** The child processes of `pid`, from /proc/<pid>/task/<tid>/children (Linux). */
function childPids(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`).flatMap((tid) => {
      try {
        const children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
        return children
          .split(' ')
          .filter((child) => child.trim() !== '')
          .map(Number);
      } catch {
        return [];
      }
    });
  } catch {
    return [];
  }
}

/**
 * Resident memory in MiB of a process and its descendants (with WEB_CONCURRENCY > 1: the
 * primary and its workers); undefined once the process has exited.
 */
export function rssMb(pid: number): number | undefined {
  const own = ownRssMb(pid);
  if (own === undefined) return undefined;
  return childPids(pid).reduce((sum, child) => sum + (rssMb(child) ?? 0), own);
}

export interface RunningServer {
  name: string;
  pid: number;
  baseUrl: string;
  /** Answers 200 when the server can serve: the service's asks its database. */
  readyPath: string;
  stop(): Promise<void>;
}

interface StartOptions {
  name: string;
  args: string[];
  env: Record<string, string>;
  port: number;
  /** Where the process's stdout goes (its log lines); a file path or /dev/null. */
  stdoutPath: string;
  /** Probed until it answers 200. */
  readyPath: string;
}

async function waitUntilReady(
  child: ChildProcess,
  url: string,
  stderr: () => string,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited (${child.exitCode ?? child.signalCode}) before ready:\n${stderr()}`);
    }
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return;
    } catch {
      // not listening yet
    }
    await sleep(250);
  }
  throw new Error(`not ready after ${READY_TIMEOUT_MS / 1000} s:\n${stderr()}`);
}

async function startProcess(options: StartOptions): Promise<RunningServer> {
  // Its own working directory: no .env of the developer's is read, no files left behind.
  const cwd = mkdtempSync(join(tmpdir(), `todo-bench-${options.name}-`));
  const stdout = openSync(options.stdoutPath, 'a');
  const child = spawn(process.execPath, options.args, {
    cwd,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? cwd,
      ...options.env,
    },
    stdio: ['ignore', stdout, 'pipe'],
  });
  closeSync(stdout);
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  const pid = child.pid;
  if (pid === undefined) throw new Error(`${options.name}: could not start`);

  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
    rmSync(cwd, { recursive: true, force: true });
  };

  const baseUrl = `http://127.0.0.1:${options.port}`;
  try {
    await waitUntilReady(child, `${baseUrl}${options.readyPath}`, () => stderr);
  } catch (error) {
    await stop();
    throw new Error(`${options.name}: ${error instanceof Error ? error.message : String(error)}`);
  }
  return { name: options.name, pid, baseUrl, readyPath: options.readyPath, stop };
}

export interface ServiceOptions {
  databaseUrl: string | undefined;
  pgliteDir: string | undefined;
  secret: string;
  port: number;
  logPath: string;
  /** Extra environment of the service (`--env`), applied last: what-if runs. */
  extraEnv?: Record<string, string> | undefined;
  poolMax: number | undefined;
  /** WEB_CONCURRENCY: above 1, a node:cluster primary and this many workers (default 1). */
  workers?: number | undefined;
  /** A directory for a V8 CPU profile of the service (`node --cpu-prof`), written on exit. */
  cpuProfileDir?: string | undefined;
  /**
   * The same build with row-level security off (bench/no-rls-server.ts), as the yardstick of
   * what it costs; one process.
   */
  withoutRowLevelSecurity?: boolean | undefined;
}

/**
 * The production build as users run it: `node dist/server.js` with `npm start`'s node options,
 * NODE_ENV=production, logging at info, metrics and row-level security on; rate limits raised
 * out of the way (the limiter still runs on every request) since the load comes from one IP
 * and few users.
 */
export function startService(options: ServiceOptions): Promise<RunningServer> {
  const env: Record<string, string> = {
    NODE_ENV: 'production',
    BETTER_AUTH_SECRET: options.secret,
    BETTER_AUTH_URL: `http://127.0.0.1:${options.port}`,
    HOST: '127.0.0.1',
    PORT: String(options.port),
    LOG_LEVEL: 'info',
    RATE_LIMIT_USER_PER_MINUTE: '1000000',
    RATE_LIMIT_IP_PER_MINUTE: '1000000',
    RATE_LIMIT_AUTH_PER_MINUTE: '1000000',
  };
  Object.assign(env, options.extraEnv);
  if (options.databaseUrl) env.DATABASE_URL = options.databaseUrl;
  if (options.pgliteDir) env.PGLITE_DIR = options.pgliteDir;
  if (options.poolMax !== undefined) env.DATABASE_POOL_MAX = String(options.poolMax);
  const workers = options.workers ?? 1;
  if (workers > 1) {
    // Workers must share their rate-limit counters (the service refuses to start otherwise):
    // the local Redis, in a namespace no other run uses.
    env.WEB_CONCURRENCY = String(workers);
    env.REDIS_URL = 'redis://127.0.0.1:6379';
    env.RATE_LIMIT_NAMESPACE = `todo-bench:${randomUUID()}:`;
  }
  // Several workers: the primary's "ready" line is awaited, so it must land in a file.
  const scratchLog =
    workers > 1 && options.logPath === '/dev/null'
      ? join(mkdtempSync(join(tmpdir(), 'todo-bench-log-')), 'service.log')
      : undefined;
  const logPath = scratchLog ?? options.logPath;
  const logStart = fileSize(logPath);
  const entry = options.withoutRowLevelSecurity
    ? ['--import', import.meta.resolve('tsx'), join(ROOT, 'bench', 'no-rls-server.ts')]
    : [join(ROOT, 'dist', 'server.js')];
  const service = startProcess({
    name: options.withoutRowLevelSecurity ? 'service without RLS' : 'service',
    args: [
      ...startScriptNodeOptions(),
      ...(options.cpuProfileDir ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfileDir}`] : []),
      ...entry,
    ],
    env,
    port: options.port,
    stdoutPath: logPath,
    readyPath: '/ready',
  });
  if (workers === 1) return service;
  return service.then(async (server) => {
    const stop = async () => {
      await server.stop();
      if (scratchLog !== undefined) rmSync(dirname(scratchLog), { recursive: true, force: true });
    };
    try {
      await waitForAllWorkers(server, logPath, logStart);
    } catch (error) {
      await stop();
      throw error;
    }
    return { ...server, stop };
  });
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

/** /ready answers once one worker listens; the primary logs "Todo API ready" once all of them do. */
async function waitForAllWorkers(server: RunningServer, logPath: string, fromByte: number) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const buffer = Buffer.alloc(64 * 1024);
  let offset = fromByte;
  let text = '';
  while (Date.now() < deadline) {
    const fd = openSync(logPath, 'r');
    try {
      for (let read = readSync(fd, buffer, 0, buffer.length, offset); read > 0;) {
        offset += read;
        text = (text + buffer.toString('utf8', 0, read)).slice(-128 * 1024);
        read = readSync(fd, buffer, 0, buffer.length, offset);
      }
    } finally {
      closeSync(fd);
    }
    if (text.includes('"msg":"Todo API ready')) return;
    if (rssMb(server.pid) === undefined)
      throw new Error('service: exited before every worker was ready');
    await sleep(250);
  }
  throw new Error(`service: not every worker ready after ${READY_TIMEOUT_MS / 1000} s`);
}

export function startReference(options: {
  databaseUrl: string;
  secret: string;
  port: number;
  poolMax: number;
}): Promise<RunningServer> {
  return startProcess({
    name: 'reference',
    // Resolved here: the child runs in a scratch directory, where a bare 'tsx' is not found.
    args: ['--import', import.meta.resolve('tsx'), join(ROOT, 'bench', 'reference', 'server.ts')],
    env: {
      DATABASE_URL: options.databaseUrl,
      JWT_SECRET: options.secret,
      PORT: String(options.port),
      POOL_MAX: String(options.poolMax),
    },
    port: options.port,
    stdoutPath: '/dev/null',
    readyPath: '/health',
  });
}
