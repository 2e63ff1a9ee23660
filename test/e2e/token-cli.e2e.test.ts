/** `npm run token -- <user-id>`: the development token minter, run as a real process. */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CLI_SECRET = 'token-cli-e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz';
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

async function runTokenCli(args: string[]): Promise<RunResult> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/token.ts', ...args], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      BETTER_AUTH_SECRET: CLI_SECRET,
      PGLITE_DIR: 'memory://',
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

describe('token CLI', () => {
  it('when given a user id, then it prints one HS256 JWT for that subject, valid for an hour', async () => {
    const before = Math.floor(Date.now() / 1000);
    const result = await runTokenCli(['alice']);
    const after = Math.ceil(Date.now() / 1000);

    expect(result.code, result.stderr).toBe(0);
    const lines = result.stdout.split('\n').filter((line) => line.trim() !== '');
    expect(lines).toHaveLength(1);
    const token = lines[0] ?? '';

    const { payload, protectedHeader } = await jwtVerify(
      token,
      new TextEncoder().encode(CLI_SECRET),
      { algorithms: ['HS256'] },
    );
    expect(protectedHeader.alg).toBe('HS256');
    expect(payload.sub).toBe('alice');
    expect(payload.exp).toBeGreaterThanOrEqual(before + 3600);
    expect(payload.exp).toBeLessThanOrEqual(after + 3600);
  }, 60_000);

  it('when given an email and a name, then the token carries them as claims', async () => {
    const result = await runTokenCli(['bob', 'bob@example.com', 'Bob']);
    expect(result.code, result.stderr).toBe(0);
    const { payload } = await jwtVerify(
      result.stdout.trim(),
      new TextEncoder().encode(CLI_SECRET),
      { algorithms: ['HS256'] },
    );
    expect(payload).toMatchObject({ sub: 'bob', email: 'bob@example.com', name: 'Bob' });
  }, 60_000);

  it('when given no user id, then it exits non-zero with a usage line and prints no token', async () => {
    const result = await runTokenCli([]);
    expect(result.code).not.toBe(0);
    expect(result.code).not.toBeNull();
    expect(result.stderr).toMatch(/usage/i);
    expect(result.stdout.trim()).toBe('');
  }, 60_000);
});
