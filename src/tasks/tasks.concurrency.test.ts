import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTask,
  createUserAndToken,
  startTestApp,
  type TaskBody,
  type TestContext,
  type TestUser,
} from '../../test/helpers.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

function createConcurrently(user: TestUser, count: number, prefix: string) {
  return Promise.all(
    Array.from({ length: count }, (_, i) =>
      ctx.app.inject({
        method: 'POST',
        url: '/api/tasks',
        headers: user.headers,
        payload: { title: `${prefix} ${i}` },
      }),
    ),
  );
}

async function listAll(user: TestUser) {
  const response = await ctx.app.inject({ url: '/api/tasks', headers: user.headers });
  expect(response.statusCode).toBe(200);
  return response.json<TaskBody[]>();
}

describe('concurrency', () => {
  it('when one new user creates 50 tasks at once, then all 50 exist with distinct ids', async () => {
    const user = await createUserAndToken();
    const responses = await createConcurrently(user, 50, 'parallel');
    expect(responses.map((response) => response.statusCode)).toEqual(Array(50).fill(201));
    const ids = new Set(responses.map((response) => response.json<TaskBody>().id));
    expect(ids.size).toBe(50);

    const listed = await listAll(user);
    expect(listed).toHaveLength(50);
    expect(new Set(listed.map((task) => task.id))).toEqual(ids);
  });

  it('when one task is toggled 20 times at once, then no toggle is lost', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const toggles = 20;
    const responses = await Promise.all(
      Array.from({ length: toggles }, () =>
        ctx.app.inject({
          method: 'PATCH',
          url: `/api/tasks/${task.id}/complete`,
          headers: user.headers,
        }),
      ),
    );
    expect(responses.map((response) => response.statusCode)).toEqual(Array(toggles).fill(200));
    // Each toggle saw a different state: half answered true, half false.
    const answeredTrue = responses.filter((response) => response.json<TaskBody>().completed);
    expect(answeredTrue).toHaveLength(toggles / 2);

    const stored = await ctx.app.inject({ url: `/api/tasks/${task.id}`, headers: user.headers });
    expect(stored.json<TaskBody>().completed).toBe(toggles % 2 === 1);
  });

  it('when one task is toggled an odd number of times at once, then it ends completed', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    await Promise.all(
      Array.from({ length: 7 }, () =>
        ctx.app.inject({
          method: 'PATCH',
          url: `/api/tasks/${task.id}/complete`,
          headers: user.headers,
        }),
      ),
    );
    const stored = await ctx.app.inject({ url: `/api/tasks/${task.id}`, headers: user.headers });
    expect(stored.json<TaskBody>().completed).toBe(true);
  });

  it('when two users create tasks at once, then each sees only their own', async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const [aliceResponses, bobResponses] = await Promise.all([
      createConcurrently(alice, 20, 'alice'),
      createConcurrently(bob, 20, 'bob'),
    ]);
    for (const response of [...aliceResponses, ...bobResponses]) {
      expect(response.statusCode).toBe(201);
    }
    expect(aliceResponses.every((r) => r.json<TaskBody>().user_id === alice.id)).toBe(true);
    expect(bobResponses.every((r) => r.json<TaskBody>().user_id === bob.id)).toBe(true);

    const aliceTasks = await listAll(alice);
    const bobTasks = await listAll(bob);
    expect(aliceTasks).toHaveLength(20);
    expect(bobTasks).toHaveLength(20);
    expect(aliceTasks.every((t) => t.user_id === alice.id && t.title.startsWith('alice'))).toBe(
      true,
    );
    expect(bobTasks.every((t) => t.user_id === bob.id && t.title.startsWith('bob'))).toBe(true);
  });
});
