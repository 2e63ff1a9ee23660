/**
 * Once per test run, before any suite:
 * - the service is compiled (test/service-build.ts) for the end-to-end tests to start;
 * - on PGlite (no DATABASE_URL), one migrated database is dumped to a file, and every suite's
 *   database starts from that dump (test/helpers.ts) instead of initialising a new cluster;
 * - with TEST_VIA_PGBOUNCER=1 (and DATABASE_URL set), every suite reaches its databases through
 *   one private PgBouncer in transaction pooling mode, as the service does behind Neon's pooled
 *   endpoint: .ci/run runs the whole `npm test` that way as its third pass. Databases are still
 *   created and dropped on the server directly (test/helpers.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import type { TestProject } from 'vitest/node';
import { createDatabase } from '../src/db/client.js';
import { startPgBouncer } from './pgbouncer.js';
import { compileService } from './service-build.js';

/**
 * Server connections per test database: fewer than a suite's pool (SUITE_POOL_SIZE), so that
 * requests of one suite share server connections and anything that leans on session state
 * breaks.
 */
export const BOUNCER_SERVER_CONNECTIONS = 3;

declare module 'vitest' {
  export interface ProvidedContext {
    /** The port of the run's PgBouncer on 127.0.0.1, or null when suites connect directly. */
    pgbouncerPort: number | null;
    /** A dump of a freshly migrated PGlite database, or null when suites use PostgreSQL. */
    pgliteSeedPath: string | null;
    /** The service compiled for this run (test/service-build.ts), started by test/process.ts. */
    serviceBuildDir: string;
  }
}

/**
 * Initialising a PGlite cluster takes 3–5 s on this machine kind, loading a dump of one about
 * 1.4 s: a database per suite, 20-odd suites, two workers. The dump is made through the
 * service's own migrate(), so every suite still starts from exactly what migrations produce.
 */
async function dumpMigratedPglite(): Promise<{ path: string; remove(): void }> {
  const handle = createDatabase({ kind: 'pglite', dir: 'memory://' }, () => undefined);
  try {
    await handle.migrate();
    const client: unknown = Reflect.get(handle.db, '$client');
    if (!(client instanceof PGlite)) throw new Error('the PGlite handle has no PGlite client');
    const dump = await client.dumpDataDir('none');
    const dir = mkdtempSync(join(tmpdir(), 'todo-pglite-seed-'));
    const path = join(dir, 'migrated.tar');
    writeFileSync(path, Buffer.from(await dump.arrayBuffer()));
    return { path, remove: () => rmSync(dir, { recursive: true, force: true }) };
  } finally {
    await handle.close();
  }
}

export default async function setup(project: TestProject) {
  const build = compileService();
  project.provide('serviceBuildDir', build.dir);
  try {
    const teardownDatabase = await setUpDatabases(project);
    return async () => {
      try {
        await teardownDatabase?.();
      } finally {
        build.remove();
      }
    };
  } catch (failure) {
    build.remove();
    throw failure;
  }
}

async function setUpDatabases(project: TestProject): Promise<(() => unknown) | undefined> {
  const serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    if (process.env.TEST_VIA_PGBOUNCER === '1') {
      throw new Error('TEST_VIA_PGBOUNCER=1 needs DATABASE_URL (the server behind it)');
    }
    const seed = await dumpMigratedPglite();
    project.provide('pgliteSeedPath', seed.path);
    project.provide('pgbouncerPort', null);
    return seed.remove;
  }
  project.provide('pgliteSeedPath', null);
  if (process.env.TEST_VIA_PGBOUNCER !== '1') {
    project.provide('pgbouncerPort', null);
    return undefined;
  }
  const bouncer = await startPgBouncer(serverUrl, BOUNCER_SERVER_CONNECTIONS);
  project.provide('pgbouncerPort', bouncer.port);
  return () => bouncer.stop();
}
