/**
 * Bad configuration stops the real process with exit code 1 and one line on stderr that
 * names the variable (SPEC §2), never a stack trace.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { TEST_SECRET } from '../helpers.js';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const RUN_LIMIT_MS = 50_000;

const running = new Set<ChildProcess>();
afterAll(() => {
  for (const child of running) child.kill('SIGKILL');
});

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the server with only PATH, HOME, an in-memory PGlite and `env`; resolves when it exits. */
async function runServer(env: Record<string, string>): Promise<RunResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      PGLITE_DIR: 'memory://',
      HOST: '127.0.0.1',
      ...env,
    },
  });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    stdout += chunk;
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_LIMIT_MS);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  running.delete(child);
  return { code, signal, stdout, stderr };
}

async function closedPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  return address.port;
}

function expectOneLineNaming(result: RunResult, variable: string) {
  expect(result.code, `signal ${result.signal}: ${result.stderr}`).toBe(1);
  const lines = result.stderr.split('\n').filter((line) => line.trim() !== '');
  expect(lines, result.stderr).toHaveLength(1);
  expect(lines[0]).toContain(variable);
  expect(result.stderr + result.stdout).not.toContain('    at ');
}

describe('start-up with bad configuration', () => {
  it('when PORT is not a number, then the process exits 1 with one stderr line naming PORT', async () => {
    const result = await runServer({ PORT: 'abc', BETTER_AUTH_SECRET: TEST_SECRET });
    expectOneLineNaming(result, 'PORT');
  }, 60_000);

  it('when NODE_ENV=production has no BETTER_AUTH_SECRET, then the process exits 1 with one stderr line naming it', async () => {
    const result = await runServer({ NODE_ENV: 'production', PORT: '0' });
    expectOneLineNaming(result, 'BETTER_AUTH_SECRET');
  }, 60_000);

  it('when DATABASE_URL points at a closed port, then the process exits 1 with one stderr line naming DATABASE_URL', async () => {
    const port = await closedPort();
    const result = await runServer({
      DATABASE_URL: `postgres://todo:e2e-db-password@127.0.0.1:${port}/todo`,
      BETTER_AUTH_SECRET: TEST_SECRET,
      PORT: '0',
    });
    expectOneLineNaming(result, 'DATABASE_URL');
    expect(result.stderr + result.stdout).not.toContain('e2e-db-password');
  }, 60_000);
});
