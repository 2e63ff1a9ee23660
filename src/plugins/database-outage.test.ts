import { createServer } from 'node:net';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAndToken, testConfig } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { createDatabase, type DatabaseHandle } from '../db/client.js';

/** A port that was free a moment ago: nothing listens there, so connections are refused. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  return address.port;
}

let app: FastifyInstance;
let database: DatabaseHandle;
beforeAll(async () => {
  const port = await freePort();
  database = createDatabase(
    { kind: 'postgres', url: `postgres://postgres@127.0.0.1:${port}/x`, poolMax: 2 },
    () => undefined,
  );
  // An injected database is not migrated, so the app starts without reaching it.
  app = await buildApp(testConfig(), { database });
  await app.ready();
});
afterAll(async () => {
  await app.close();
  await database.close();
});

const INTERNALS = /stack|at \/|ECONNREFUSED|127\.0\.0\.1|postgres|\bselect\b|\binsert\b/i;

function expectUnavailable(response: LightMyRequestResponse) {
  expect(response.statusCode).toBe(503);
  expect(response.headers['retry-after']).toMatch(/^\d+$/);
  expect(response.json()).toEqual({ detail: expect.any(String) });
  expect(response.body).not.toMatch(INTERNALS);
}

describe('database outage', () => {
  it('when the database cannot be reached, then listing tasks is 503 with Retry-After', async () => {
    const user = await createUserAndToken();
    expectUnavailable(await app.inject({ url: '/api/tasks', headers: user.headers }));
  });

  it('when the database cannot be reached, then listing on the user path is 503', async () => {
    const user = await createUserAndToken();
    expectUnavailable(await app.inject({ url: `/api/${user.id}/tasks`, headers: user.headers }));
  });

  it('when the database cannot be reached, then creating a task is 503 with Retry-After', async () => {
    const user = await createUserAndToken();
    const response = await app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: user.headers,
      payload: { title: 'Lost?' },
    });
    expectUnavailable(response);
  });

  it('when the database cannot be reached, then changing a task is 503, not 500', async () => {
    const user = await createUserAndToken();
    for (const request of [
      { method: 'PUT' as const, url: '/api/tasks/1', payload: { title: 'x' } },
      { method: 'PATCH' as const, url: '/api/tasks/1/complete' },
      { method: 'DELETE' as const, url: '/api/tasks/1' },
    ]) {
      expectUnavailable(await app.inject({ ...request, headers: user.headers }));
    }
  });

  it('when the same user calls again during the outage, then it is still 503', async () => {
    const user = await createUserAndToken();
    await app.inject({ url: '/api/tasks', headers: user.headers });
    expectUnavailable(await app.inject({ url: '/api/tasks', headers: user.headers }));
  });

  it('when the database cannot be reached, then /ready is 503', async () => {
    const response = await app.inject('/ready');
    expectUnavailable(response);
  });

  it('when the database cannot be reached, then /health is still 200', async () => {
    const response = await app.inject('/health');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: 'ok' });
  });

  it('when the database cannot be reached, then a request without a token is still 401', async () => {
    const response = await app.inject('/api/tasks');
    expect(response.statusCode).toBe(401);
  });

  it('when the database is down, then the 503 carries the security headers', async () => {
    const user = await createUserAndToken();
    const response = await app.inject({ url: '/api/tasks', headers: user.headers });
    expect(response.statusCode).toBe(503);
    expect(response.headers['x-content-type-options']).toBe('nosniff');
  });
});
