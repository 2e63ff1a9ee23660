/**
 * Real processes for end-to-end tests: the server on a free port until the test stops it, and
 * one-shot runs (a server that must fail to start, the token CLI) to their exit. The server is
 * the run's compiled service (test/service-build.ts) started as `npm start` starts dist/, the
 * token CLI as `npm run token` runs it (tsx).
 *
 * Every process runs in a fresh temporary directory (removed once it has exited), so a
 * developer's `.env` in the repository, which the server and the CLIs read from their working
 * directory, never reaches it; the scripts and tsx's loader are given by absolute path. Of the
 * test runner's environment only PATH and HOME pass: a developer's DATABASE_URL, REDIS_URL,
 * AUTH_* and the rest never do. Everything else comes from the test.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { inject } from 'vitest';
import { freePort } from './free-port.js';
import { ADMIN_DATABASE_URL, createPostgresDatabase, TEST_SECRET } from './helpers.js';
import { startScriptNodeOptions } from './start-script.js';

export { freePort };

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** tsx's loader (`--import tsx`, as `npm run token` uses it), resolved from the repository, as a file URL. */
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Default for how long a server may take to answer /health: PGlite and migrations on a busy machine. */
const STARTUP_LIMIT_MS = 60_000;
/** A one-shot script still running after this is killed (SIGKILL). */
const RUN_LIMIT_MS = 50_000;
/** Default for how long `stop()` waits after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 10_000;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** PATH and HOME of the test runner, then `env`: nothing else of the developer's shell. */
export function isolatedEnv(env: Record<string, string> = {}): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    // The project's compiler options, which tsx would otherwise look for in the working directory.
    TSX_TSCONFIG_PATH: join(REPO_ROOT, 'tsconfig.json'),
    ...env,
  };
}

export interface ExitResult {
  code: number | null;
  signal: NodeJS.Signals | null;
}

const running = new Set<ChildProcess>();

/** SIGKILLs every process started here that is still running: an afterAll safety net. */
export function killLeftovers(): void {
  for (const child of running) child.kill('SIGKILL');
}

interface Spawned {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves when the process has exited. */
  exited: Promise<ExitResult>;
  /** How the process exited, or undefined while it runs. */
  exitResult(): ExitResult | undefined;
  /** Resolves once it has exited and its output is complete. */
  closed: Promise<void>;
}

/** What the tests run: the service, or the CLI that mints tokens. */
export type Program = 'server' | 'token-cli';

/** node's arguments that start `program`, before the program's own. */
function nodeArguments(program: Program): string[] {
  switch (program) {
    case 'server':
      return [...startScriptNodeOptions(), join(inject('serviceBuildDir'), 'server.js')];
    case 'token-cli':
      return ['--import', TSX_LOADER, join(REPO_ROOT, 'src', 'cli', 'token.ts')];
  }
}

/** `program` with `args` in a fresh temporary directory. */
function spawnProgram(program: Program, args: string[], env: Record<string, string>): Spawned {
  const cwd = mkdtempSync(join(tmpdir(), 'todo-e2e-'));
  const child = spawn(process.execPath, [...nodeArguments(program), ...args], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: isolatedEnv(env),
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  let exit: ExitResult | undefined;
  const exited = new Promise<ExitResult>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });
  const closed = new Promise<void>((resolve) => {
    child.once('close', () => {
      running.delete(child);
      rmSync(cwd, { recursive: true, force: true });
      resolve();
    });
  });
  return {
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exited,
    exitResult: () => exit,
    closed,
  };
}

export interface RunResult extends ExitResult {
  stdout: string;
  stderr: string;
}

/** Runs `program` with `args` and only `env` (see isolatedEnv); resolves when it has exited. */
export async function runProgram(
  program: Program,
  args: string[],
  env: Record<string, string>,
): Promise<RunResult> {
  const run = spawnProgram(program, args, env);
  const timer = setTimeout(() => run.child.kill('SIGKILL'), RUN_LIMIT_MS);
  const { code, signal } = await run.exited;
  await run.closed;
  clearTimeout(timer);
  return { code, signal, stdout: run.stdout(), stderr: run.stderr() };
}

export type LogLine = Record<string, unknown>;

export interface ServerProcess {
  readonly child: ChildProcess;
  readonly port: number;
  /** `http://127.0.0.1:<port>` */
  readonly baseUrl: string;
  /** Resolves when the process has exited. */
  readonly exited: Promise<ExitResult>;
  /** How the process exited, or undefined while it runs. */
  exitResult(): ExitResult | undefined;
  stdout(): string;
  stderr(): string;
  /** The complete JSON lines written on stdout so far. */
  logLines(): LogLine[];
  /** Waits for a log line matching `predicate` (onResponse logs after the reply is sent). */
  waitForLogLine(predicate: (line: LogLine) => boolean, timeoutMs?: number): Promise<LogLine>;
  /** SIGKILL unless it already exited; resolves once it has. */
  kill(): Promise<void>;
  /** SIGTERM unless it already exited, SIGKILL if it still runs after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

export interface StartServerOptions {
  /** Environment on top of PATH, HOME, the test secret, LOG_LEVEL=info and PGLITE_DIR=memory://. */
  env?: Record<string, string>;
  /** Defaults to a free port. */
  port?: number;
  /** How long the server may take to answer /health; 60 s unless given. */
  startupLimitMs?: number;
}

/** Starts the server and resolves once GET /health answers 200; throws (and kills it) otherwise. */
export async function startServer(options: StartServerOptions = {}): Promise<ServerProcess> {
  const port = options.port ?? (await freePort());
  const baseUrl = `http://127.0.0.1:${port}`;
  const { child, stdout, stderr, exited, exitResult } = spawnProgram('server', [], {
    BETTER_AUTH_SECRET: TEST_SECRET,
    LOG_LEVEL: 'info',
    PGLITE_DIR: 'memory://',
    ...options.env,
    PORT: String(port),
    HOST: '127.0.0.1',
  });

  const logLines = (): LogLine[] => {
    const output = stdout();
    return output
      .slice(0, output.lastIndexOf('\n') + 1)
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        try {
          return JSON.parse(line) as LogLine;
        } catch {
          return { unparsed: line };
        }
      });
  };

  const server: ServerProcess = {
    child,
    port,
    baseUrl,
    exited,
    exitResult,
    stdout,
    stderr,
    logLines,
    async waitForLogLine(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = logLines().find(predicate);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no such log line in:\n${stdout()}`);
        await sleep(50);
      }
    },
    async kill() {
      if (exitResult() === undefined) {
        child.kill('SIGKILL');
        await exited;
      }
    },
    async stop(graceMs = STOP_GRACE_MS) {
      if (exitResult() !== undefined) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };

  const deadline = Date.now() + (options.startupLimitMs ?? STARTUP_LIMIT_MS);
  for (;;) {
    const exit = exitResult();
    if (exit) throw new Error(`server exited early (${exit.code}): ${stderr()}${stdout()}`);
    try {
      const response = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(5_000) });
      if (response.ok) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(`server not healthy in time: ${stderr()}${stdout()}`);
    }
    await sleep(250);
  }
}

export interface ServerDatabase {
  /** For startServer's env: DATABASE_URL of the fresh database, or nothing (PGlite in memory). */
  env: Record<string, string>;
  drop(): Promise<void>;
}

/** A fresh database for one server: a new PostgreSQL database when DATABASE_URL is set, else PGlite in memory. */
export async function serverDatabase(): Promise<ServerDatabase> {
  if (!ADMIN_DATABASE_URL) return { env: {}, drop: async () => undefined };
  const database = await createPostgresDatabase(ADMIN_DATABASE_URL);
  return { env: { DATABASE_URL: database.url }, drop: database.drop };
}
