import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { drizzle as drizzlePg } from 'drizzle-orm/node-postgres';
import { migrate as migratePg } from 'drizzle-orm/node-postgres/migrator';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ADMIN_DATABASE_URL, createPostgresDatabase } from '../../test/helpers.js';
import type { Database } from './client.js';
import { schema } from './schema.js';

/**
 * Migration 0003 adds the per-user task counters behind X-Total-Count. A database that
 * already has tasks when it is applied must get exact counters for them (the backfill), and
 * count every change after it (the triggers).
 */
const MIGRATIONS = fileURLToPath(new URL('../../drizzle', import.meta.url));

/** A copy of the migrations folder that stops before 0003: the database as it was. */
function migrationsBefore0003(): string {
  const dir = mkdtempSync(join(tmpdir(), 'todo-migrations-'));
  cpSync(MIGRATIONS, dir, { recursive: true });
  const journalFile = join(dir, 'meta', '_journal.json');
  const journal = JSON.parse(readFileSync(journalFile, 'utf8')) as {
    entries: { idx: number; tag: string }[];
  };
  journal.entries = journal.entries.filter((entry) => entry.idx < 3);
  writeFileSync(journalFile, JSON.stringify(journal));
  return dir;
}

let oldMigrations: string;
let db: Database;
let migrateTo: (folder: string) => Promise<void>;
let close: () => Promise<void>;

beforeAll(async () => {
  oldMigrations = migrationsBefore0003();
  if (ADMIN_DATABASE_URL) {
    const database = await createPostgresDatabase(ADMIN_DATABASE_URL);
    const pool = new pg.Pool({ connectionString: database.url, max: 2 });
    const pgDb = drizzlePg(pool, { schema });
    db = pgDb;
    migrateTo = (folder) => migratePg(pgDb, { migrationsFolder: folder });
    close = async () => {
      await pool.end();
      await database.drop();
    };
  } else {
    const client = new PGlite('memory://');
    const pgliteDb = drizzlePglite(client, { schema });
    db = pgliteDb;
    migrateTo = (folder) => migratePglite(pgliteDb, { migrationsFolder: folder });
    close = () => client.close();
  }
});
afterAll(async () => {
  await close();
  rmSync(oldMigrations, { recursive: true, force: true });
});

async function counters() {
  const result = await db.execute(
    sql`select user_id, total, completed from task_count order by user_id`,
  );
  // Both drivers answer an object with `rows`.
  const rows: unknown =
    typeof result === 'object' && result !== null ? Reflect.get(result, 'rows') : undefined;
  return rows;
}

describe('migration 0003 (task counters)', () => {
  it('when it is applied to a database with tasks, then every user gets exact counts, and later changes are counted', async () => {
    await migrateTo(oldMigrations);
    await db.execute(
      sql`insert into "user" (id, name) values ('ann', 'Ann'), ('bob', 'Bob'), ('cy', 'Cy')`,
    );
    await db.execute(sql`
      insert into task (user_id, title, completed)
      select case when g <= 7 then 'ann' else 'bob' end, 'Task ' || g, g % 2 = 0
      from generate_series(1, 10) as g`);

    await migrateTo(MIGRATIONS);
    // Cy has no task, so no counter row: the API reads a missing row as 0.
    expect(await counters()).toEqual([
      { user_id: 'ann', total: 7, completed: 3 },
      { user_id: 'bob', total: 3, completed: 2 },
    ]);

    await db.execute(
      sql`insert into task (user_id, title) values ('cy', 'first'), ('ann', 'more')`,
    );
    await db.execute(sql`update task set completed = not completed where user_id = 'bob'`);
    await db.execute(sql`delete from task where user_id = 'ann' and completed`);
    expect(await counters()).toEqual([
      { user_id: 'ann', total: 5, completed: 0 },
      { user_id: 'bob', total: 3, completed: 1 },
      { user_id: 'cy', total: 1, completed: 0 },
    ]);
  });
});
