import type { InjectOptions } from 'fastify';
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

const NOT_FOUND = { detail: 'Task not found' };

type Shape = 'user path' | 'plain';

function itemUrl(shape: Shape, caller: TestUser, id: number | string): string {
  return shape === 'user path' ? `/api/${caller.id}/tasks/${id}` : `/api/tasks/${id}`;
}

interface RouteCase {
  name: string;
  request: (shape: Shape, caller: TestUser, id: number | string) => InjectOptions;
}

/** Every route that names one task, as user B would call it with user A's task id. */
const ROUTES: RouteCase[] = [
  {
    name: 'GET one',
    request: (shape, caller, id) => ({ method: 'GET', url: itemUrl(shape, caller, id) }),
  },
  {
    name: 'PUT',
    request: (shape, caller, id) => ({
      method: 'PUT',
      url: itemUrl(shape, caller, id),
      payload: { title: 'hijacked', description: 'hijacked', completed: true },
    }),
  },
  {
    name: 'DELETE',
    request: (shape, caller, id) => ({ method: 'DELETE', url: itemUrl(shape, caller, id) }),
  },
  {
    name: 'PATCH complete (toggle)',
    request: (shape, caller, id) => ({
      method: 'PATCH',
      url: `${itemUrl(shape, caller, id)}/complete`,
    }),
  },
  {
    name: 'PATCH complete (set)',
    request: (shape, caller, id) => ({
      method: 'PATCH',
      url: `${itemUrl(shape, caller, id)}/complete`,
      payload: { completed: true },
    }),
  },
];

const SHAPES: Shape[] = ['user path', 'plain'];

async function fetchAs(user: TestUser, id: number) {
  const response = await ctx.app.inject({ url: `/api/tasks/${id}`, headers: user.headers });
  expect(response.statusCode).toBe(200);
  return response.json<TaskBody>();
}

async function deletedTaskId(user: TestUser): Promise<number> {
  const task = await createTask(ctx.app, user, { title: 'Short-lived' });
  await ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${task.id}`, headers: user.headers });
  return task.id;
}

describe('cross-user isolation', () => {
  for (const shape of SHAPES) {
    for (const route of ROUTES) {
      it(`when user B calls ${route.name} (${shape}) on user A's task, then it is 404 and A's task is unchanged`, async () => {
        const alice = await createUserAndToken();
        const bob = await createUserAndToken();
        const task = await createTask(ctx.app, alice, { title: "Alice's", description: 'private' });
        const before = await fetchAs(alice, task.id);

        const options = route.request(shape, bob, task.id);
        const response = await ctx.app.inject({ ...options, headers: bob.headers });

        expect(response.statusCode).toBe(404);
        expect(response.json()).toEqual(NOT_FOUND);
        expect(await fetchAs(alice, task.id)).toEqual(before);
      });

      it(`when user B calls ${route.name} (${shape}) on A's task, then the answer equals that for a nonexistent id`, async () => {
        const alice = await createUserAndToken();
        const bob = await createUserAndToken();
        const task = await createTask(ctx.app, alice);
        const missingId = await deletedTaskId(bob);

        const foreign = await ctx.app.inject({
          ...route.request(shape, bob, task.id),
          headers: bob.headers,
        });
        const missing = await ctx.app.inject({
          ...route.request(shape, bob, missingId),
          headers: bob.headers,
        });

        expect(foreign.statusCode).toBe(missing.statusCode);
        expect(foreign.body).toBe(missing.body);
      });
    }
  }

  it("when user B uses A's id in the path, then it is 403 and A's task is unchanged", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const task = await createTask(ctx.app, alice);
    const before = await fetchAs(alice, task.id);
    const response = await ctx.app.inject({
      method: 'PUT',
      url: `/api/${alice.id}/tasks/${task.id}`,
      headers: bob.headers,
      payload: { title: 'hijacked' },
    });
    expect(response.statusCode).toBe(403);
    expect(await fetchAs(alice, task.id)).toEqual(before);
  });

  it("when user B lists tasks on either shape, then A's tasks never appear", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    await createTask(ctx.app, alice, { title: 'A1' });
    await createTask(ctx.app, alice, { title: 'A2' });
    const own = await createTask(ctx.app, bob, { title: 'B1' });

    for (const url of [`/api/${bob.id}/tasks`, '/api/tasks']) {
      for (const query of [
        '',
        '?status=pending',
        '?status=completed',
        '?sort=title',
        '?limit=10',
      ]) {
        const response = await ctx.app.inject({ url: `${url}${query}`, headers: bob.headers });
        expect(response.statusCode).toBe(200);
        const tasks = response.json<TaskBody[]>();
        expect(tasks.every((task) => task.user_id === bob.id)).toBe(true);
        expect(tasks).toEqual(query === '?status=completed' ? [] : [own]);
      }
    }
  });

  it("when user B's list is counted, then X-Total-Count excludes A's tasks", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    await createTask(ctx.app, alice);
    await createTask(ctx.app, alice);
    await createTask(ctx.app, bob);
    const response = await ctx.app.inject({ url: '/api/tasks?limit=1', headers: bob.headers });
    expect(response.headers['x-total-count']).toBe('1');
  });

  it("when user B puts A's user_id in a create body, then the task is B's and A's list stays empty", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    for (const url of [`/api/${bob.id}/tasks`, '/api/tasks']) {
      const response = await ctx.app.inject({
        method: 'POST',
        url,
        headers: bob.headers,
        payload: { title: 'For Alice?', user_id: alice.id },
      });
      expect(response.statusCode).toBe(201);
      expect(response.json<TaskBody>().user_id).toBe(bob.id);
    }
    const aliceList = await ctx.app.inject({ url: '/api/tasks', headers: alice.headers });
    expect(aliceList.json()).toEqual([]);
  });

  it("when user B creates a task on A's user path, then it is 403 and nothing is created", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const response = await ctx.app.inject({
      method: 'POST',
      url: `/api/${alice.id}/tasks`,
      headers: bob.headers,
      payload: { title: 'For Alice?' },
    });
    expect(response.statusCode).toBe(403);
    const aliceList = await ctx.app.inject({ url: '/api/tasks', headers: alice.headers });
    expect(aliceList.json()).toEqual([]);
  });
});
