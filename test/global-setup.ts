/**
 * With TEST_VIA_PGBOUNCER=1 (and DATABASE_URL set), every suite reaches its databases through
 * one private PgBouncer in transaction pooling mode, as the service does behind Neon's pooled
 * endpoint: .ci/run runs the whole `npm test` that way as its third pass. Databases are still
 * created and dropped on the server directly (test/helpers.ts).
 */
import type { TestProject } from 'vitest/node';
import { startPgBouncer } from './pgbouncer.js';

/**
 * Server connections per test database: fewer than a suite's pool (SUITE_POOL_SIZE), so that requests of one
 * suite share server connections and anything that leans on session state breaks.
 */
export const BOUNCER_SERVER_CONNECTIONS = 3;

declare module 'vitest' {
  export interface ProvidedContext {
    /** The port of the run's PgBouncer on 127.0.0.1, or null when suites connect directly. */
    pgbouncerPort: number | null;
  }
}

export default async function setup(project: TestProject) {
  if (process.env.TEST_VIA_PGBOUNCER !== '1') {
    project.provide('pgbouncerPort', null);
    return undefined;
  }
  const serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) throw new Error('TEST_VIA_PGBOUNCER=1 needs DATABASE_URL (the server behind it)');
  const bouncer = await startPgBouncer(serverUrl, BOUNCER_SERVER_CONNECTIONS);
  project.provide('pgbouncerPort', bouncer.port);
  return () => bouncer.stop();
}
