import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { createDatabase } from '../src/db/client.js';
import { SEED_STATEMENTS, WRITER_TASKS_QUERY } from './fixtures.js';

/** Where the service keeps its data for one run: a fresh database, removed by drop(). */
export interface BenchDatabase {
  kind: 'postgres' | 'pglite';
  /** DATABASE_URL for the service and the reference (postgres only). */
  url: string | undefined;
  /** PGLITE_DIR for the service (pglite only). */
  pgliteDir: string | undefined;
  drop(): Promise<void>;
}

async function adminQuery(adminUrl: string, statement: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return await client.query(statement);
  } finally {
    await client.end();
  }
}

export async function createBenchDatabase(
  kind: 'postgres' | 'pglite',
  adminUrl: string,
): Promise<BenchDatabase> {
  if (kind === 'pglite') {
    const dir = mkdtempSync(join(tmpdir(), 'todo-bench-pglite-'));
    return {
      kind,
      url: undefined,
      pgliteDir: dir,
      async drop() {
        rmSync(dir, { recursive: true, force: true });
      },
    };
  }
  const name = `todo_bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  await adminQuery(adminUrl, `create database "${name}"`);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    kind,
    url: url.toString(),
    pgliteDir: undefined,
    async drop() {
      await adminQuery(adminUrl, `drop database if exists "${name}" with (force)`);
    },
  };
}

export async function serverVersion(adminUrl: string): Promise<string> {
  const result = await adminQuery(adminUrl, 'show server_version');
  const row: unknown = result.rows[0];
  return typeof row === 'object' && row !== null
    ? String(Reflect.get(row, 'server_version'))
    : 'unknown';
}

/**
 * Migrates with the service's own migrations and seeds with set-based SQL (seconds, not
 * minutes). Returns the writers' seeded tasks, which the toggle requests flip.
 */
export async function migrateAndSeed(
  database: BenchDatabase,
): Promise<{ id: number; writer: number }[]> {
  const handle = createDatabase(
    database.kind === 'postgres'
      ? { kind: 'postgres', url: database.url ?? '', poolMax: 1 }
      : { kind: 'pglite', dir: database.pgliteDir ?? '' },
    () => undefined,
  );
  try {
    await handle.migrate();
    for (const statement of SEED_STATEMENTS) await handle.db.execute(sql.raw(statement));
    const result = await handle.db.execute(sql.raw(WRITER_TASKS_QUERY));
    const rows: unknown =
      typeof result === 'object' && result !== null && !Array.isArray(result)
        ? Reflect.get(result, 'rows')
        : result;
    if (!Array.isArray(rows)) throw new Error('seed: no rows from the writer task query');
    return rows.map((row: { id: unknown; writer: unknown }) => ({
      id: Number(row.id),
      writer: Number(row.writer),
    }));
  } finally {
    await handle.close();
  }
}
