/**
 * PgBouncer in transaction pooling mode in front of the bench's PostgreSQL, as Neon's pooled
 * endpoint serves it (for `npm run bench -- --pgbouncer`). One implementation with the tests:
 * test/pgbouncer.ts, which imports nothing of the tests or the app.
 */
import { startPgBouncer as startTestPgBouncer } from '../test/pgbouncer.js';

export interface BenchPgBouncer {
  /** `databaseUrl` (a database on the server of `adminUrl`) reached through the bouncer. */
  urlFor(databaseUrl: string): string;
  /** Stops the bouncer and removes its files. */
  stop(): Promise<void>;
}

/**
 * Starts a private PgBouncer on a free port of 127.0.0.1 with at most `poolSize` server
 * connections per database and user; fails (never skips) when pgbouncer is not installed.
 */
export async function startPgBouncer(adminUrl: string, poolSize: number): Promise<BenchPgBouncer> {
  const bouncer = await startTestPgBouncer(adminUrl, poolSize);
  return { urlFor: (databaseUrl) => bouncer.urlFor(databaseUrl), stop: () => bouncer.stop() };
}
