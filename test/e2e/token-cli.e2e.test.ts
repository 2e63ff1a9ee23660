/** `npm run token -- <user-id>`: the development token minter, run as a real process. */
import { jwtVerify } from 'jose';
import { afterAll, describe, expect, it } from 'vitest';
import { killLeftovers, runProgram } from '../process.js';

const CLI_SECRET = 'token-cli-e2e-secret-0123456789-abcdefghijklmnopqrstuvwxyz';

afterAll(killLeftovers);

const runTokenCli = (args: string[]) =>
  runProgram('token-cli', args, { BETTER_AUTH_SECRET: CLI_SECRET, PGLITE_DIR: 'memory://' });

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
