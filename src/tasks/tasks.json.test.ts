import { sql } from 'drizzle-orm';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTask,
  createUserAndToken,
  startTestApp,
  type TaskBody,
  type TestContext,
  type TestUser,
} from '../../test/helpers.js';
import { task as taskTable } from '../db/schema.js';
import { isoTimeOfTimestamptz, taskJson } from './tasks.repository.js';
import { taskResponse } from './tasks.schemas.js';

/**
 * The routes send JSON the repository writes by hand from the row (taskJson), not through a
 * serializer: every field must still be exactly what the contract says.
 */
let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

async function getTask(user: TestUser, id: number) {
  const response = await ctx.app.inject({ url: `/api/tasks/${id}`, headers: user.headers });
  expect(response.statusCode).toBe(200);
  expect(response.headers['content-type']).toBe('application/json; charset=utf-8');
  return response.json<TaskBody>();
}

/** A task stored with the given timestamp, straight into the table. */
async function storedAt(user: TestUser, timestamp: string): Promise<number> {
  await createTask(ctx.app, user); // the user row
  const [row] = await ctx.database.handle.db
    .insert(taskTable)
    .values({
      userId: user.id,
      title: 'timed',
      createdAt: sql`${timestamp}::timestamptz`,
      updatedAt: sql`${timestamp}::timestamptz`,
    })
    .returning({ id: taskTable.id });
  if (!row) throw new Error('no row');
  return row.id;
}

describe('task JSON', () => {
  it('when titles and descriptions hold quotes, backslashes, control characters and emoji, then they come back unchanged', async () => {
    const user = await createUserAndToken();
    const title = 'He said "hi" \\ o/ \t tab\nnewline \u0001 \u2028 😀 <b>&amp;</b>';
    const description = 'C:\\path\\to "file" \r\n end';
    const created = await createTask(ctx.app, user, { title, description });
    expect(created.title).toBe(title.trim());
    expect(created.description).toBe(description);
    const fetched = await getTask(user, created.id);
    expect(fetched).toEqual(created);
    expect(taskResponse.parse(fetched)).toEqual(fetched);
  });

  it('when a task is answered, then its fields come in the contract order with the right types', async () => {
    const user = await createUserAndToken();
    const created = await createTask(ctx.app, user, { title: 'Order' });
    const response = await ctx.app.inject({
      url: `/api/tasks/${created.id}`,
      headers: user.headers,
    });
    expect(Object.keys(response.json<TaskBody>())).toEqual([
      'id',
      'user_id',
      'title',
      'description',
      'completed',
      'created_at',
      'updated_at',
    ]);
    expect(response.json<TaskBody>()).toMatchObject({ description: null, completed: false });
    expect(typeof created.id).toBe('number');
  });

  it('when a timestamp has microseconds, then it is answered truncated to milliseconds with Z', async () => {
    const user = await createUserAndToken();
    const id = await storedAt(user, '2026-01-02 03:04:05.999999+00');
    const fetched = await getTask(user, id);
    expect(fetched.created_at).toBe('2026-01-02T03:04:05.999Z');
    expect(fetched.updated_at).toBe('2026-01-02T03:04:05.999Z');
  });

  it('when a timestamp is on a whole second, or in another zone, then it is answered in UTC with .000', async () => {
    const user = await createUserAndToken();
    const whole = await getTask(user, await storedAt(user, '1999-12-31 23:59:59+00'));
    expect(whole.created_at).toBe('1999-12-31T23:59:59.000Z');
    const zoned = await getTask(user, await storedAt(user, '2026-06-30 22:30:00.5-02'));
    expect(zoned.created_at).toBe('2026-07-01T00:30:00.500Z');
  });

  it('when a task is created, then its timestamps are the database values as toISOString writes them', async () => {
    const user = await createUserAndToken();
    const created = await createTask(ctx.app, user);
    const result = await ctx.database.handle.db.execute(
      sql`select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as iso from task where id = ${created.id}`,
    );
    const rows: unknown =
      typeof result === 'object' && result !== null ? Reflect.get(result, 'rows') : undefined;
    expect(rows).toEqual([{ iso: created.created_at }]);
    expect(created.updated_at).toBe(created.created_at);
  });

  it('when a row is malformed, then taskJson refuses it rather than answer broken JSON', () => {
    const row = {
      id_text: '1',
      user_id: 'u',
      title: 't',
      description: null,
      completed: false,
      created_at: '1970-01-01 00:00:00+00',
      updated_at: '1970-01-01 00:00:00+00',
    };
    expect(JSON.parse(taskJson(row))).toEqual({
      id: 1,
      user_id: 'u',
      title: 't',
      description: null,
      completed: false,
      created_at: '1970-01-01T00:00:00.000Z',
      updated_at: '1970-01-01T00:00:00.000Z',
    });
    expect(() => taskJson({ ...row, id_text: '1, "x": 2' })).toThrow();
    expect(() => taskJson({ ...row, completed: 'true' })).toThrow();
    expect(() => taskJson({ ...row, title: 5 })).toThrow();
    expect(() => taskJson({ ...row, created_at: 0 })).toThrow();
    expect(() => taskJson({ ...row, updated_at: new Date(0) })).toThrow();
  });
});

/** What PostgreSQL writes for `ms` (plus `micros`) in a session `offsetSeconds` east of UTC. */
function postgresText(ms: number, micros: number, offsetSeconds: number): string {
  const local = new Date(ms + offsetSeconds * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const fraction = `${local.slice(20, 23)}${String(micros).padStart(3, '0')}`.replace(/0+$/, '');
  const size = Math.abs(offsetSeconds);
  const [h, m, sec] = [Math.floor(size / 3600), Math.floor(size / 60) % 60, size % 60];
  const two = (value: number) => String(value).padStart(2, '0');
  const offset =
    `${offsetSeconds < 0 ? '-' : '+'}${two(h)}` +
    (m !== 0 || sec !== 0 ? `:${two(m)}` : '') +
    (sec !== 0 ? `:${two(sec)}` : '');
  return `${local.slice(0, 10)} ${local.slice(11, 19)}${fraction === '' ? '' : `.${fraction}`}${offset}`;
}

describe('isoTimeOfTimestamptz', () => {
  it('when given any instant from 1970 to 9999 in any session time zone, then it writes what toISOString writes, truncated to the millisecond', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 253_402_300_799_999 - 16 * 3_600_000 }),
        fc.integer({ min: 0, max: 999 }),
        fc.oneof(
          fc.constant(0),
          fc.integer({ min: -15 * 60, max: 15 * 60 }).map((minutes) => minutes * 60),
          fc.integer({ min: -15 * 3600, max: 15 * 3600 }),
        ),
        (ms, micros, offsetSeconds) => {
          const text = postgresText(ms, micros, offsetSeconds);
          expect(isoTimeOfTimestamptz(text)).toBe(new Date(ms).toISOString());
        },
      ),
      { numRuns: 20_000 },
    );
    expect(isoTimeOfTimestamptz('2026-01-02 03:04:05.999999+00')).toBe('2026-01-02T03:04:05.999Z');
    expect(isoTimeOfTimestamptz('2026-06-30 22:30:00.5-02')).toBe('2026-07-01T00:30:00.500Z');
    expect(isoTimeOfTimestamptz('1883-11-18 12:03:58+00:53:28')).toBe('1883-11-18T11:10:30.000Z');
  });

  it('when given another DateStyle, an era, a year past 9999 or no text, then it refuses', () => {
    for (const value of [
      'Wed Dec 02 04:58:35.123456 2026 UTC',
      '02.12.2026 04:58:35.123456 UTC',
      '2026-12-02T04:58:35.123Z',
      '0044-03-15 12:00:00+00 BC',
      '10000-01-01 00:00:00+00',
      'infinity',
      0,
      new Date(0),
      null,
    ]) {
      expect(() => isoTimeOfTimestamptz(value), String(value)).toThrow(/malformed/);
    }
  });

  it('when the session is in another time zone, then a task read through runScript is still answered in UTC', async () => {
    const user = await createUserAndToken();
    const created = await createTask(ctx.app, user);
    const [, , rows] = await ctx.database.handle.runScript(
      `set local timezone = 'Asia/Kathmandu'; show timezone; select created_at::text from task where id = ${created.id}`,
    );
    const text: unknown = rows?.[0]?.created_at;
    expect(text).toMatch(/\+05:45$/);
    expect(isoTimeOfTimestamptz(text)).toBe(created.created_at);
  });
});

describe('text that is not well-formed Unicode', () => {
  it('when a title or description holds lone surrogates, then they are stored as U+FFFD on every database', async () => {
    const user = await createUserAndToken();
    const created = await createTask(ctx.app, user, {
      title: 'Z\udc00\ud800 end',
      description: 'a\ud83d b',
    });
    expect(created.title).toBe('Z\ufffd\ufffd end');
    expect(created.description).toBe('a\ufffd b');
    const updated = await ctx.app.inject({
      method: 'PUT',
      url: `/api/tasks/${created.id}`,
      // Escapes in the JSON text itself, as a client would send them.
      headers: { ...user.headers, 'content-type': 'application/json' },
      payload: '{"description":"Z\\u0338\\udc00\\ud800"}',
    });
    expect(updated.statusCode).toBe(200);
    expect(updated.json<TaskBody>().description).toBe('Z\u0338\ufffd\ufffd');
  });
});
