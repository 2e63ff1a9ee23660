/**
 * The real server process for end-to-end tests: `node --import tsx src/server.ts` on a free
 * port, with only the environment a test gives it, and its JSON log lines at hand.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { TEST_SECRET } from './helpers.js';

export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** How long a server may take to answer /health: tsx, PGlite and migrations on a busy machine. */
const STARTUP_LIMIT_MS = 60_000;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A port that was free a moment ago (nothing listens there until someone takes it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  return address.port;
}

export interface ExitResult {
  code: number | null;
  signal: NodeJS.Signals | null;
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
}

export interface StartServerOptions {
  /** Environment on top of PATH, HOME, the test secret, LOG_LEVEL=info and PGLITE_DIR=memory://. */
  env?: Record<string, string>;
  /** Defaults to a free port. */
  port?: number;
}

/** Starts the server and resolves once GET /health answers 200; throws (and kills it) otherwise. */
export async function startServer(options: StartServerOptions = {}): Promise<ServerProcess> {
  const port = options.port ?? (await freePort());
  const baseUrl = `http://127.0.0.1:${port}`;
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      BETTER_AUTH_SECRET: TEST_SECRET,
      LOG_LEVEL: 'info',
      PGLITE_DIR: 'memory://',
      ...options.env,
      PORT: String(port),
      HOST: '127.0.0.1',
    },
  });
  let stdout = '';
  let stderr = '';
  let exit: ExitResult | undefined;
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<ExitResult>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      resolve(exit);
    });
  });

  const logLines = (): LogLine[] =>
    stdout
      .slice(0, stdout.lastIndexOf('\n') + 1)
      .split('\n')
      .filter((line) => line.trim() !== '')
      .map((line) => {
        try {
          return JSON.parse(line) as LogLine;
        } catch {
          return { unparsed: line };
        }
      });

  const server: ServerProcess = {
    child,
    port,
    baseUrl,
    exited,
    exitResult: () => exit,
    stdout: () => stdout,
    stderr: () => stderr,
    logLines,
    async waitForLogLine(predicate, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = logLines().find(predicate);
        if (found) return found;
        if (Date.now() > deadline) throw new Error(`no such log line in:\n${stdout}`);
        await sleep(50);
      }
    },
    async kill() {
      if (exit === undefined) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };

  const deadline = Date.now() + STARTUP_LIMIT_MS;
  for (;;) {
    if (exit) throw new Error(`server exited early (${exit.code}): ${stderr}${stdout}`);
    try {
      const response = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(5_000) });
      if (response.ok) return server;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(`server not healthy in time: ${stderr}${stdout}`);
    }
    await sleep(250);
  }
}
