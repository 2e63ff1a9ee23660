import { once } from 'node:events';
import { createServer, type Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPostgresDatabase,
  createUserAndToken,
  POSTGRES_ADMIN_URL,
  testConfig,
} from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { createDatabase, type DatabaseHandle } from '../db/client.js';

/**
 * A pool whose every connection is busy is load, not an outage: the 503 and the log line say
 * so (database-outage.test.ts has the outage). On a real PostgreSQL in every CI pass, with a
 * pool of one connection that the test keeps busy with a query longer than the pool's wait
 * for a free connection (DATABASE_CONNECT_TIMEOUT_MS, here 1 s).
 */
const CONNECT_TIMEOUT_MS = 1_000;

let postgres: Awaited<ReturnType<typeof createPostgresDatabase>>;
let database: DatabaseHandle;
let app: FastifyInstance;
const logLines: string[] = [];

beforeAll(async () => {
  postgres = await createPostgresDatabase(POSTGRES_ADMIN_URL);
  database = createDatabase(
    {
      kind: 'postgres',
      url: postgres.directUrl,
      poolMax: 1,
      connectTimeoutMs: CONNECT_TIMEOUT_MS,
    },
    () => undefined,
  );
  await database.migrate();
  app = await buildApp(testConfig({ LOG_LEVEL: 'warn' }), {
    database,
    logStream: { write: (line) => logLines.push(line) },
  });
  await app.ready();
});
afterAll(async () => {
  await app.close();
  await database.close();
  await postgres.drop();
});

/** The messages of the log lines written since `from`. */
const messagesSince = (from: number) =>
  logLines.slice(from).map((line) => (JSON.parse(line) as { msg?: string }).msg);

describe('database busy', () => {
  it('when every pool connection stays in use past the wait, then the request is 503 "busy" with Retry-After, logged as load and not as an outage', async () => {
    const user = await createUserAndToken();
    expect(database.allConnectionsInUse()).toBe(false);
    let held = true;
    const holding = database.runScript('select pg_sleep(3)').finally(() => {
      held = false;
    });
    const from = logLines.length;
    const started = performance.now();

    const response = await app.inject({ method: 'GET', url: '/api/tasks', headers: user.headers });
    // Answered after the configured wait, while the connection was still taken.
    expect(performance.now() - started).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 50);
    expect(held).toBe(true);
    expect(database.allConnectionsInUse()).toBe(true);
    await holding;

    expect(response.statusCode).toBe(503);
    expect(response.headers['retry-after']).toBe('5');
    expect(response.json()).toEqual({
      detail: 'Service busy: every database connection is in use; retry shortly',
    });
    const messages = messagesSince(from);
    expect(messages).toContain('database busy: no pool connection came free in time');
    expect(messages).not.toContain('database unavailable');

    // Free again: the same request is answered.
    const after = await app.inject({ method: 'GET', url: '/api/tasks', headers: user.headers });
    expect(after.statusCode).toBe(200);
    expect(database.allConnectionsInUse()).toBe(false);
  }, 15_000);

  it('when the pool is full of connections still waiting for a silent server, then a request that waited is "cannot be reached", not busy', async () => {
    // Accepts TCP connections and never answers: a database that hangs on connect.
    const sockets: Socket[] = [];
    const silent = createServer((socket) => sockets.push(socket));
    silent.listen(0, '127.0.0.1');
    await once(silent, 'listening');
    const address = silent.address();
    if (address === null || typeof address === 'string') throw new Error('no port assigned');
    const hanging = createDatabase(
      {
        kind: 'postgres',
        url: `postgres://postgres@127.0.0.1:${address.port}/x`,
        poolMax: 1,
        connectTimeoutMs: CONNECT_TIMEOUT_MS,
      },
      () => undefined,
    );
    // An injected database is not migrated, so the app starts without reaching it.
    const outageApp = await buildApp(testConfig({ LOG_LEVEL: 'warn' }), {
      database: hanging,
      logStream: { write: (line) => logLines.push(line) },
    });
    try {
      await outageApp.ready();
      const user = await createUserAndToken();
      const from = logLines.length;
      const list = () =>
        outageApp.inject({ method: 'GET', url: '/api/tasks', headers: user.headers });
      // The first opens the pool's only connection; the second waits for it in the pool.
      const responses = await Promise.all([list(), list()]);

      for (const response of responses) {
        expect(response.statusCode).toBe(503);
        expect(response.json()).toEqual({
          detail: 'Service temporarily unavailable: the database cannot be reached',
        });
      }
      const messages = messagesSince(from);
      expect(messages).toEqual(['database unavailable', 'database unavailable']);
      // One timed out opening the connection, the other waiting in the pool for it: the case
      // allConnectionsInUse tells apart from load.
      const timeouts = logLines
        .slice(from)
        .map(
          (line) =>
            /timeout exceeded when trying to connect|due to connection timeout/.exec(line)?.[0],
        );
      expect(timeouts.sort()).toEqual([
        'due to connection timeout',
        'timeout exceeded when trying to connect',
      ]);
    } finally {
      await outageApp.close();
      await hanging.close();
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  }, 15_000);
});
