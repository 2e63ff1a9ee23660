/**
 * What the process loads is memory it keeps for its whole life (README, "Memory per process"):
 * a library only some deployments need is loaded only when the configuration asks for it.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { killLeftovers, type ServerProcess, startServer } from '../process.js';

afterAll(killLeftovers);

const REPORTER = fileURLToPath(new URL('../fixtures/report-loaded-packages.mjs', import.meta.url));

/** The npm packages a server started with `env` had loaded when it stopped. */
async function packagesLoadedBy(env: Record<string, string>): Promise<string[]> {
  let server: ServerProcess | undefined;
  try {
    server = await startServer({
      env: { ...env, NODE_OPTIONS: `--import ${JSON.stringify(REPORTER)}` },
    });
    // One request too, so that a library loaded on first use would be caught.
    const response = await fetch(`${server.baseUrl}/api/tasks`);
    expect(response.status).toBe(401);
  } finally {
    await server?.stop();
  }
  const line = server.stderr().match(/^loaded-packages: (.*)$/m);
  if (line?.[1] === undefined) throw new Error(`no report on stderr: ${server.stderr()}`);
  const packages: unknown = JSON.parse(line[1]);
  if (!Array.isArray(packages)) throw new Error(`not a list: ${line[1]}`);
  return packages.map(String);
}

describe('libraries loaded only when configured', () => {
  /** What a server started with the defaults (PGlite, no Redis) loaded. */
  let byDefault: string[] = [];
  beforeAll(async () => {
    byDefault = await packagesLoadedBy({});
  }, 60_000);

  it('when REDIS_URL is unset, then the Redis client library is never loaded', () => {
    // The reporter works: the HTTP framework is there.
    expect(byDefault).toContain('fastify');
    expect(byDefault).not.toContain('ioredis');
  });

  it('when the service starts, then Better Auth is loaded without Kysely, which its Drizzle adapter does not use', () => {
    expect(byDefault).toContain('better-auth');
    expect(byDefault).toContain('@better-auth/drizzle-adapter');
    expect(byDefault).not.toContain('kysely');
  });

  it('when REDIS_URL is set, then the rate limits load the Redis client', async () => {
    const packages = await packagesLoadedBy({ REDIS_URL: 'redis://127.0.0.1:6379' });
    expect(packages).toContain('ioredis');
  }, 60_000);
});
