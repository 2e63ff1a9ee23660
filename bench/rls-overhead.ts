/**
 * What the second wall costs at the database: 2 000 list requests' worth of SQL for one user
 * through the tasks repository (one message: the role and app.user_id settings, the page,
 * the total) against the same statements sent bare as the connection user, and against the
 * three-round-trip transaction the service used before.
 *
 *   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres npx tsx bench/rls-overhead.ts
 *
 * It creates a scratch database on that server, migrates it, and drops it at the end.
 * Rounds alternate between the variants so that a noisy machine hurts them alike.
 */
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { desc, eq } from 'drizzle-orm';
import pg from 'pg';
import { createDatabase } from '../src/db/client.js';
import { task, user } from '../src/db/schema.js';
import { inlined, withUser } from '../src/db/with-user.js';
import { createTasksRepository } from '../src/tasks/tasks.repository.js';
import { LIST_CAP } from '../src/tasks/tasks.schemas.js';
import { median } from './report.js';

const QUERIES = 2_000;
const ROUNDS = 5;
const TASKS = 20;

const adminUrl = process.env.DATABASE_URL;
if (!adminUrl) {
  process.stderr.write(
    'Set DATABASE_URL to a PostgreSQL server this script may create a database on.\n',
  );
  process.exit(1);
}

const name = `todo_bench_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
const databaseUrl = new URL(adminUrl);
databaseUrl.pathname = `/${name}`;

async function admin(statement: string) {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

await admin(`create database "${name}"`);
const handle = createDatabase(
  { kind: 'postgres', url: databaseUrl.toString(), poolMax: 1 },
  () => undefined,
);
try {
  await handle.migrate();
  const { db } = handle;
  const userId = `bench_${randomUUID()}`;
  await db.insert(user).values({ id: userId, name: 'bench' });
  await db
    .insert(task)
    .values(Array.from({ length: TASKS }, (_, i) => ({ userId, title: `Task ${i}` })));

  const repository = createTasksRepository(handle);
  const query = { status: 'all', sort: 'created', offset: 0 } as const;
  const statements = repository.listStatements(userId, query);
  const variants: Record<string, () => Promise<unknown>> = {
    // The service's path: one message with the role and user settings and the page (the
    // total is known from a page that ends before the cap).
    'as the user (RLS)': () => repository.list(userId, query),
    // The same statement as the (superuser) connection user: no RLS.
    'bare query': () => handle.runScript(inlined(statements.page)),
    // What the service did before: BEGIN and the settings, the page, COMMIT (three round trips).
    'transaction (old)': () =>
      withUser(db, userId, (tx) =>
        tx
          .select()
          .from(task)
          .where(eq(task.userId, userId))
          .orderBy(desc(task.createdAt), desc(task.id))
          .limit(LIST_CAP)
          .offset(0),
      ),
  };

  const timings = new Map<string, number[]>(Object.keys(variants).map((key) => [key, []]));
  for (const run of Object.values(variants)) for (let i = 0; i < 200; i++) await run(); // warm-up
  for (let round = 0; round < ROUNDS; round++) {
    for (const [label, run] of Object.entries(variants)) {
      const started = performance.now();
      for (let i = 0; i < QUERIES; i++) await run();
      timings.get(label)?.push(performance.now() - started);
    }
  }

  const bare = median(timings.get('bare query') ?? []) ?? Number.NaN;
  process.stdout.write(
    `${QUERIES} list queries (${TASKS} tasks each), one connection, median of ${ROUNDS} rounds\n`,
  );
  for (const [label, values] of timings) {
    const total = median(values) ?? Number.NaN;
    process.stdout.write(
      `${label.padEnd(18)} ${total.toFixed(0).padStart(6)} ms  ${((total / QUERIES) * 1000).toFixed(0).padStart(5)} µs/query  ×${(total / bare).toFixed(2)}\n`,
    );
  }
} finally {
  await handle.close();
  await admin(`drop database if exists "${name}" with (force)`);
}
