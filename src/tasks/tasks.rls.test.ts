import { and, eq, type SQL, sql } from 'drizzle-orm';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTask,
  createTestDatabase,
  createUserAndToken,
  type TaskBody,
  type TestDatabase,
  type TestUser,
  testConfig,
} from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { createDatabase, type Database, type DatabaseHandle } from '../db/client.js';
import { sqlState } from '../db/errors.js';
import { idempotencyKey, task, user } from '../db/schema.js';
import { APP_ROLE, runAsUser, textLiteral, type Transaction, withUser } from '../db/with-user.js';

/**
 * Row-level security as the second wall: an app whose repository has lost its own
 * `user_id = $1` filter (the test-only seam) must still confine every route to the caller.
 */
let database: TestDatabase;
let db: Database;
let app: FastifyInstance;
const logLines: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase();
  db = database.handle.db;
  app = await buildApp(testConfig({ LOG_LEVEL: 'warn' }), {
    database: database.handle,
    tasksRepository: { unsafeOmitOwnerFilter: true },
    logStream: { write: (line) => logLines.push(line) },
  });
  // A write the policy refuses, reaching the app as any such bug would: the caller (user B)
  // inserts a task naming user A as its owner.
  app.post<{ Body: { owner: string } }>('/test/rls-denied-write', async (request) => {
    await app.authenticate(request);
    const caller = request.user?.id ?? '';
    await withUser(app.db, caller, (tx) =>
      tx.insert(task).values({ userId: request.body.owner, title: 'planted' }),
    );
    return { planted: true };
  });
  await app.ready();
});
afterAll(async () => {
  await app.close();
  await database.drop();
});

const NOT_FOUND = { detail: 'Task not found' };

type Shape = 'user path' | 'plain';
const SHAPES: Shape[] = ['user path', 'plain'];

const itemUrl = (shape: Shape, caller: TestUser, id: number) =>
  shape === 'user path' ? `/api/${caller.id}/tasks/${id}` : `/api/tasks/${id}`;
const listUrl = (shape: Shape, caller: TestUser) =>
  shape === 'user path' ? `/api/${caller.id}/tasks` : '/api/tasks';

async function readAsOwner(owner: TestUser, id: number) {
  const response = await app.inject({ url: `/api/tasks/${id}`, headers: owner.headers });
  expect(response.statusCode).toBe(200);
  return response.json<TaskBody>();
}

/** Two users, A with a task, B with a task of their own (so B's filters have rows to find). */
async function twoUsers() {
  const alice = await createUserAndToken();
  const bob = await createUserAndToken();
  const aliceTask = await createTask(app, alice, { title: 'Alice only', description: 'secret' });
  const bobTask = await createTask(app, bob, { title: 'Bob only' });
  return { alice, bob, aliceTask, bobTask };
}

const ITEM_ROUTES: { name: string; request: (url: string) => InjectOptions }[] = [
  { name: 'GET one', request: (url) => ({ method: 'GET', url }) },
  {
    name: 'PUT',
    request: (url) => ({
      method: 'PUT',
      url,
      payload: { title: 'hijacked', description: 'hijacked', completed: true },
    }),
  },
  { name: 'DELETE', request: (url) => ({ method: 'DELETE', url }) },
  {
    name: 'PATCH complete (toggle)',
    request: (url) => ({ method: 'PATCH', url: `${url}/complete` }),
  },
  {
    name: 'PATCH complete (set)',
    request: (url) => ({ method: 'PATCH', url: `${url}/complete`, payload: { completed: true } }),
  },
];

/** Rows of a raw query: node-postgres and PGlite both answer `{ rows }`. */
async function rowsOf(runner: Pick<Database, 'execute'>, query: SQL): Promise<unknown[]> {
  const result: unknown = await runner.execute(query);
  if (typeof result === 'object' && result !== null && 'rows' in result) {
    const { rows } = result;
    if (Array.isArray(rows)) return rows;
  }
  throw new Error('query answered without rows');
}

/** Like withUser, but app.user_id is left unset when `userId` is null. */
async function asAppRole(userId: string | null, fn: (tx: Transaction) => Promise<void>) {
  await db.transaction(async (tx) => {
    await tx.execute(sql`select set_config('role', ${APP_ROLE}, true)`);
    if (userId !== null) await tx.execute(sql`select set_config('app.user_id', ${userId}, true)`);
    await fn(tx);
  });
}

describe('with the application owner filter removed, row-level security alone', () => {
  for (const shape of SHAPES) {
    for (const route of ITEM_ROUTES) {
      it(`when user B calls ${route.name} (${shape}) on A's task, then it is 404 and A's task is unchanged`, async () => {
        const { alice, bob, aliceTask } = await twoUsers();
        const response = await app.inject({
          ...route.request(itemUrl(shape, bob, aliceTask.id)),
          headers: bob.headers,
        });
        expect(response.statusCode).toBe(404);
        expect(response.json()).toEqual(NOT_FOUND);
        expect(await readAsOwner(alice, aliceTask.id)).toEqual(aliceTask);
      });
    }

    it(`when user B lists (${shape}), then only B's tasks come back and the total counts only them`, async () => {
      const { bob, aliceTask, bobTask } = await twoUsers();
      const second = await createTask(app, bob, { title: 'Bob again' });
      for (const query of ['', '?status=pending', '?sort=title', '?status=all&sort=created']) {
        const response = await app.inject({
          url: `${listUrl(shape, bob)}${query}`,
          headers: bob.headers,
        });
        expect(response.statusCode).toBe(200);
        const ids = response.json<TaskBody[]>().map((t) => t.id);
        expect(ids).not.toContain(aliceTask.id);
        expect(ids.sort()).toEqual([bobTask.id, second.id].sort());
        expect(response.headers['x-total-count']).toBe('2');
      }
    });
  }

  it('when user B pages with limit=1, then the count query also sees only B (X-Total-Count 2)', async () => {
    const { bob, aliceTask } = await twoUsers();
    await createTask(app, bob, { title: 'Bob again' });
    const response = await app.inject({ url: '/api/tasks?limit=1', headers: bob.headers });
    expect(response.statusCode).toBe(200);
    expect(response.headers['x-total-count']).toBe('2');
    expect(response.json<TaskBody[]>().map((t) => t.id)).not.toContain(aliceTask.id);
  });

  it("when user B lists completed tasks, then A's completed task is not among them", async () => {
    const { alice, bob, aliceTask } = await twoUsers();
    await app.inject({
      method: 'PATCH',
      url: `/api/tasks/${aliceTask.id}/complete`,
      headers: alice.headers,
    });
    const response = await app.inject({ url: '/api/tasks?status=completed', headers: bob.headers });
    expect(response.json()).toEqual([]);
    expect(response.headers['x-total-count']).toBe('0');
  });

  it("when B has no tasks and lists, then A's tasks are not shown", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    await createTask(app, alice, { title: 'Alice only' });
    const response = await app.inject({ url: '/api/tasks', headers: bob.headers });
    expect(response.json()).toEqual([]);
  });

  it('when RLS is switched off as well, then B reads A’s task (so the 404s above are RLS’s doing)', async () => {
    const { bob, aliceTask } = await twoUsers();
    await db.execute(sql`alter table task disable row level security`);
    try {
      const response = await app.inject({
        url: `/api/tasks/${aliceTask.id}`,
        headers: bob.headers,
      });
      expect(response.statusCode).toBe(200);
      expect(response.json()).toEqual(aliceTask);
    } finally {
      await db.execute(sql`alter table task enable row level security`);
    }
    const again = await app.inject({ url: `/api/tasks/${aliceTask.id}`, headers: bob.headers });
    expect(again.statusCode).toBe(404);
  });
});

describe('the database role and policies', () => {
  it('when the role is inspected, then it cannot log in, is not superuser and cannot bypass RLS', async () => {
    const rows = await rowsOf(
      db,
      sql`select rolcanlogin, rolsuper, rolbypassrls from pg_roles where rolname = ${APP_ROLE}`,
    );
    expect(rows).toEqual([{ rolcanlogin: false, rolsuper: false, rolbypassrls: false }]);
  });

  it('when the tables are inspected, then task and idempotency_key have RLS enabled and forced', async () => {
    const rows = await rowsOf(
      db,
      sql`select relname, relrowsecurity, relforcerowsecurity from pg_class
          where relname in ('task', 'idempotency_key') and relkind = 'r' order by relname`,
    );
    expect(rows).toEqual([
      { relname: 'idempotency_key', relrowsecurity: true, relforcerowsecurity: true },
      { relname: 'task', relrowsecurity: true, relforcerowsecurity: true },
    ]);
  });

  it('when the role queries without app.user_id set, then it sees zero tasks', async () => {
    await twoUsers();
    const [all] = await db.select({ n: sql<number>`count(*)::int` }).from(task);
    expect(all?.n).toBeGreaterThan(0);

    await asAppRole(null, async (tx) => {
      const [seen] = await tx.select({ n: sql<number>`count(*)::int` }).from(task);
      expect(seen?.n).toBe(0);
      const keys = await tx.select().from(idempotencyKey);
      expect(keys).toEqual([]);
    });
  });

  it('when the role queries with app.user_id set to B, then it sees only B’s tasks', async () => {
    const { bob, bobTask } = await twoUsers();
    await asAppRole(bob.id, async (tx) => {
      const rows = await tx.select({ id: task.id, userId: task.userId }).from(task);
      expect(rows).toEqual([{ id: bobTask.id, userId: bob.id }]);
    });
  });

  it("when the role inserts a task with someone else's user_id, then PostgreSQL refuses it (42501)", async () => {
    const { alice, bob } = await twoUsers();
    const planted = withUser(db, bob.id, (tx) =>
      tx.insert(task).values({ userId: alice.id, title: 'planted' }).returning(),
    );
    const error = await planted.then(
      () => null,
      (caught: unknown) => caught,
    );
    expect(sqlState(error)).toBe('42501');
    const aliceRows = await db.select().from(task).where(eq(task.userId, alice.id));
    expect(aliceRows.map((row) => row.title)).toEqual(['Alice only']);
  });

  it('when the role moves its own task to another user, then PostgreSQL refuses it (42501)', async () => {
    const { alice, bob, bobTask } = await twoUsers();
    const moved = withUser(db, bob.id, (tx) =>
      tx.update(task).set({ userId: alice.id }).where(eq(task.id, bobTask.id)),
    );
    const error = await moved.then(
      () => null,
      (caught: unknown) => caught,
    );
    expect(sqlState(error)).toBe('42501');
    const [row] = await db.select().from(task).where(eq(task.id, bobTask.id));
    expect(row?.userId).toBe(bob.id);
  });

  it("when the role updates and deletes A's task without a filter as B, then nothing changes", async () => {
    const { alice, bob, aliceTask } = await twoUsers();
    const touched = await withUser(db, bob.id, async (tx) => {
      const updated = await tx
        .update(task)
        .set({ title: 'hijacked' })
        .where(eq(task.id, aliceTask.id))
        .returning();
      const deleted = await tx.delete(task).where(eq(task.id, aliceTask.id)).returning();
      return updated.length + deleted.length;
    });
    expect(touched).toBe(0);
    expect(await readAsOwner(alice, aliceTask.id)).toEqual(aliceTask);
  });

  it("when the role reads A's idempotency keys as B, then it sees none", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const response = await app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: { ...alice.headers, 'idempotency-key': 'alice-key' },
      payload: { title: 'Keyed' },
    });
    expect(response.statusCode).toBe(201);
    const [stored] = await db
      .select()
      .from(idempotencyKey)
      .where(and(eq(idempotencyKey.userId, alice.id), eq(idempotencyKey.key, 'alice-key')));
    expect(stored?.responseBody).toEqual(response.json());

    const seen = await withUser(db, bob.id, (tx) =>
      tx.select().from(idempotencyKey).where(eq(idempotencyKey.key, 'alice-key')),
    );
    expect(seen).toEqual([]);
  });

  it('when the user upsert runs as the role, then its grants suffice', async () => {
    const newcomer = await createUserAndToken();
    await withUser(db, newcomer.id, async (tx) => {
      for (let i = 0; i < 2; i++) {
        await tx
          .insert(user)
          .values({ id: newcomer.id, name: 'Newcomer', email: null })
          .onConflictDoNothing({ target: user.id });
      }
    });
    const rows = await db.select({ id: user.id }).from(user).where(eq(user.id, newcomer.id));
    expect(rows).toEqual([{ id: newcomer.id }]);
  });

  it('when a withUser transaction ends, then its connection is back to its own role and no user', async () => {
    // One connection, so the check runs where the transaction ran.
    const single = database.url
      ? createDatabase({ kind: 'postgres', url: database.url, poolMax: 1 }, () => undefined)
      : database.handle;
    try {
      const session = sql`select current_user as "user",
        coalesce(current_setting('app.user_id', true), '') as setting`;
      const before = await rowsOf(single.db, session);
      expect(before).not.toEqual([expect.objectContaining({ user: APP_ROLE })]);
      const inside = await withUser(single.db, 'someone', (tx) => rowsOf(tx, session));
      expect(inside).toEqual([{ user: APP_ROLE, setting: 'someone' }]);
      expect(await rowsOf(single.db, session)).toEqual(before);
    } finally {
      if (single !== database.handle) await single.close();
    }
  });
});

describe('one-message statements (runAsUser)', () => {
  /** One connection, so the checks run where the message ran. */
  async function withSingleConnection(check: (single: DatabaseHandle) => Promise<void>) {
    const single = database.url
      ? createDatabase({ kind: 'postgres', url: database.url, poolMax: 1 }, () => undefined)
      : database.handle;
    try {
      await check(single);
    } finally {
      if (single !== database.handle) await single.close();
    }
  }
  const session =
    "select current_user as user, coalesce(current_setting('app.user_id', true), '') as setting";

  it('when a runAsUser message ends, then its connection is back to its own role and no user', async () => {
    await withSingleConnection(async (single) => {
      const [before] = await single.runScript(session);
      expect(before).not.toEqual([expect.objectContaining({ user: APP_ROLE })]);
      const [inside] = await runAsUser(single, 'someone', [session]);
      expect(inside).toEqual([{ user: APP_ROLE, setting: 'someone' }]);
      expect((await single.runScript(session))[0]).toEqual(before);
    });
  });

  it('when a statement of the message fails, then nothing of it stays: no row, no role, no user', async () => {
    const { bob } = await twoUsers();
    await withSingleConnection(async (single) => {
      const [before] = await single.runScript(session);
      await expect(
        runAsUser(single, bob.id, [
          `insert into task (user_id, title) values (${textLiteral(bob.id)}, 'half done')`,
          'select 1 / 0',
        ]),
      ).rejects.toThrow(/division by zero/);
      expect((await single.runScript(session))[0]).toEqual(before);
    });
    const rows = await db.select().from(task).where(eq(task.userId, bob.id));
    expect(rows.map((row) => row.title)).not.toContain('half done');
  });

  it('when a value carries quotes, backslashes or a statement, then it stays one literal', async () => {
    const { bob } = await twoUsers();
    const hostile = `x'); delete from task; select ('\\' || E'\\'' --`;
    const [rows] = await runAsUser(database.handle, bob.id, [
      `insert into task (user_id, title) values (${textLiteral(bob.id)}, ${textLiteral(hostile)}) returning title`,
    ]);
    expect(rows).toEqual([{ title: hostile }]);
    expect(() => textLiteral('a\u0000b')).toThrow(/NUL/);
  });
});

describe('an RLS-denied write reaching the app', () => {
  it('when the database refuses a write with 42501, then the answer is 403 and a security event is logged', async () => {
    const { alice, bob } = await twoUsers();
    logLines.length = 0;
    const response = await app.inject({
      method: 'POST',
      url: '/test/rls-denied-write',
      headers: bob.headers,
      payload: { owner: alice.id },
    });
    expect(response.statusCode).toBe(403);
    expect(response.json()).toEqual({ detail: 'Forbidden' });
    expect(response.body).not.toMatch(/row-level|policy|task|42501/i);

    const events = logLines
      .map((line) => JSON.parse(line) as Record<string, unknown>)
      .filter((entry) => entry.event === 'security');
    expect(events).toContainEqual(
      expect.objectContaining({ reason: 'rls_denied', status: 403, userId: bob.id }),
    );
    const aliceRows = await db.select().from(task).where(eq(task.userId, alice.id));
    expect(aliceRows.map((row) => row.title)).toEqual(['Alice only']);
  });
});
