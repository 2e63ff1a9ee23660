import { randomUUID } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import type { LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createUserAndToken,
  startTestApp,
  type TaskBody,
  type TestContext,
  type TestUser,
} from '../../test/helpers.js';
import { idempotencyKey } from '../db/schema.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

const newKey = () => `key-${randomUUID()}`;

function post(
  user: TestUser,
  key: string | undefined,
  payload: Record<string, unknown> = { title: 'Pay rent' },
  url = `/api/${user.id}/tasks`,
) {
  return ctx.app.inject({
    method: 'POST',
    url,
    headers: { ...user.headers, ...(key === undefined ? {} : { 'idempotency-key': key }) },
    payload,
  });
}

async function listAll(user: TestUser) {
  const response = await ctx.app.inject({ url: '/api/tasks', headers: user.headers });
  expect(response.statusCode).toBe(200);
  return response.json<TaskBody[]>();
}

/** What a client sees of a create: status, body and Location. */
const outcome = (response: LightMyRequestResponse) => ({
  status: response.statusCode,
  body: response.json<unknown>(),
  location: response.headers.location,
});

function expectKeyRejected(response: LightMyRequestResponse) {
  expect(response.statusCode).toBe(422);
  const { detail } = response.json<{ detail: { loc: unknown[] }[] }>();
  expect(detail.map((issue) => issue.loc)).toContainEqual(['header', 'idempotency-key']);
}

describe('Idempotency-Key on POST …/tasks', () => {
  it('when a create is repeated with the same key and body, then the first response is replayed and one task exists', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    const first = await post(user, key, { title: 'Pay rent', description: 'by Friday' });
    const second = await post(user, key, { title: 'Pay rent', description: 'by Friday' });

    expect(first.statusCode).toBe(201);
    expect(outcome(second)).toEqual(outcome(first));
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect(await listAll(user)).toEqual([first.json()]);
  });

  it('when 10 requests with one key race, then exactly one task exists and all 10 responses are equal', async () => {
    const user = await createUserAndToken();
    // Warm up: the user row exists and the pool has its connections open, so the 10
    // requests below reach the database together instead of one by one.
    await Promise.all(Array.from({ length: 10 }, () => listAll(user)));
    const key = newKey();
    const responses = await Promise.all(
      Array.from({ length: 10 }, () => post(user, key, { title: 'Only once' })),
    );

    expect(responses.map((response) => response.statusCode)).toEqual(Array(10).fill(201));
    const [first] = responses;
    if (!first) throw new Error('no response');
    for (const response of responses) expect(outcome(response)).toEqual(outcome(first));
    expect(responses.filter((r) => r.headers['idempotent-replayed'] === 'true')).toHaveLength(9);
    const tasks = await listAll(user);
    expect(tasks).toHaveLength(1);
    expect(tasks[0]).toEqual(first.json());
  });

  it('when the same key comes with a different body, then it is 422 naming the header and nothing is created', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    const first = await post(user, key, { title: 'Original' });
    const second = await post(user, key, { title: 'Something else' });

    expect(first.statusCode).toBe(201);
    expect(second.statusCode).toBe(422);
    expect(second.json()).toEqual({
      detail: [
        {
          loc: ['header', 'idempotency-key'],
          msg: 'This Idempotency-Key was already used with a different request body',
          type: 'idempotency_key_reused',
        },
      ],
    });
    expect((await listAll(user)).map((task) => task.title)).toEqual(['Original']);
  });

  it('when the same key only adds a description, then it counts as a different body (422)', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    expect((await post(user, key, { title: 'T' })).statusCode).toBe(201);
    expect((await post(user, key, { title: 'T', description: 'more' })).statusCode).toBe(422);
    expect(await listAll(user)).toHaveLength(1);
  });

  it('when two users send the same key, then each gets their own task', async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const key = newKey();
    const forAlice = await post(alice, key, { title: 'Shared key' });
    const forBob = await post(bob, key, { title: 'Shared key' });

    expect(forAlice.statusCode).toBe(201);
    expect(forBob.statusCode).toBe(201);
    expect(forBob.headers['idempotent-replayed']).toBeUndefined();
    const aliceTask = forAlice.json<TaskBody>();
    const bobTask = forBob.json<TaskBody>();
    expect(bobTask.id).not.toBe(aliceTask.id);
    expect(bobTask.user_id).toBe(bob.id);
    expect(await listAll(alice)).toEqual([aliceTask]);
    expect(await listAll(bob)).toEqual([bobTask]);
  });

  it('when two users send the same key with different bodies, then neither is refused', async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const key = newKey();
    expect((await post(alice, key, { title: 'Alice' })).statusCode).toBe(201);
    expect((await post(bob, key, { title: 'Bob' })).statusCode).toBe(201);
  });

  it('when no key is sent, then two identical requests create two tasks', async () => {
    const user = await createUserAndToken();
    const first = await post(user, undefined, { title: 'Twice' });
    const second = await post(user, undefined, { title: 'Twice' });

    expect(first.statusCode).toBe(201);
    expect(second.statusCode).toBe(201);
    expect(second.json<TaskBody>().id).not.toBe(first.json<TaskBody>().id);
    expect(await listAll(user)).toHaveLength(2);
  });

  it('when two different keys are sent with one body, then two tasks are created', async () => {
    const user = await createUserAndToken();
    expect((await post(user, newKey(), { title: 'Same body' })).statusCode).toBe(201);
    expect((await post(user, newKey(), { title: 'Same body' })).statusCode).toBe(201);
    expect(await listAll(user)).toHaveLength(2);
  });

  it('when the replay comes on the other URL shape, then it replays the first response', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    const first = await post(user, key, { title: 'Shape' }, `/api/${user.id}/tasks`);
    const second = await post(user, key, { title: 'Shape' }, '/api/tasks');
    expect(outcome(second)).toEqual(outcome(first));
    expect(await listAll(user)).toHaveLength(1);
  });

  it('when the body differs only in title padding or ignored fields, then it is the same request', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    const first = await post(user, key, { title: 'Padded' });
    const second = await post(user, key, { title: '  Padded  ', completed: true });
    expect(outcome(second)).toEqual(outcome(first));
    expect(await listAll(user)).toHaveLength(1);
  });

  it('when the task was deleted since, then a replay still answers the first response and creates nothing', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    const first = await post(user, key);
    const task = first.json<TaskBody>();
    await ctx.app.inject({ method: 'DELETE', url: `/api/tasks/${task.id}`, headers: user.headers });

    const replay = await post(user, key);
    expect(outcome(replay)).toEqual(outcome(first));
    expect(await listAll(user)).toEqual([]);
  });

  it('when the stored key is older than 24 hours, then the key counts as new and creates a task', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    const first = await post(user, key, { title: 'Yesterday' });
    await ctx.database.handle.db.execute(
      sql`update idempotency_key set created_at = now() - interval '25 hours'
          where user_id = ${user.id} and key = ${key}`,
    );

    const again = await post(user, key, { title: 'Today' });
    expect(again.statusCode).toBe(201);
    expect(again.headers['idempotent-replayed']).toBeUndefined();
    expect(again.json<TaskBody>().id).not.toBe(first.json<TaskBody>().id);
    expect(await listAll(user)).toHaveLength(2);
    // …and now the new response is what replays.
    expect(outcome(await post(user, key, { title: 'Today' }))).toEqual(outcome(again));
  });

  it('when a user creates with a key, then their expired keys are purged', async () => {
    const user = await createUserAndToken();
    const stale = newKey();
    await post(user, stale);
    await ctx.database.handle.db.execute(
      sql`update idempotency_key set created_at = now() - interval '25 hours'
          where user_id = ${user.id} and key = ${stale}`,
    );

    await post(user, newKey());
    const rows = await ctx.database.handle.db
      .select()
      .from(idempotencyKey)
      .where(and(eq(idempotencyKey.userId, user.id), eq(idempotencyKey.key, stale)));
    expect(rows).toEqual([]);
  });

  it.each([
    ['empty', ''],
    ['256 characters long', 'k'.repeat(256)],
    ['not ASCII', 'clé-é'],
    ['a control character', 'a\tb'],
  ])(
    'when the key is %s, then it is 422 at ["header", "idempotency-key"] and nothing is created',
    async (_name, key) => {
      const user = await createUserAndToken();
      expectKeyRejected(await post(user, key));
      expect(await listAll(user)).toEqual([]);
    },
  );

  it('when the key is 255 printable ASCII characters, then it is accepted', async () => {
    const user = await createUserAndToken();
    const key = `${'~ !'.repeat(85)}`;
    expect(key).toHaveLength(255);
    const first = await post(user, key);
    expect(first.statusCode).toBe(201);
    expect(outcome(await post(user, key))).toEqual(outcome(first));
  });

  it('when a request with a key fails validation, then the key stays unused', async () => {
    const user = await createUserAndToken();
    const key = newKey();
    expect((await post(user, key, { title: '' })).statusCode).toBe(422);
    const created = await post(user, key, { title: 'Valid now' });
    expect(created.statusCode).toBe(201);
    expect(created.headers['idempotent-replayed']).toBeUndefined();
  });

  it('when the OpenAPI document is read, then POST …/tasks declares the Idempotency-Key header', async () => {
    const response = await ctx.app.inject({ url: '/openapi.json' });
    const doc = response.json<{
      paths: Record<string, { post?: { parameters?: { in: string; name: string }[] } }>;
    }>();
    for (const path of ['/api/tasks', '/api/{user_id}/tasks']) {
      const parameters = doc.paths[path]?.post?.parameters ?? [];
      expect(parameters).toContainEqual(
        expect.objectContaining({ in: 'header', name: 'idempotency-key' }),
      );
    }
  });

  it('when a browser preflights a POST with Idempotency-Key, then CORS allows the header', async () => {
    const response = await ctx.app.inject({
      method: 'OPTIONS',
      url: '/api/tasks',
      headers: {
        origin: 'http://localhost:3000',
        'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization,content-type,idempotency-key',
      },
    });
    expect(String(response.headers['access-control-allow-headers']).toLowerCase()).toContain(
      'idempotency-key',
    );
  });
});
