/**
 * Bad configuration stops the real process with exit code 1 and one line on stderr that
 * names the variable (SPEC §2), never a stack trace.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { TEST_SECRET } from '../helpers.js';
import { freePort, killLeftovers, type RunResult, runProgram } from '../process.js';

afterAll(killLeftovers);

/** Runs the server with only PATH, HOME, an in-memory PGlite and `env`; resolves when it exits. */
const runServer = (env: Record<string, string>) =>
  runProgram('server', [], { PGLITE_DIR: 'memory://', HOST: '127.0.0.1', ...env });

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
    // Free a moment ago: nothing listens there.
    const port = await freePort();
    const result = await runServer({
      DATABASE_URL: `postgres://todo:e2e-db-password@127.0.0.1:${port}/todo`,
      BETTER_AUTH_SECRET: TEST_SECRET,
      PORT: '0',
    });
    expectOneLineNaming(result, 'DATABASE_URL');
    expect(result.stderr + result.stdout).not.toContain('e2e-db-password');
  }, 60_000);
});
