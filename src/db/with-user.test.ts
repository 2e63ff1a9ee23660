import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signToken, startTestApp, type TestContext } from '../../test/helpers.js';
import { task, user } from './schema.js';
import { APP_ROLE, inlined, runAsUser, withUser } from './with-user.js';

let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

/** A user id made of what a hand-built SQL literal would get wrong. */
const awkwardId = () =>
  `o'brien\\'); select set_config('app.user_id', 'x', true); --${randomUUID()}`;

async function settingsIn(userId: string) {
  return withUser(ctx.app.db, userId, async (tx) => {
    const result = await tx.execute(
      sql`select current_user as role, current_setting('app.user_id', true) as user_id`,
    );
    // Both drivers answer an object with `rows`.
    const rows: unknown =
      typeof result === 'object' && result !== null ? Reflect.get(result, 'rows') : undefined;
    return Array.isArray(rows) ? (rows[0] as { role: string; user_id: string }) : undefined;
  });
}

describe('withUser', () => {
  it('when the user id holds quotes, backslashes and SQL, then the transaction acts for exactly that id', async () => {
    const id = awkwardId();
    expect(await settingsIn(id)).toEqual({ role: APP_ROLE, user_id: id });
  });

  it('when the token subject holds quotes and backslashes, then its tasks are created and listed as its own', async () => {
    const id = awkwardId();
    const headers = { authorization: `Bearer ${await signToken(id)}` };
    const created = await ctx.app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers,
      payload: { title: 'quoted' },
    });
    expect(created.statusCode).toBe(201);
    const listed = await ctx.app.inject({ url: '/api/tasks', headers });
    expect(listed.json()).toEqual([expect.objectContaining({ user_id: id, title: 'quoted' })]);
    expect(listed.headers['x-total-count']).toBe('1');
  });

  it('when the work throws, then its writes are rolled back and the next transaction works', async () => {
    const id = `user_${randomUUID()}`;
    await ctx.app.db.insert(user).values({ id, name: '', email: null });
    const failure = new Error('the work failed');
    await expect(
      withUser(ctx.app.db, id, async (tx) => {
        await tx.insert(task).values({ userId: id, title: 'rolled back' });
        throw failure;
      }),
    ).rejects.toBe(failure);

    const rows = await withUser(ctx.app.db, id, (tx) => tx.select().from(task));
    expect(rows).toEqual([]);
    expect(await settingsIn(id)).toEqual({ role: APP_ROLE, user_id: id });
  });

  it('when the user id is empty, then withUser and runAsUser refuse before any statement runs', async () => {
    await expect(withUser(ctx.app.db, '', async () => 'ran')).rejects.toThrow(/user id is empty/);
    await expect(runAsUser(ctx.database.handle, '', ['select 1'])).rejects.toThrow(
      /user id is empty/,
    );
  });
});

describe('inlined (the script form of a bound statement)', () => {
  it('when values hold quotes, backslashes or placeholder-like text, then each becomes one literal at its placeholder only', () => {
    const statement = {
      name: 'test_inlined',
      text: 'select $1, $2, $3, $4, $1',
      values: ["it's $2 \\ done", 5, true, null],
    };
    expect(inlined(statement)).toBe(
      // escapeLiteral writes a string with a backslash as " E'…'", space included.
      "select  E'it''s $2 \\\\ done', 5, true, null,  E'it''s $2 \\\\ done'",
    );
  });

  it('when a placeholder has no value, or a value is not a safe integer or NUL-free text, then it refuses', () => {
    expect(() => inlined({ name: 'x', text: 'select $2', values: ['a'] })).toThrow(
      /no value for \$2/,
    );
    expect(() => inlined({ name: 'x', text: 'select $1', values: [1.5] })).toThrow();
    expect(() => inlined({ name: 'x', text: 'select $1', values: ['a\u0000b'] })).toThrow(/NUL/);
  });
});
