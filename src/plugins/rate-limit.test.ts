import { randomUUID } from 'node:crypto';
import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestDatabase,
  createUserAndToken,
  signToken,
  type TestDatabase,
  type TestUser,
  testConfig,
} from '../../test/helpers.js';
import { freePort } from '../../test/free-port.js';
import { buildApp } from '../app.js';
import { ConfigError, loadConfig } from '../config.js';

const USER_LIMIT = 5;
const IP_LIMIT = 4;
const AUTH_LIMIT = 3;
const REDIS_URL = 'redis://127.0.0.1:6379';

// One database for the file; every app on it is another instance of the service.
let database: TestDatabase;
const apps: FastifyInstance[] = [];
let app: FastifyInstance;

async function startApp(
  env: Record<string, string>,
  logStream?: { write(line: string): void },
): Promise<FastifyInstance> {
  const instance = await buildApp(testConfig(env), {
    database: database.handle,
    ...(logStream ? { logStream } : {}),
  });
  apps.push(instance);
  await instance.ready();
  return instance;
}

beforeAll(async () => {
  database = await createTestDatabase();
  app = await startApp({
    RATE_LIMIT_USER_PER_MINUTE: String(USER_LIMIT),
    RATE_LIMIT_IP_PER_MINUTE: String(IP_LIMIT),
    RATE_LIMIT_AUTH_PER_MINUTE: String(AUTH_LIMIT),
  });
});
afterAll(async () => {
  for (const instance of apps) await instance.close();
  await database?.drop();
});

let nextAddress = 1;
/** An address no other test uses, so per-IP budgets never collide. */
function uniqueIp(): string {
  const n = nextAddress++;
  return `10.${(process.pid >> 8) & 255}.${process.pid & 255}.${n}`;
}

function listTasks(
  app: FastifyInstance,
  user: TestUser,
  options: Partial<InjectOptions> = {},
): Promise<LightMyRequestResponse> {
  return app.inject({ url: '/api/tasks', headers: user.headers, ...options });
}

async function badTokenRequest(app: FastifyInstance, remoteAddress: string) {
  const forged = await signToken(`user_${randomUUID()}`, { secret: 'not-the-secret-0123456789' });
  return app.inject({
    url: '/api/tasks',
    headers: { authorization: `Bearer ${forged}` },
    remoteAddress,
  });
}

/** Sends `count` requests one after another and returns their statuses. */
async function statuses(count: number, send: () => Promise<LightMyRequestResponse>) {
  const result: number[] = [];
  for (let i = 0; i < count; i++) result.push((await send()).statusCode);
  return result;
}

function expectTooManyRequests(response: LightMyRequestResponse, limit: number) {
  expect(response.statusCode).toBe(429);
  const retryAfter = Number(response.headers['retry-after']);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
  expect(response.headers['x-ratelimit-limit']).toBe(String(limit));
  expect(response.headers['x-ratelimit-remaining']).toBe('0');
  expect(response.headers['x-ratelimit-reset']).toBe(String(retryAfter));
  expect(response.json<{ detail: string }>().detail).toMatch(/^Too many requests: /);
}

describe('per-user limit on the tasks API', () => {
  it('when a user sends more requests than RATE_LIMIT_USER_PER_MINUTE, then the next is 429 with Retry-After, x-ratelimit headers and a detail', async () => {
    const user = await createUserAndToken();
    const remaining: string[] = [];
    for (let i = 0; i < USER_LIMIT; i++) {
      const response = await listTasks(app, user);
      expect(response.statusCode).toBe(200);
      expect(response.headers['x-ratelimit-limit']).toBe(String(USER_LIMIT));
      remaining.push(String(response.headers['x-ratelimit-remaining']));
    }
    expect(remaining).toEqual(['4', '3', '2', '1', '0']);
    expectTooManyRequests(await listTasks(app, user), USER_LIMIT);
  });

  it('when a user is over the limit, then another user from the same address is still served', async () => {
    const greedy = await createUserAndToken();
    const other = await createUserAndToken();
    await statuses(USER_LIMIT + 1, () => listTasks(app, greedy));
    expect((await listTasks(app, greedy)).statusCode).toBe(429);
    expect((await listTasks(app, other)).statusCode).toBe(200);
  });

  it('when a user spreads requests over both route shapes and all methods, then they share one budget', async () => {
    const user = await createUserAndToken();
    const created = await app.inject({
      method: 'POST',
      url: `/api/${user.id}/tasks`,
      headers: user.headers,
      payload: { title: 'counted' },
    });
    expect(created.statusCode).toBe(201);
    const id = created.json<{ id: number }>().id;
    await statuses(USER_LIMIT - 2, () => listTasks(app, user));
    const last = await app.inject({
      method: 'PATCH',
      url: `/api/tasks/${id}/complete`,
      headers: user.headers,
    });
    expect(last.statusCode).toBe(200);
    const refused = await app.inject({
      method: 'PUT',
      url: `/api/${user.id}/tasks/${id}`,
      headers: user.headers,
      payload: { title: 'not applied' },
    });
    expectTooManyRequests(refused, USER_LIMIT);
  });

  it('when an over-limit request carries an invalid body, then it is 429, not 422 (counted before the body is read)', async () => {
    const user = await createUserAndToken();
    await statuses(USER_LIMIT, () => listTasks(app, user));
    const response = await app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: { ...user.headers, 'content-type': 'application/json' },
      payload: '{"title": ',
    });
    expect(response.statusCode).toBe(429);
  });

  it('when a user with a valid token sends more requests than the IP limit from one address, then all are served', async () => {
    const user = await createUserAndToken();
    const remoteAddress = uniqueIp();
    const codes = await statuses(USER_LIMIT, () => listTasks(app, user, { remoteAddress }));
    expect(codes).toEqual(Array(USER_LIMIT).fill(200));
  });
});

describe('per-IP limit on requests no valid token vouches for', () => {
  it('when tokens that do not verify exceed RATE_LIMIT_IP_PER_MINUTE from one address, then the next guess is 429, not 401', async () => {
    const remoteAddress = uniqueIp();
    const codes = await statuses(IP_LIMIT, () => badTokenRequest(app, remoteAddress));
    expect(codes).toEqual(Array(IP_LIMIT).fill(401));
    expectTooManyRequests(await badTokenRequest(app, remoteAddress), IP_LIMIT);
  });

  it('when an address has used its budget on refused tokens, then even a valid token from it is 429 (a right guess is not let through)', async () => {
    const remoteAddress = uniqueIp();
    await statuses(IP_LIMIT, () => badTokenRequest(app, remoteAddress));
    const user = await createUserAndToken();
    const response = await listTasks(app, user, { remoteAddress });
    expect(response.statusCode).toBe(429);
  });

  it('when requests without any Authorization header exceed the limit, then they meet 429', async () => {
    const remoteAddress = uniqueIp();
    const codes = await statuses(IP_LIMIT + 1, () =>
      app.inject({ url: '/api/tasks', remoteAddress }),
    );
    expect(codes).toEqual([...Array(IP_LIMIT).fill(401), 429]);
  });

  it("when a user keeps asking for another user's path (403), then the address meets 429", async () => {
    const prober = await createUserAndToken();
    const victim = await createUserAndToken();
    const remoteAddress = uniqueIp();
    const codes = await statuses(IP_LIMIT + 1, () =>
      app.inject({ url: `/api/${victim.id}/tasks`, headers: prober.headers, remoteAddress }),
    );
    expect(codes).toEqual([...Array(IP_LIMIT).fill(403), 429]);
  });

  it('when one address is limited, then another address is still answered', async () => {
    const blocked = uniqueIp();
    await statuses(IP_LIMIT + 1, () => badTokenRequest(app, blocked));
    expect((await badTokenRequest(app, uniqueIp())).statusCode).toBe(401);
  });

  it('when unauthenticated requests to other routes exceed the limit, then the next is 429 with Retry-After', async () => {
    const remoteAddress = uniqueIp();
    const codes = await statuses(IP_LIMIT, () =>
      app.inject({ url: `/no/such/route/${randomUUID()}`, remoteAddress }),
    );
    expect(codes).toEqual(Array(IP_LIMIT).fill(404));
    expectTooManyRequests(await app.inject({ url: '/openapi.json', remoteAddress }), IP_LIMIT);
  });

  it('when an address is limited, then /health and /ready still answer 200', async () => {
    const remoteAddress = uniqueIp();
    await statuses(IP_LIMIT + 1, () => app.inject({ url: '/nowhere', remoteAddress }));
    const codes = await statuses(IP_LIMIT + 2, () => app.inject({ url: '/health', remoteAddress }));
    expect(codes).toEqual(Array(IP_LIMIT + 2).fill(200));
    expect((await app.inject({ url: '/ready', remoteAddress })).statusCode).toBe(200);
  });
});

describe('stricter per-IP limit on sign-in and sign-up', () => {
  function signIn(remoteAddress: string, url = '/api/auth/sign-in/email') {
    return app.inject({
      method: 'POST',
      url,
      remoteAddress,
      headers: { origin: 'http://localhost:3000' },
      payload: { email: `nobody-${randomUUID()}@example.com`, password: 'wrong-password-1' },
    });
  }

  it('when sign-in attempts from one address exceed RATE_LIMIT_AUTH_PER_MINUTE, then the next is 429', async () => {
    const remoteAddress = uniqueIp();
    const codes = await statuses(AUTH_LIMIT, () => signIn(remoteAddress));
    expect(codes).not.toContain(429);
    expectTooManyRequests(await signIn(remoteAddress), AUTH_LIMIT);
  });

  it('when sign-up and sign-in attempts are mixed, then they share the one budget', async () => {
    const remoteAddress = uniqueIp();
    await signIn(remoteAddress);
    await signIn(remoteAddress, '/api/auth/sign-up/email');
    await signIn(remoteAddress);
    const response = await signIn(remoteAddress, '/api/auth/sign-up/email');
    expect(response.statusCode).toBe(429);
  });

  it('when the sign-in path is disguised by case, doubled slashes or percent-encoding, then it still counts', async () => {
    const remoteAddress = uniqueIp();
    await signIn(remoteAddress, '/api/auth/SIGN-IN/email');
    await signIn(remoteAddress, '/api/auth//sign-in/email');
    await signIn(remoteAddress, '/api/auth/sign%2Din/email');
    expect((await signIn(remoteAddress)).statusCode).toBe(429);
  });

  it('when other /api/auth routes are used past the sign-in limit, then they are not refused by it', async () => {
    const remoteAddress = uniqueIp();
    const codes = await statuses(AUTH_LIMIT + 1, () =>
      app.inject({ url: '/api/auth/get-session', remoteAddress }),
    );
    expect(codes).not.toContain(429);
  });
});

describe('configuration', () => {
  it('when a limit is 0, then that limit is off (not a limit of zero requests)', async () => {
    const unlimited = await startApp({
      RATE_LIMIT_USER_PER_MINUTE: '0',
      RATE_LIMIT_IP_PER_MINUTE: '0',
    });
    const user = await createUserAndToken();
    const served = await statuses(12, () => listTasks(unlimited, user));
    expect(served).toEqual(Array(12).fill(200));
    const remoteAddress = uniqueIp();
    const refused = await statuses(12, () => badTokenRequest(unlimited, remoteAddress));
    expect(refused).toEqual(Array(12).fill(401));
  });

  it('when a limit is not a whole number, then loading the config fails with one line naming it', () => {
    for (const [variable, value] of [
      ['RATE_LIMIT_USER_PER_MINUTE', '-1'],
      ['RATE_LIMIT_IP_PER_MINUTE', 'ten'],
      ['RATE_LIMIT_AUTH_PER_MINUTE', '2.5'],
    ] as const) {
      const load = () => testConfig({ [variable]: value });
      expect(load).toThrow(ConfigError);
      expect(load).toThrow(`Invalid ${variable}: must be a whole number (0 disables)`);
    }
  });

  it('when nothing is set, then the limits are 1200 per user, 600 per IP and 20 for sign-in per minute', () => {
    const config = loadConfig({ NODE_ENV: 'test', BETTER_AUTH_SECRET: 'x'.repeat(40) });
    expect(config.rateLimit).toMatchObject({
      userPerMinute: 1200,
      ipPerMinute: 600,
      authPerMinute: 20,
    });
  });
});

describe('with REDIS_URL, instances share one budget', () => {
  const instances: FastifyInstance[] = [];
  beforeAll(async () => {
    // A namespace of its own: no other test (or run) shares these counters.
    const env = {
      REDIS_URL,
      RATE_LIMIT_NAMESPACE: `test:${randomUUID()}:`,
      RATE_LIMIT_USER_PER_MINUTE: '4',
      RATE_LIMIT_IP_PER_MINUTE: '4',
    };
    instances.push(await startApp(env), await startApp(env));
  });

  function instance(index: number): FastifyInstance {
    const found = instances[index];
    if (found === undefined) throw new Error(`no instance ${index}`);
    return found;
  }

  it("when a user's requests alternate between two instances, then the fifth is 429 on either", async () => {
    const user = await createUserAndToken();
    const codes: number[] = [];
    for (let i = 0; i < 4; i++) codes.push((await listTasks(instance(i % 2), user)).statusCode);
    expect(codes).toEqual([200, 200, 200, 200]);
    expectTooManyRequests(await listTasks(instance(0), user), 4);
    expectTooManyRequests(await listTasks(instance(1), user), 4);
  });

  it('when bad tokens from one address alternate between two instances, then the address budget is shared', async () => {
    const remoteAddress = uniqueIp();
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) {
      codes.push((await badTokenRequest(instance(i % 2), remoteAddress)).statusCode);
    }
    expect(codes).toEqual([401, 401, 401, 401, 429]);
  });
});

describe('when Redis cannot be reached', () => {
  it('when REDIS_URL points at a port where nothing listens, then requests are served without limits and the outage is logged once', async () => {
    const closedPort = await freePort();

    const lines: Record<string, unknown>[] = [];
    const isolated = await startApp(
      {
        REDIS_URL: `redis://127.0.0.1:${closedPort}`,
        RATE_LIMIT_USER_PER_MINUTE: '2',
        LOG_LEVEL: 'info',
      },
      { write: (line) => lines.push(JSON.parse(line) as Record<string, unknown>) },
    );
    const user = await createUserAndToken();
    const codes = await statuses(6, () => listTasks(isolated, user));
    expect(codes).toEqual([200, 200, 200, 200, 200, 200]);
    const outage = lines.filter((line) => line.event === 'rate_limit_store');
    expect(outage).toHaveLength(1);
    expect(outage[0]).toMatchObject({ up: false, level: 50 });

    const metrics = await isolated.inject({ url: '/metrics' });
    expect(metrics.body).toMatch(/^rate_limit_store_up 0$/m);
  });
});
