/**
 * Each pass of .ci/run must reach the database the way it says it does: the PgBouncer pass
 * proves something only if the suites' queries really go through the bouncer.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { BOUNCER_SERVER_CONNECTIONS } from './global-setup.js';
import {
  createTestDatabase,
  DATABASE_KIND,
  SUITE_POOL_SIZE,
  type TestDatabase,
} from './helpers.js';

let database: TestDatabase;

beforeAll(async () => {
  database = await createTestDatabase();
});

afterAll(async () => {
  await database?.drop();
});

/** The server processes that answered `count` queries sent at once, each holding its connection a while. */
async function backendsOfConcurrentQueries(count: number): Promise<Set<number>> {
  const answers = await Promise.all(
    Array.from({ length: count }, () =>
      database.handle.runScript('select pg_backend_pid() as pid, pg_sleep(0.3)'),
    ),
  );
  return new Set(answers.map(([rows]) => Number(rows?.[0]?.pid)));
}

describe('how this pass reaches the database', () => {
  it('when queries fill a suite’s pool, then they run on as many server processes as the pass allows', async () => {
    const bouncerPort = inject('pgbouncerPort');
    const backends = await backendsOfConcurrentQueries(SUITE_POOL_SIZE);
    expect([...backends].every(Number.isInteger)).toBe(true);

    if (DATABASE_KIND === 'pglite') {
      expect(bouncerPort).toBeNull();
      expect(database.handle.kind).toBe('pglite');
      expect(backends.size).toBe(1);
    } else if (bouncerPort === null) {
      expect(new URL(database.url ?? '').port).not.toBe('');
      expect(backends.size).toBe(SUITE_POOL_SIZE);
    } else {
      expect(new URL(database.url ?? '').port).toBe(String(bouncerPort));
      expect(backends.size).toBeLessThanOrEqual(BOUNCER_SERVER_CONNECTIONS);
    }
  });
});
