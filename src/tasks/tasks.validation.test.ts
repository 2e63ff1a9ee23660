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

interface ValidationBody {
  detail: { loc: (string | number)[]; msg: string; type: string }[];
}

async function post(user: TestUser, payload: InjectOptions['payload'], headers = {}) {
  return ctx.app.inject({
    method: 'POST',
    url: '/api/tasks',
    headers: { ...user.headers, ...headers },
    payload,
  });
}

async function postJson(user: TestUser, raw: string) {
  return post(user, raw, { 'content-type': 'application/json' });
}

/** Asserts the FastAPI-style 422 shape and returns its issues. */
function expectValidation(response: { statusCode: number; json: <T>() => T }) {
  expect(response.statusCode).toBe(422);
  const body = response.json<ValidationBody>();
  expect(Array.isArray(body.detail)).toBe(true);
  expect(body.detail.length).toBeGreaterThan(0);
  for (const issue of body.detail) {
    expect(Array.isArray(issue.loc)).toBe(true);
    expect(typeof issue.msg).toBe('string');
    expect(typeof issue.type).toBe('string');
  }
  return body.detail;
}

const EMOJI = '😀'; // one character, two UTF-16 code units

describe('title', () => {
  it('when the title is missing, then it is 422 with loc body.title and type missing', async () => {
    const user = await createUserAndToken();
    const response = await post(user, { description: 'no title' });
    const issues = expectValidation(response);
    expect(issues).toEqual([{ loc: ['body', 'title'], msg: expect.any(String), type: 'missing' }]);
  });

  for (const title of ['', '   ', '\t\n']) {
    it(`when the title is ${JSON.stringify(title)}, then it is 422 at body.title`, async () => {
      const user = await createUserAndToken();
      const issues = expectValidation(await post(user, { title }));
      expect(issues[0]?.loc).toEqual(['body', 'title']);
    });
  }

  it('when the title has exactly 200 characters, then it is created', async () => {
    const user = await createUserAndToken();
    const title = 'x'.repeat(200);
    const response = await post(user, { title });
    expect(response.statusCode).toBe(201);
    expect(response.json<TaskBody>().title).toBe(title);
  });

  it('when the title has 201 characters, then it is 422 at body.title', async () => {
    const user = await createUserAndToken();
    const issues = expectValidation(await post(user, { title: 'x'.repeat(201) }));
    expect(issues[0]?.loc).toEqual(['body', 'title']);
  });

  it('when the title has 200 characters plus surrounding spaces, then it is created trimmed', async () => {
    const user = await createUserAndToken();
    const title = 'y'.repeat(200);
    const response = await post(user, { title: `   ${title}   ` });
    expect(response.statusCode).toBe(201);
    expect(response.json<TaskBody>().title).toBe(title);
  });

  it('when the title has 200 emoji (400 UTF-16 units), then it is created as PostgreSQL counts', async () => {
    const user = await createUserAndToken();
    const title = EMOJI.repeat(200);
    const response = await post(user, { title });
    expect(response.statusCode).toBe(201);
    expect(response.json<TaskBody>().title).toBe(title);
  });

  it('when the title has 201 emoji, then it is 422', async () => {
    const user = await createUserAndToken();
    expectValidation(await post(user, { title: EMOJI.repeat(201) }));
  });

  for (const [name, title] of [
    ['a number', 42],
    ['null', null],
    ['an array', ['a']],
    ['an object', { text: 'a' }],
    ['a boolean', true],
  ] as const) {
    it(`when the title is ${name}, then it is 422 at body.title`, async () => {
      const user = await createUserAndToken();
      const issues = expectValidation(await post(user, { title }));
      expect(issues[0]?.loc).toEqual(['body', 'title']);
    });
  }

  it('when the title contains a NUL character, then it is 422', async () => {
    const user = await createUserAndToken();
    expectValidation(await post(user, { title: 'a\u0000b' }));
  });

  it('when a PUT title contains a NUL character, then it is 422 and the task is unchanged', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'PUT',
      url: `/api/tasks/${task.id}`,
      headers: user.headers,
      payload: { title: '\u0000' },
    });
    expectValidation(response);
    const stored = await ctx.app.inject({ url: `/api/tasks/${task.id}`, headers: user.headers });
    expect(stored.json()).toEqual(task);
  });

  it('when a PUT title is blank, then it is 422', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'PUT',
      url: `/api/tasks/${task.id}`,
      headers: user.headers,
      payload: { title: '   ' },
    });
    expectValidation(response);
  });
});

describe('description', () => {
  it('when the description has 1000 characters, then it is created', async () => {
    const user = await createUserAndToken();
    const description = 'd'.repeat(1000);
    const response = await post(user, { title: 't', description });
    expect(response.statusCode).toBe(201);
    expect(response.json<TaskBody>().description).toBe(description);
  });

  it('when the description has 1001 characters, then it is 422 at body.description', async () => {
    const user = await createUserAndToken();
    const issues = expectValidation(
      await post(user, { title: 't', description: 'd'.repeat(1001) }),
    );
    expect(issues[0]?.loc).toEqual(['body', 'description']);
  });

  it('when the description has 1000 emoji, then it is created', async () => {
    const user = await createUserAndToken();
    const description = EMOJI.repeat(1000);
    const response = await post(user, { title: 't', description });
    expect(response.statusCode).toBe(201);
    expect(response.json<TaskBody>().description).toBe(description);
  });

  it('when the description is null, then it is created with null', async () => {
    const user = await createUserAndToken();
    const response = await post(user, { title: 't', description: null });
    expect(response.statusCode).toBe(201);
    expect(response.json<TaskBody>().description).toBeNull();
  });

  it('when the description is a number, then it is 422 at body.description', async () => {
    const user = await createUserAndToken();
    const issues = expectValidation(await post(user, { title: 't', description: 7 }));
    expect(issues[0]?.loc).toEqual(['body', 'description']);
  });

  it('when the description contains a NUL character, then it is 422', async () => {
    const user = await createUserAndToken();
    expectValidation(await post(user, { title: 't', description: 'x\u0000y' }));
  });
});

describe('completed', () => {
  it('when PUT sends completed as the string "true", then it is 422 and the task is unchanged', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'PUT',
      url: `/api/tasks/${task.id}`,
      headers: user.headers,
      payload: { completed: 'true' },
    });
    const issues = expectValidation(response);
    expect(issues[0]?.loc).toEqual(['body', 'completed']);
    const stored = await ctx.app.inject({ url: `/api/tasks/${task.id}`, headers: user.headers });
    expect(stored.json<TaskBody>().completed).toBe(false);
  });

  it('when PATCH complete sends completed as 1, then it is 422', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const response = await ctx.app.inject({
      method: 'PATCH',
      url: `/api/tasks/${task.id}/complete`,
      headers: user.headers,
      payload: { completed: 1 },
    });
    expectValidation(response);
  });
});

describe('body', () => {
  it('when the body is a JSON array, then it is 422', async () => {
    const user = await createUserAndToken();
    expectValidation(await postJson(user, '[{"title": "x"}]'));
  });

  it('when the body is a JSON string, then it is 422', async () => {
    const user = await createUserAndToken();
    expectValidation(await postJson(user, '"x"'));
  });

  it('when the body is malformed JSON, then it is 422 (or 400) with a detail list', async () => {
    const user = await createUserAndToken();
    const response = await postJson(user, '{"title": "x",');
    expect([400, 422]).toContain(response.statusCode);
    const body = response.json<ValidationBody>();
    expect(Array.isArray(body.detail)).toBe(true);
    expect(body.detail[0]?.loc[0]).toBe('body');
  });

  it('when POST has Content-Type application/json and no body, then it is 422', async () => {
    const user = await createUserAndToken();
    expectValidation(await postJson(user, ''));
  });

  it('when the body is text/plain, then it is 415 with a detail', async () => {
    const user = await createUserAndToken();
    const response = await post(user, 'title=x', { 'content-type': 'text/plain' });
    expect(response.statusCode).toBe(415);
    expect(typeof response.json<{ detail: unknown }>().detail).toBe('string');
  });

  it('when the body is form-encoded, then it is 415', async () => {
    const user = await createUserAndToken();
    const response = await post(user, 'title=x', {
      'content-type': 'application/x-www-form-urlencoded',
    });
    expect(response.statusCode).toBe(415);
  });

  it('when the body is over 16 KiB, then it is 413 with a detail', async () => {
    const user = await createUserAndToken();
    const response = await post(user, { title: 't', description: 'd'.repeat(17 * 1024) });
    expect(response.statusCode).toBe(413);
    expect(typeof response.json<{ detail: unknown }>().detail).toBe('string');
  });

  it('when the body carries __proto__, then it is a 4xx and no task is created', async () => {
    const user = await createUserAndToken();
    const response = await postJson(user, '{"__proto__": {"completed": true}, "title": "x"}');
    expect(response.statusCode).toBeGreaterThanOrEqual(400);
    expect(response.statusCode).toBeLessThan(500);
    expect(response.json()).toHaveProperty('detail');
    const list = await ctx.app.inject({ url: '/api/tasks', headers: user.headers });
    expect(list.json()).toEqual([]);
  });

  it('when the body carries constructor.prototype, then it is a 4xx', async () => {
    const user = await createUserAndToken();
    const response = await postJson(
      user,
      '{"constructor": {"prototype": {"completed": true}}, "title": "x"}',
    );
    expect(response.statusCode).toBeGreaterThanOrEqual(400);
    expect(response.statusCode).toBeLessThan(500);
  });
});

describe('task id in the path', () => {
  it('when the id is not a number, then it is 422 at loc path.id', async () => {
    const user = await createUserAndToken();
    const response = await ctx.app.inject({ url: '/api/tasks/abc', headers: user.headers });
    const issues = expectValidation(response);
    expect(issues[0]?.loc).toEqual(['path', 'id']);
  });

  it('when the id is not a number on the user path, then it is 422 at loc path.id', async () => {
    const user = await createUserAndToken();
    const response = await ctx.app.inject({
      method: 'PUT',
      url: `/api/${user.id}/tasks/1.5`,
      headers: user.headers,
      payload: { title: 'x' },
    });
    const issues = expectValidation(response);
    expect(issues[0]?.loc).toEqual(['path', 'id']);
  });

  const impossibleIds = ['0', '-1', '99999999999999999999', '9223372036854775808'];
  for (const id of impossibleIds) {
    it(`when the id is ${id}, then every task route is 404, never 500`, async () => {
      const user = await createUserAndToken();
      const requests: InjectOptions[] = [
        { method: 'GET', url: `/api/tasks/${id}` },
        { method: 'PUT', url: `/api/tasks/${id}`, payload: { title: 'x' } },
        { method: 'DELETE', url: `/api/tasks/${id}` },
        { method: 'PATCH', url: `/api/tasks/${id}/complete` },
        { method: 'GET', url: `/api/${user.id}/tasks/${id}` },
      ];
      for (const request of requests) {
        const response = await ctx.app.inject({ ...request, headers: user.headers });
        expect(response.statusCode).toBe(404);
        expect(response.json()).toEqual({ detail: 'Task not found' });
      }
    });
  }

  it('when the id is the largest bigint, then it is 404', async () => {
    const user = await createUserAndToken();
    const response = await ctx.app.inject({
      url: '/api/tasks/9223372036854775807',
      headers: user.headers,
    });
    expect(response.statusCode).toBe(404);
  });
});
