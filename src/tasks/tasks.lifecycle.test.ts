import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTask,
  createUserAndToken,
  startTestApp,
  type TaskBody,
  type TestContext,
} from '../../test/helpers.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

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
