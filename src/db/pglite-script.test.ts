import { PGlite } from '@electric-sql/pglite';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isDatabaseUnavailable, sqlState } from './errors.js';
import { pgliteScriptRunner } from './pglite-script.js';
import { textLiteral } from './with-user.js';

/**
 * The PGlite script runner (pglite-script.ts) reads PostgreSQL's answer itself instead of
 * through `PGlite.exec`: these tests hold it to what `exec` answers, and to the locks and
 * errors `exec` gives. A bare in-memory PGlite, whatever database the rest of the run uses.
 */
let client: PGlite;
let runScript: (script: string) => Promise<Record<string, unknown>[][]>;

/** Each statement's rows as `exec` answers them: what the runner must match. */
async function execRows(script: string) {
  return (await client.exec(script)).map((result) => result.rows);
}

beforeAll(async () => {
  client = new PGlite();
  runScript = pgliteScriptRunner(client);
  await client.exec(
    'create table note (id int primary key, body text, done boolean, at timestamptz)',
  );
});
afterAll(() => client.close());

describe('PGlite script runner', () => {
  it('when a script mixes settings, empty results and typed columns, then each statement answers the rows exec answers', async () => {
    const script = [
      "set local timezone = 'UTC'",
      'select 1::int2 as small, 2::int4 as medium, 3::int8 as big, 1.5::float8 as float',
      "select true as yes, false as no, null::text as nothing, 'x'::varchar as label",
      "select '2026-12-07 10:11:12.345678+00'::timestamptz as at, '12.50'::numeric as amount",
      `select '{"a":[1,2]}'::json as doc, '{"b":true}'::jsonb as binary_doc, array[1,2]::int[] as list`,
      'select * from note where false',
      "select g as n, repeat('é', g) as accents from generate_series(1, 3) as g",
    ].join(';\n');

    const answered = await runScript(script);

    expect(answered).toEqual(await execRows(script));
    expect(answered).toHaveLength(7);
    expect(answered[1]).toEqual([{ small: 1, medium: 2, big: 3, float: 1.5 }]);
    expect(answered[2]).toEqual([{ yes: true, no: false, nothing: null, label: 'x' }]);
  });

  it('when any text travels through a literal and back, then it comes back exactly as exec reads it', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.string({ unit: 'grapheme', maxLength: 40 })), async (texts) => {
        const script = texts.length
          ? texts
              .map((text, i) => `select ${i} as position, ${textLiteral(text)} as text`)
              .join(';')
          : 'select 0 as position';
        const answered = await runScript(script);
        expect(answered).toEqual(await execRows(script));
        expect(answered.map((rows) => rows[0]?.text)).toEqual(texts.length ? texts : [undefined]);
      }),
      { numRuns: 60 },
    );
  });

  it('when an answer is larger than the reused buffer, then every row arrives, and a small answer after it is right too', async () => {
    const big =
      "select g as n, repeat('x', 2000) || g as filler from generate_series(1, 1500) as g";
    const [rows = []] = await runScript(big);
    expect(rows).toHaveLength(1500);
    expect(rows[1499]).toEqual({ n: 1500, filler: `${'x'.repeat(2000)}1500` });
    expect(await runScript("select 'small' as size")).toEqual([[{ size: 'small' }]]);
  });

  it('when a statement fails, then its SQLSTATE is thrown, the script is rolled back, and the next script runs', async () => {
    const failing = runScript(
      "insert into note (id, body) values (1, 'kept?'); select 1 / 0; insert into note (id) values (2)",
    );
    await expect(failing).rejects.toMatchObject({ code: '22012', message: 'division by zero' });
    expect(sqlState(await failing.catch((error: unknown) => error))).toBe('22012');
    expect(await runScript('select count(*)::int as notes from note')).toEqual([[{ notes: 0 }]]);
  });

  it("when another caller's transaction is open, then a script waits for it to end instead of running inside it", async () => {
    let release = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    let inserted = () => {};
    const insertedYet = new Promise<void>((resolve) => (inserted = resolve));
    const transaction = client
      .transaction(async (tx) => {
        await tx.exec("insert into note (id, body) values (10, 'uncommitted')");
        inserted();
        await held;
        await tx.rollback();
      })
      .catch(() => undefined);
    await insertedYet;

    let settled = false;
    const counted = runScript('select count(*)::int as notes from note').finally(() => {
      settled = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(settled).toBe(false);
    release();
    await transaction;
    // Inside the open transaction (the same session) it would have counted the uncommitted row.
    expect(await counted).toEqual([[{ notes: 0 }]]);
  });

  it('when the database is closed, then a script is refused as the database being unavailable', async () => {
    const closing = new PGlite();
    const runOnClosed = pgliteScriptRunner(closing);
    expect(await runOnClosed('select 1 as one')).toEqual([[{ one: 1 }]]);
    await closing.close();
    const refused = await runOnClosed('select 1 as one').catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(Error);
    expect(isDatabaseUnavailable(refused)).toBe(true);
  });
});
