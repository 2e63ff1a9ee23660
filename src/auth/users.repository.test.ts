import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createUserAndToken,
  signToken,
  startTestApp,
  type TestContext,
  type TestUser,
} from '../../test/helpers.js';
import { user } from '../db/schema.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

function userRows(id: string) {
  return ctx.database.handle.db.select().from(user).where(eq(user.id, id));
}

function listTasks(who: TestUser) {
  return ctx.app.inject({ url: '/api/tasks', headers: who.headers });
}

async function tokenWithOnlySub(): Promise<TestUser> {
  const id = `user_${randomUUID()}`;
  const token = await signToken(id);
  return { id, token, headers: { authorization: `Bearer ${token}` } };
}

describe('users named by tokens (SPEC §3)', () => {
  it('when a token names a user never seen, then its row is created from the claims', async () => {
    const email = `${randomUUID()}@example.test`;
    const newcomer = await createUserAndToken({ email, name: 'Ada Lovelace' });
    expect(await userRows(newcomer.id)).toEqual([]);

    expect((await listTasks(newcomer)).statusCode).toBe(200);

    const rows = await userRows(newcomer.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ id: newcomer.id, email, name: 'Ada Lovelace' });
  });

  it('when a token carries only "sub", then it works and the row has a null email', async () => {
    const bare = await tokenWithOnlySub();
    const response = await ctx.app.inject({
      method: 'POST',
      url: `/api/${bare.id}/tasks`,
      headers: bare.headers,
      payload: { title: 'From a sub-only token' },
    });
    expect(response.statusCode).toBe(201);
    expect(response.json()).toMatchObject({ user_id: bare.id });

    const rows = await userRows(bare.id);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.email).toBeNull();
  });

  it("when two users' tokens carry the same email, then both work and the second has no email", async () => {
    const email = `${randomUUID()}@example.test`;
    const first = await createUserAndToken({ email });
    const second = await createUserAndToken({ email });

    expect((await listTasks(first)).statusCode).toBe(200);
    const created = await ctx.app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: second.headers,
      payload: { title: 'Second user task' },
    });
    expect(created.statusCode).toBe(201);

    expect((await userRows(first.id))[0]?.email).toBe(email);
    const secondRows = await userRows(second.id);
    expect(secondRows).toHaveLength(1);
    expect(secondRows[0]?.email).toBeNull();
  });

  it('when 20 first requests for one new user arrive at once, then all succeed and one row exists', async () => {
    const newcomer = await createUserAndToken({ email: `${randomUUID()}@example.test` });
    const responses = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        i % 2 === 0
          ? listTasks(newcomer)
          : ctx.app.inject({
              method: 'POST',
              url: `/api/${newcomer.id}/tasks`,
              headers: newcomer.headers,
              payload: { title: `Task ${i}` },
            }),
      ),
    );
    expect(responses.map((response) => response.statusCode)).toEqual(
      Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? 200 : 201)),
    );
    expect(await userRows(newcomer.id)).toHaveLength(1);
  });

  it('when a user is already known, then further requests do not write the user table', async () => {
    const db = ctx.database.handle.db;
    const insert = vi.spyOn(db, 'insert');
    const userInserts = () => insert.mock.calls.filter(([table]) => table === user).length;
    try {
      const newcomer = await createUserAndToken({ email: `${randomUUID()}@example.test` });
      expect((await listTasks(newcomer)).statusCode).toBe(200);
      // The spy sees the app's writes: the first request inserted the user.
      expect(userInserts()).toBeGreaterThan(0);

      insert.mockClear();
      // Another token for the same user (new iat/exp) must not write either.
      const again = await signToken(newcomer.id, { claims: { name: 'Renamed' } });
      expect((await listTasks(newcomer)).statusCode).toBe(200);
      expect(
        (await ctx.app.inject({ url: '/api/tasks', headers: { authorization: `Bearer ${again}` } }))
          .statusCode,
      ).toBe(200);
      expect(userInserts()).toBe(0);
    } finally {
      insert.mockRestore();
    }
  });
});
