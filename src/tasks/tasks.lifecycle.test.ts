import { setTimeout as sleep } from 'node:timers/promises';
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

const ISO_UTC = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const TASK_KEYS = [
  'completed',
  'created_at',
  'description',
  'id',
  'title',
  'updated_at',
  'user_id',
].sort();

async function getTask(user: TestUser, id: number) {
  return ctx.app.inject({ url: `/api/tasks/${id}`, headers: user.headers });
}

async function putTask(user: TestUser, id: number, payload: Record<string, unknown>) {
  return ctx.app.inject({
    method: 'PUT',
    url: `/api/${user.id}/tasks/${id}`,
    headers: user.headers,
    payload,
  });
}

describe('task lifecycle', () => {
  it('when a task is created, then it is 201 with the task and a Location that serves it', async () => {
    const user = await createUserAndToken();
    const response = await ctx.app.inject({
      method: 'POST',
      url: `/api/${user.id}/tasks`,
      headers: user.headers,
      payload: { title: '  Buy milk  ', description: 'two litres' },
    });
    expect(response.statusCode).toBe(201);
    const task = response.json<TaskBody>();
    expect(task).toMatchObject({
      user_id: user.id,
      title: 'Buy milk',
      description: 'two litres',
      completed: false,
    });
    expect(typeof task.id).toBe('number');
    expect(task.created_at).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(response.headers.location).toBe(`/api/${user.id}/tasks/${task.id}`);

    const fetched = await ctx.app.inject({
      url: String(response.headers.location),
      headers: user.headers,
    });
    expect(fetched.statusCode).toBe(200);
    expect(fetched.json()).toEqual(task);
  });

  it('when PATCH complete has no body, then completion toggles each time', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const url = `/api/tasks/${task.id}/complete`;
    const first = await ctx.app.inject({ method: 'PATCH', url, headers: user.headers });
    expect(first.json()).toMatchObject({ completed: true });
    const second = await ctx.app.inject({ method: 'PATCH', url, headers: user.headers });
    expect(second.json()).toMatchObject({ completed: false });
  });
});

describe('create', () => {
  it('when the description is omitted, then the task has description null', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user, { title: 'No description' });
    expect(task.description).toBeNull();
  });

  it('when the body carries id, user_id, completed and timestamps, then they are ignored', async () => {
    const user = await createUserAndToken();
    const other = await createUserAndToken();
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: user.headers,
      payload: {
        title: 'Sneaky',
        id: 424242,
        user_id: other.id,
        completed: true,
        created_at: '2000-01-01T00:00:00.000Z',
        updated_at: '2000-01-01T00:00:00.000Z',
      },
    });
    expect(response.statusCode).toBe(201);
    const task = response.json<TaskBody>();
    expect(task.id).not.toBe(424242);
    expect(task.user_id).toBe(user.id);
    expect(task.completed).toBe(false);
    expect(task.created_at.startsWith('2000-')).toBe(false);
    expect(task.updated_at.startsWith('2000-')).toBe(false);
    expect((await getTask(user, task.id)).json()).toEqual(task);
  });

  it('when a task is created on the plain shape, then Location is /api/tasks/{id}', async () => {
    const user = await createUserAndToken();
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: user.headers,
      payload: { title: 'Plain shape' },
    });
    expect(response.statusCode).toBe(201);
    const task = response.json<TaskBody>();
    expect(response.headers.location).toBe(`/api/tasks/${task.id}`);
    const fetched = await ctx.app.inject({
      url: String(response.headers.location),
      headers: user.headers,
    });
    expect(fetched.json()).toEqual(task);
  });

  it('when a task is returned, then it has exactly the contract keys and UTC timestamps', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user, { title: 'Shape', description: 'd' });
    expect(Object.keys(task).sort()).toEqual(TASK_KEYS);
    expect(Number.isInteger(task.id)).toBe(true);
    expect(task.created_at).toMatch(ISO_UTC);
    expect(task.updated_at).toMatch(ISO_UTC);
    expect(new Date(task.created_at).toISOString()).toBe(task.created_at);

    const list = await ctx.app.inject({ url: '/api/tasks', headers: user.headers });
    const [listed] = list.json<TaskBody[]>();
    expect(Object.keys(listed ?? {}).sort()).toEqual(TASK_KEYS);
  });
});

describe('read', () => {
  it('when a task is fetched on both route shapes, then both answer the same task', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user, { title: 'Both shapes' });
    const viaUser = await ctx.app.inject({
      url: `/api/${user.id}/tasks/${task.id}`,
      headers: user.headers,
    });
    const viaPlain = await getTask(user, task.id);
    expect(viaUser.statusCode).toBe(200);
    expect(viaPlain.statusCode).toBe(200);
    expect(viaUser.json()).toEqual(task);
    expect(viaPlain.json()).toEqual(task);
  });

  it('when tasks are listed on both route shapes, then both lists are the same', async () => {
    const user = await createUserAndToken();
    await createTask(ctx.app, user, { title: 'One' });
    await createTask(ctx.app, user, { title: 'Two' });
    const viaUser = await ctx.app.inject({ url: `/api/${user.id}/tasks`, headers: user.headers });
    const viaPlain = await ctx.app.inject({ url: '/api/tasks', headers: user.headers });
    expect(viaUser.json<TaskBody[]>()).toHaveLength(2);
    expect(viaPlain.json()).toEqual(viaUser.json());
  });

  it('when a task changed through one shape, then the other shape sees the change', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user, { title: 'Before' });
    const put = await ctx.app.inject({
      method: 'PUT',
      url: `/api/tasks/${task.id}`,
      headers: user.headers,
      payload: { title: 'After' },
    });
    expect(put.statusCode).toBe(200);
    const viaUser = await ctx.app.inject({
      url: `/api/${user.id}/tasks/${task.id}`,
      headers: user.headers,
    });
    expect(viaUser.json()).toMatchObject({ title: 'After' });
  });
});

describe('update', () => {
  it('when only the title is given, then description and completed are unchanged', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user, { title: 'Old', description: 'keep me' });
    await ctx.app.inject({
      method: 'PATCH',
      url: `/api/tasks/${task.id}/complete`,
      headers: user.headers,
    });
    const response = await putTask(user, task.id, { title: '  New  ' });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({
      id: task.id,
      title: 'New',
      description: 'keep me',
      completed: true,
    });
  });

  it('when description is null, then the description is cleared and the title kept', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user, { title: 'Keep', description: 'clear me' });
    const response = await putTask(user, task.id, { description: null });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ title: 'Keep', description: null });
    expect((await getTask(user, task.id)).json()).toMatchObject({ description: null });
  });

  it('when completed is set true then false, then the task follows', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const done = await putTask(user, task.id, { completed: true });
    expect(done.json()).toMatchObject({ completed: true, title: task.title });
    const undone = await putTask(user, task.id, { completed: false });
    expect(undone.json()).toMatchObject({ completed: false, title: task.title });
  });

  it('when a task is updated, then updated_at moves forward and created_at stays', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    // Timestamps are serialized to the millisecond: let at least one pass.
    await sleep(5);
    const updated = (await putTask(user, task.id, { title: 'Later' })).json<TaskBody>();
    expect(updated.created_at).toBe(task.created_at);
    expect(Date.parse(updated.updated_at)).toBeGreaterThan(Date.parse(task.updated_at));
  });

  it('when the body is {}, then it is 422 and the task is unchanged', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await putTask(user, task.id, {});
    expect(response.statusCode).toBe(422);
    expect(Array.isArray(response.json<{ detail: unknown }>().detail)).toBe(true);
    expect((await getTask(user, task.id)).json()).toEqual(task);
  });

  it('when the task does not exist, then PUT is 404', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    await ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${task.id}`, headers: user.headers });
    const response = await putTask(user, task.id, { title: 'Ghost' });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toEqual({ detail: 'Task not found' });
  });
});

describe('delete', () => {
  it('when a task is deleted, then it is 204 with an empty body', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'DELETE',
      url: `/api/${user.id}/tasks/${task.id}`,
      headers: user.headers,
    });
    expect(response.statusCode).toBe(204);
    expect(response.body).toBe('');
  });

  it('when a deleted task is fetched, then it is 404', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    await ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${task.id}`, headers: user.headers });
    const response = await getTask(user, task.id);
    expect(response.statusCode).toBe(404);
    expect(response.json()).toEqual({ detail: 'Task not found' });
  });

  it('when a task is deleted twice, then the second delete is 404', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const url = `/api/tasks/${task.id}`;
    const first = await ctx.app.inject({ method: 'DELETE', url, headers: user.headers });
    expect(first.statusCode).toBe(204);
    const second = await ctx.app.inject({ method: 'DELETE', url, headers: user.headers });
    expect(second.statusCode).toBe(404);
    expect(second.json()).toEqual({ detail: 'Task not found' });
  });

  it('when a task is deleted, then it leaves the list and the other tasks stay', async () => {
    const user = await createUserAndToken();
    const gone = await createTask(ctx.app, user, { title: 'Gone' });
    const kept = await createTask(ctx.app, user, { title: 'Kept' });
    await ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${gone.id}`, headers: user.headers });
    const list = await ctx.app.inject({ url: '/api/tasks', headers: user.headers });
    expect(list.json()).toEqual([kept]);
  });
});

describe('complete', () => {
  it('when PATCH complete has Content-Type application/json and an empty body, then it toggles', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'PATCH',
      url: `/api/${user.id}/tasks/${task.id}/complete`,
      headers: { ...user.headers, 'content-type': 'application/json' },
      payload: '',
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ id: task.id, completed: true });
  });

  it('when PATCH complete has the body {}, then it toggles', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const url = `/api/tasks/${task.id}/complete`;
    const first = await ctx.app.inject({
      method: 'PATCH',
      url,
      headers: user.headers,
      payload: {},
    });
    expect(first.statusCode).toBe(200);
    expect(first.json()).toMatchObject({ completed: true });
    const second = await ctx.app.inject({
      method: 'PATCH',
      url,
      headers: user.headers,
      payload: {},
    });
    expect(second.json()).toMatchObject({ completed: false });
  });

  it('when PATCH complete sends {"completed": true} twice, then the task stays completed', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const url = `/api/tasks/${task.id}/complete`;
    const payload = { completed: true };
    const first = await ctx.app.inject({ method: 'PATCH', url, headers: user.headers, payload });
    expect(first.json()).toMatchObject({ completed: true });
    const second = await ctx.app.inject({ method: 'PATCH', url, headers: user.headers, payload });
    expect(second.statusCode).toBe(200);
    expect(second.json()).toMatchObject({ completed: true });
  });

  it('when PATCH complete sends {"completed": false} on a pending task, then it stays pending', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'PATCH',
      url: `/api/tasks/${task.id}/complete`,
      headers: user.headers,
      payload: { completed: false },
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ completed: false });
  });

  it('when PATCH complete toggles, then the change is stored and updated_at moves', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    await sleep(5);
    const toggled = await ctx.app.inject({
      method: 'PATCH',
      url: `/api/tasks/${task.id}/complete`,
      headers: user.headers,
    });
    const stored = (await getTask(user, task.id)).json<TaskBody>();
    expect(stored).toEqual(toggled.json());
    expect(stored.completed).toBe(true);
    expect(stored.created_at).toBe(task.created_at);
    expect(Date.parse(stored.updated_at)).toBeGreaterThan(Date.parse(task.updated_at));
  });

  it('when PATCH complete targets a missing task, then it is 404', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    await ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${task.id}`, headers: user.headers });
    const response = await ctx.app.inject({
      method: 'PATCH',
      url: `/api/tasks/${task.id}/complete`,
      headers: user.headers,
    });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toEqual({ detail: 'Task not found' });
  });
});
