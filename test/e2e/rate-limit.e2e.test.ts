/**
 * Two real server processes (the compiled service, started as `npm start` starts it) sharing one
 * Redis: instance A talks to Redis directly, instance B through a TCP proxy this test owns, so the
 * test can cut B's link to Redis (the real Redis keeps running) and bring it back.
 */

import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAndToken, type TestUser } from '../helpers.js';
import {
  type ServerDatabase,
  type ServerProcess,
  serverDatabase,
  sleep,
  startServer,
} from '../process.js';
import { CuttableProxy } from '../proxy.js';

const REDIS_PORT = 6379;
const USER_LIMIT = 4;
const STARTUP_LIMIT_MS = 90_000;
/** Generous bound on one request while Redis is away: it must not wait for Redis. */
const OUTAGE_ANSWER_BOUND_MS = 3_000;
/** How long the test waits for the limits to apply again once the link is back. */
const RECOVERY_BOUND_MS = 15_000;

function storeEvents(instance: ServerProcess) {
  return instance.logLines().filter((line) => line.event === 'rate_limit_store');
}

function startInstance(redisPort: number, env: Record<string, string>): Promise<ServerProcess> {
  return startServer({
    startupLimitMs: STARTUP_LIMIT_MS,
    env: { REDIS_URL: `redis://127.0.0.1:${redisPort}`, ...env },
  });
}

let link: CuttableProxy;
let direct: ServerProcess | undefined;
let proxied: ServerProcess | undefined;
let database: ServerDatabase | undefined;

function instances(): [ServerProcess, ServerProcess] {
  if (!direct || !proxied) throw new Error('instances not started');
  return [direct, proxied];
}

beforeAll(async () => {
  link = new CuttableProxy('127.0.0.1', REDIS_PORT);
  await link.open();
  // Both instances count in one namespace no other run uses.
  database = await serverDatabase();
  const env: Record<string, string> = {
    RATE_LIMIT_NAMESPACE: `test:e2e:${randomUUID()}:`,
    RATE_LIMIT_USER_PER_MINUTE: String(USER_LIMIT),
    ...database.env,
  };
  // One after the other: two PGlite start-ups at once can starve a 2-core machine.
  direct = await startInstance(REDIS_PORT, env); // A
  proxied = await startInstance(link.port, env); // B, through the proxy
}, 120_000);

afterAll(async () => {
  await Promise.all([direct?.stop(), proxied?.stop()]);
  await link?.cut();
  await database?.drop();
}, 60_000);

async function listTasks(instance: ServerProcess, user: TestUser) {
  const response = await fetch(`${instance.baseUrl}/api/tasks`, {
    headers: { authorization: `Bearer ${user.token}` },
  });
  await response.arrayBuffer();
  return response;
}

describe('two instances sharing Redis, over HTTP', () => {
  it("when a user's requests alternate between two server processes, then they share one budget and both answer 429 past it", async () => {
    const [a, b] = instances();
    const user = await createUserAndToken();
    const codes: number[] = [];
    for (let i = 0; i < USER_LIMIT; i++) {
      codes.push((await listTasks(i % 2 === 0 ? a : b, user)).status);
    }
    expect(codes).toEqual(Array(USER_LIMIT).fill(200));

    for (const instance of [a, b]) {
      const refused = await fetch(`${instance.baseUrl}/api/tasks`, {
        headers: { authorization: `Bearer ${user.token}` },
      });
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(refused.headers.get('x-ratelimit-limit')).toBe(String(USER_LIMIT));
      expect(await refused.json()).toEqual({
        detail: expect.stringMatching(/^Too many requests: /),
      });
    }
  }, 60_000);

  it('when the link to Redis is cut, then requests are served (fail open) and the outage is logged once; when it returns, limits apply again', async () => {
    const [a, b] = instances();
    const user = await createUserAndToken();
    // Use the whole budget through A, which keeps its own link to Redis.
    for (let i = 0; i < USER_LIMIT; i++) expect((await listTasks(a, user)).status).toBe(200);
    expect((await listTasks(b, user)).status).toBe(429);
    expect(storeEvents(b)).toEqual([]);

    await link.cut();
    const during: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      during.push((await listTasks(b, user)).status);
      expect(Date.now() - started).toBeLessThan(OUTAGE_ANSWER_BOUND_MS);
    }
    expect(during).toEqual([200, 200, 200, 200, 200]);
    // A still reaches Redis and still refuses the over-budget user.
    expect((await listTasks(a, user)).status).toBe(429);
    // Log lines are written asynchronously: wait for the line, then check it is the only one.
    await b.waitForLogLine((line) => line.event === 'rate_limit_store' && line.up === false);
    expect(storeEvents(b)).toEqual([expect.objectContaining({ up: false, level: 50 })]);

    await link.open();
    const deadline = Date.now() + RECOVERY_BOUND_MS;
    let status = 0;
    while (Date.now() < deadline) {
      status = (await listTasks(b, user)).status;
      if (status === 429) break;
      await sleep(200);
    }
    expect(status).toBe(429);
    await b.waitForLogLine((line) => line.event === 'rate_limit_store' && line.up === true);
    expect(storeEvents(b)).toEqual([
      expect.objectContaining({ up: false }),
      expect.objectContaining({ up: true }),
    ]);
  }, 60_000);
});
