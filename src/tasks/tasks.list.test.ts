import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTask,
  createUserAndToken,
  startTestApp,
  type TaskBody,
  type TestContext,
  type TestUser,
} from '../../test/helpers.js';
import { eq } from 'drizzle-orm';
import type { DatabaseHandle } from '../db/client.js';
import { task as taskTable, taskCount, user as userTable } from '../db/schema.js';
import { createTasksRepository } from './tasks.repository.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

async function list(user: TestUser, query = '') {
  return ctx.app.inject({ url: `/api/tasks${query}`, headers: user.headers });
}

async function listTasks(user: TestUser, query = '') {
  const response = await list(user, query);
  expect(response.statusCode).toBe(200);
  return response.json<TaskBody[]>();
}

async function createTitled(user: TestUser, titles: string[]): Promise<TaskBody[]> {
  const created: TaskBody[] = [];
  // One after another, so ids and created_at follow the order given.
  for (const title of titles) created.push(await createTask(ctx.app, user, { title }));
  return created;
}

async function complete(user: TestUser, task: TaskBody) {
  const response = await ctx.app.inject({
    method: 'PATCH',
    url: `/api/tasks/${task.id}/complete`,
    headers: user.headers,
    payload: { completed: true },
  });
  expect(response.statusCode).toBe(200);
}

/** A user with two pending and three completed tasks. */
async function userWithMixedTasks() {
  const user = await createUserAndToken();
  const tasks = await createTitled(user, ['p1', 'c1', 'p2', 'c2', 'c3']);
  for (const task of tasks.filter((t) => t.title.startsWith('c'))) await complete(user, task);
  return user;
}

const titles = (tasks: TaskBody[]) => tasks.map((task) => task.title);

describe('list: status filter', () => {
  it('when status is omitted or all, then every task of the user is listed', async () => {
    const user = await userWithMixedTasks();
    expect(await listTasks(user)).toHaveLength(5);
    expect(await listTasks(user, '?status=all')).toHaveLength(5);
  });

  it('when status is pending, then only tasks not completed are listed', async () => {
    const user = await userWithMixedTasks();
    const tasks = await listTasks(user, '?status=pending');
    expect(titles(tasks).sort()).toEqual(['p1', 'p2']);
    expect(tasks.every((task) => !task.completed)).toBe(true);
  });

  it('when status is completed, then only completed tasks are listed', async () => {
    const user = await userWithMixedTasks();
    const tasks = await listTasks(user, '?status=completed');
    expect(titles(tasks).sort()).toEqual(['c1', 'c2', 'c3']);
    expect(tasks.every((task) => task.completed)).toBe(true);
  });

  it('when status is invalid, then it is 422 at loc query.status', async () => {
    const user = await createUserAndToken();
    const response = await list(user, '?status=done');
    expect(response.statusCode).toBe(422);
    expect(response.json()).toMatchObject({ detail: [{ loc: ['query', 'status'] }] });
  });
});

describe('list: sort', () => {
  it('when sort is omitted or created, then the newest task comes first', async () => {
    const user = await createUserAndToken();
    const created = await createTitled(user, ['first', 'second', 'third', 'fourth']);
    const newestFirst = created.map((task) => task.id).reverse();
    expect((await listTasks(user)).map((task) => task.id)).toEqual(newestFirst);
    expect((await listTasks(user, '?sort=created')).map((task) => task.id)).toEqual(newestFirst);
  });

  it('when tasks share created_at, then the higher id comes first', async () => {
    const user = await createUserAndToken();
    await listTasks(user); // the first request creates the user row
    const at = new Date('2024-05-01T12:00:00.000Z');
    const rows = await ctx.database.handle.db
      .insert(taskTable)
      .values(['x', 'y', 'z'].map((title) => ({ userId: user.id, title, createdAt: at })))
      .returning({ id: taskTable.id });
    const later = await createTask(ctx.app, user, { title: 'later' });
    const expected = [later.id, ...rows.map((row) => row.id).sort((a, b) => b - a)];
    expect((await listTasks(user, '?sort=created')).map((task) => task.id)).toEqual(expected);
  });

  it('when sort is title, then titles are A→Z ignoring case with ties by id ascending', async () => {
    const user = await createUserAndToken();
    const [banana, upperApple, cherry, lowerApple] = await createTitled(user, [
      'banana',
      'Apple',
      'cherry',
      'apple',
    ]);
    const ids = (await listTasks(user, '?sort=title')).map((task) => task.id);
    expect(ids).toEqual([upperApple?.id, lowerApple?.id, banana?.id, cherry?.id]);
  });

  it('when sort is title with a status filter, then only that status is sorted', async () => {
    const user = await createUserAndToken();
    const [b, a, c] = await createTitled(user, ['B', 'a', 'c']);
    if (b === undefined || a === undefined || c === undefined) throw new Error('setup');
    await complete(user, c);
    const pending = await listTasks(user, '?status=pending&sort=title');
    expect(pending.map((task) => task.id)).toEqual([a.id, b.id]);
  });

  it('when sort is invalid, then it is 422 at loc query.sort', async () => {
    const user = await createUserAndToken();
    const response = await list(user, '?sort=priority');
    expect(response.statusCode).toBe(422);
    expect(response.json()).toMatchObject({ detail: [{ loc: ['query', 'sort'] }] });
  });
});

describe('list: pagination', () => {
  it('when limit and offset are given, then that page comes back with the total', async () => {
    const user = await createUserAndToken();
    const created = await createTitled(user, ['t1', 't2', 't3', 't4', 't5']);
    const newestFirst = created.map((task) => task.id).reverse();

    const first = await list(user, '?limit=2');
    expect(first.json<TaskBody[]>().map((task) => task.id)).toEqual(newestFirst.slice(0, 2));
    expect(first.headers['x-total-count']).toBe('5');

    const middle = await list(user, '?limit=2&offset=2');
    expect(middle.json<TaskBody[]>().map((task) => task.id)).toEqual(newestFirst.slice(2, 4));
    expect(middle.headers['x-total-count']).toBe('5');

    const last = await list(user, '?limit=2&offset=4');
    expect(last.json<TaskBody[]>().map((task) => task.id)).toEqual(newestFirst.slice(4));
    expect(last.headers['x-total-count']).toBe('5');
  });

  it('when the page is exactly full at the end, then X-Total-Count is still the total', async () => {
    const user = await createUserAndToken();
    await createTitled(user, ['t1', 't2', 't3', 't4']);
    const response = await list(user, '?limit=2&offset=2');
    expect(response.json<TaskBody[]>()).toHaveLength(2);
    expect(response.headers['x-total-count']).toBe('4');
  });

  it('when offset is past the end, then the page is empty and X-Total-Count is the total', async () => {
    const user = await createUserAndToken();
    await createTitled(user, ['t1', 't2', 't3']);
    const response = await list(user, '?limit=2&offset=10');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual([]);
    expect(response.headers['x-total-count']).toBe('3');
  });

  it('when a status filter is paginated, then X-Total-Count counts that status only', async () => {
    const user = await userWithMixedTasks();
    const completed = await list(user, '?status=completed&limit=1');
    expect(completed.json<TaskBody[]>()).toHaveLength(1);
    expect(completed.headers['x-total-count']).toBe('3');
    const pending = await list(user, '?status=pending&limit=1&offset=5');
    expect(pending.json()).toEqual([]);
    expect(pending.headers['x-total-count']).toBe('2');
  });

  it('when sort is title and paginated, then pages follow the title order', async () => {
    const user = await createUserAndToken();
    await createTitled(user, ['d', 'B', 'a', 'C']);
    const page = await listTasks(user, '?sort=title&limit=2&offset=1');
    expect(titles(page)).toEqual(['B', 'C']);
  });

  it('when no limit is given, then the whole list comes back with X-Total-Count', async () => {
    const user = await createUserAndToken();
    await createTitled(
      user,
      Array.from({ length: 12 }, (_, i) => `task ${i}`),
    );
    const response = await list(user);
    expect(response.json<TaskBody[]>()).toHaveLength(12);
    expect(response.headers['x-total-count']).toBe('12');
  });

  it('when a new user lists tasks, then it is [] with X-Total-Count 0', async () => {
    const user = await createUserAndToken();
    const response = await list(user);
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual([]);
    expect(response.headers['x-total-count']).toBe('0');
  });

  for (const limit of ['0', '-1', '1001', 'abc', '1.5']) {
    it(`when limit is ${limit}, then it is 422 at loc query.limit`, async () => {
      const user = await createUserAndToken();
      const response = await list(user, `?limit=${limit}`);
      expect(response.statusCode).toBe(422);
      expect(response.json()).toMatchObject({ detail: [{ loc: ['query', 'limit'] }] });
    });
  }

  for (const offset of ['-1', 'abc']) {
    it(`when offset is ${offset}, then it is 422 at loc query.offset`, async () => {
      const user = await createUserAndToken();
      const response = await list(user, `?limit=10&offset=${offset}`);
      expect(response.statusCode).toBe(422);
      expect(response.json()).toMatchObject({ detail: [{ loc: ['query', 'offset'] }] });
    });
  }

  it('when limit is 1000, then it is accepted', async () => {
    const user = await createUserAndToken();
    await createTask(ctx.app, user);
    const response = await list(user, '?limit=1000');
    expect(response.statusCode).toBe(200);
    expect(response.json<TaskBody[]>()).toHaveLength(1);
    expect(response.headers['x-total-count']).toBe('1');
  });
});

/** X-Total-Count of each status filter, read with limit=1 so that it comes from the counter. */
async function totals(user: TestUser) {
  const totalOf = async (status: string) => {
    const response = await list(user, `?status=${status}&limit=1`);
    expect(response.statusCode).toBe(200);
    return Number(response.headers['x-total-count']);
  };
  return {
    all: await totalOf('all'),
    pending: await totalOf('pending'),
    completed: await totalOf('completed'),
  };
}

describe('list: X-Total-Count follows every change', () => {
  it('when tasks are created, completed, reopened, toggled, edited and deleted, then each total is exact', async () => {
    const user = await createUserAndToken();
    const [a, b, c] = await createTitled(user, ['a', 'b', 'c']);
    if (!a || !b || !c) throw new Error('expected three tasks');
    expect(await totals(user)).toEqual({ all: 3, pending: 3, completed: 0 });

    await complete(user, a);
    await complete(user, b);
    expect(await totals(user)).toEqual({ all: 3, pending: 1, completed: 2 });

    // Setting a completed task completed again changes nothing.
    await complete(user, a);
    expect(await totals(user)).toEqual({ all: 3, pending: 1, completed: 2 });

    const toggled = await ctx.app.inject({
      method: 'PATCH',
      url: `/api/tasks/${b.id}/complete`,
      headers: user.headers,
    });
    expect(toggled.json<TaskBody>().completed).toBe(false);
    expect(await totals(user)).toEqual({ all: 3, pending: 2, completed: 1 });

    const reopened = await ctx.app.inject({
      method: 'PUT',
      url: `/api/tasks/${a.id}`,
      headers: user.headers,
      payload: { completed: false, title: 'a, renamed' },
    });
    expect(reopened.statusCode).toBe(200);
    expect(await totals(user)).toEqual({ all: 3, pending: 3, completed: 0 });

    await complete(user, c);
    const deleted = await ctx.app.inject({
      method: 'DELETE',
      url: `/api/tasks/${c.id}`,
      headers: user.headers,
    });
    expect(deleted.statusCode).toBe(204);
    expect(await totals(user)).toEqual({ all: 2, pending: 2, completed: 0 });
  });

  it('when another user changes their tasks, then this user’s totals do not move', async () => {
    const user = await createUserAndToken();
    const other = await createUserAndToken();
    await createTitled(user, ['mine']);
    const [theirs] = await createTitled(other, ['theirs', 'theirs too']);
    if (!theirs) throw new Error('expected a task');
    await complete(other, theirs);
    expect(await totals(user)).toEqual({ all: 1, pending: 1, completed: 0 });
    expect(await totals(other)).toEqual({ all: 2, pending: 1, completed: 1 });
  });

  it('when 30 tasks are created and 10 deleted at once, then the total is exactly 20', async () => {
    const user = await createUserAndToken();
    const created = await Promise.all(
      Array.from({ length: 30 }, (_, i) => createTask(ctx.app, user, { title: `t${i}` })),
    );
    await Promise.all(
      created
        .slice(0, 10)
        .map((task) =>
          ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${task.id}`, headers: user.headers }),
        ),
    );
    expect(await totals(user)).toEqual({ all: 20, pending: 20, completed: 0 });
    expect(await listTasks(user)).toHaveLength(20);
  });

  it('when tasks are written straight into the table, then the totals count them too', async () => {
    const user = await createUserAndToken();
    await createTitled(user, ['through the API']);
    // A bulk load by an operator, bypassing the API: one statement, 500 rows.
    await ctx.database.handle.db.insert(taskTable).values(
      Array.from({ length: 500 }, (_, i) => ({
        userId: user.id,
        title: `bulk ${i}`,
        completed: i % 5 === 0,
      })),
    );
    expect(await totals(user)).toEqual({ all: 501, pending: 401, completed: 100 });
  });
});

describe('list: counters and account deletion', () => {
  it('when a user with tasks is deleted, then their tasks and their counter row go with them', async () => {
    const user = await createUserAndToken();
    const [task] = await createTitled(user, ['one', 'two']);
    if (!task) throw new Error('expected a task');
    await complete(user, task);
    const { db } = ctx.database.handle;
    await db.delete(userTable).where(eq(userTable.id, user.id));
    expect(await db.select().from(taskTable).where(eq(taskTable.userId, user.id))).toEqual([]);
    expect(await db.select().from(taskCount).where(eq(taskCount.userId, user.id))).toEqual([]);
  });
});

describe('list: the cap without limit', () => {
  /** A user with `count` tasks: the first through the API (the user row), the rest in one insert. */
  async function userWithTasks(count: number): Promise<TestUser> {
    const user = await createUserAndToken();
    await createTitled(user, ['through the API']);
    await ctx.database.handle.db
      .insert(taskTable)
      .values(
        Array.from({ length: count - 1 }, (_, i) => ({ userId: user.id, title: `bulk ${i}` })),
      );
    return user;
  }

  /** A user with 1 001 tasks, and a repository that records its round trips. */
  async function userAtCap() {
    const user = await userWithTasks(1001);
    const roundTrips: string[][] = [];
    const tasks = createTasksRepository(recordingRoundTrips(ctx.database.handle, roundTrips));
    const query = { status: 'all', sort: 'created', offset: 0 } as const;
    return { user, roundTrips, tasks, query };
  }

  it('when a user has more tasks than the cap and lists without limit, then 1000 come back with the full total', async () => {
    const user = await userWithTasks(1005);
    const response = await list(user);
    expect(response.json<TaskBody[]>()).toHaveLength(1000);
    expect(response.headers['x-total-count']).toBe('1005');

    const past = await list(user, '?offset=2000');
    expect(past.json<TaskBody[]>()).toEqual([]);
    expect(past.headers['x-total-count']).toBe('1005');

    const tail = await list(user, '?offset=1000');
    expect(tail.json<TaskBody[]>()).toHaveLength(5);
    expect(tail.headers['x-total-count']).toBe('1005');
  });

  it('when an unpaged list fills the cap, then the page is asked again with the counter rather than held while the counter is asked alone', async () => {
    const { user, roundTrips, tasks, query } = await userAtCap();

    const page = await tasks.list(user.id, query);
    expect(page.tasks).toHaveLength(1000);
    expect(page.total).toBe(1001);
    expect(roundTrips).toEqual([['page'], ['page', 'counter']]);
  });

  it('when an unpaged list reached the cap before, then the next one asks for page and counter in one round trip', async () => {
    const { user, roundTrips, tasks, query } = await userAtCap();
    await tasks.list(user.id, query);
    roundTrips.length = 0;

    const page = await tasks.list(user.id, { ...query, sort: 'title' });
    expect(page.tasks).toHaveLength(1000);
    expect(page.total).toBe(1001);
    expect(roundTrips).toEqual([['page', 'counter']]);

    // Another filter is another list: it has not reached the cap yet.
    roundTrips.length = 0;
    const pending = await tasks.list(user.id, { ...query, status: 'pending' });
    expect(pending.total).toBe(1001);
    expect(roundTrips).toEqual([['page'], ['page', 'counter']]);
  });

  it('when a user at the cap falls below it, then the next list is still exact and the one after reads the page alone', async () => {
    const { user, roundTrips, tasks, query } = await userAtCap();
    await tasks.list(user.id, query);
    const oldest = await listTasks(user, '?sort=created&offset=990');
    for (const task of oldest) {
      const response = await ctx.app.inject({
        method: 'DELETE',
        url: `/api/tasks/${task.id}`,
        headers: user.headers,
      });
      expect(response.statusCode).toBe(204);
    }
    roundTrips.length = 0;

    const below = await tasks.list(user.id, query);
    expect(below.tasks).toHaveLength(990);
    expect(below.total).toBe(990);
    expect(roundTrips).toEqual([['page', 'counter']]);

    roundTrips.length = 0;
    expect((await tasks.list(user.id, query)).total).toBe(990);
    expect(roundTrips).toEqual([['page']]);
  });
});

/**
 * The handle, noting for each round trip which of the list's statements it carried: the page
 * (`from task`) and the counter (`from task_count`); the role and user settings are left out.
 */
function recordingRoundTrips(handle: DatabaseHandle, roundTrips: string[][]): DatabaseHandle {
  const kinds = (texts: string[]) =>
    texts.flatMap((text) => {
      if (/\bfrom task_count\b/.test(text)) return ['counter'];
      return /\bfrom task\b/.test(text) ? ['page'] : [];
    });
  return {
    ...handle,
    async runScript(script) {
      roundTrips.push(kinds(script.split(';\n')));
      return handle.runScript(script);
    },
    async runPrepared(executions) {
      const rows = await handle.runPrepared(executions);
      // Undefined: nothing ran, and the same statements come again as a script.
      if (rows !== undefined) roundTrips.push(kinds(executions.map((e) => e.statement.text)));
      return rows;
    },
  };
}
