import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from './client.js';
import {
  expectFailureRollsBackTheCall,
  expectSettingsHoldWithinTheCall,
  expectStatementsKeepOneGenericPlan,
} from '../../test/prepared-statements.js';
import type { PreparedStatement } from './prepared-pipeline.js';

/**
 * DatabaseHandle.runPrepared on PGlite (pglite-prepared.ts): statements prepared once in its
 * session, executed as one script. PGlite in memory, whatever database the rest of the run
 * uses: this is the embedded database's own path. One database for the file; each test uses
 * statement names of its own.
 */
let handle: DatabaseHandle;
beforeAll(async () => {
  handle = createDatabase({ kind: 'pglite', dir: 'memory://' }, () => undefined);
  await handle.migrate();
});
afterAll(() => handle.close());

/** Names of the statements prepared in the session that start with `prefix`. */
async function preparedNames(prefix: string): Promise<unknown[]> {
  const [rows = []] = await handle.runScript(
    `select name from pg_prepared_statements where name like '${prefix}%' order by name`,
  );
  return rows.map((row) => row.name);
}

describe('prepared statements (PGlite)', () => {
  it('when the settings come first, then the next statement runs as the app role for that user, and nothing outlives the call', async () => {
    await expectSettingsHoldWithinTheCall(handle, 'test_settings');
  });

  it('when values hold quotes, backslashes and NULL, then each reaches its parameter unchanged and typed by it', async () => {
    const echo: PreparedStatement = {
      name: 'test_values_echo',
      text: 'select $1::text as quoted, $2::text as missing, $3::int + 1 as next, not $4::boolean as flipped',
    };
    const [rows] =
      (await handle.runPrepared([
        { statement: echo, values: ["it's a \\ here; drop table task; --", null, '41', 'true'] },
      ])) ?? [];
    expect(rows).toEqual([
      { quoted: "it's a \\ here; drop table task; --", missing: null, next: 42, flipped: false },
    ]);
  });

  it('when a statement fails, then the whole call is rolled back and the next one runs', async () => {
    await expectFailureRollsBackTheCall(handle, 'test_rollback');
  });

  it('when a statement runs after the settings again and again, then it keeps one generic plan and is never planned again', async () => {
    await expectStatementsKeepOneGenericPlan(handle, 'test_generic');
  });

  it('when statements run again, and when several requests race for a new one, then each is prepared once', async () => {
    const one: PreparedStatement = { name: 'test_once_one', text: 'select 1 as one' };
    const two: PreparedStatement = { name: 'test_once_two', text: 'select $1::int * 2 as two' };
    const calls = Array.from({ length: 5 }, (_, n) =>
      handle.runPrepared([
        { statement: one, values: [] },
        { statement: two, values: [String(n)] },
      ]),
    );
    const answers = await Promise.all(calls);
    expect(answers.map((answer) => answer?.[1])).toEqual(
      [0, 1, 2, 3, 4].map((n) => [{ two: n * 2 }]),
    );
    await handle.runPrepared([{ statement: two, values: ['5'] }]);
    expect(await preparedNames('test_once_')).toEqual(['test_once_one', 'test_once_two']);
  });

  it('when the session lost its statements, then they are prepared again and the call succeeds', async () => {
    const lost: PreparedStatement = { name: 'test_lost_answer', text: 'select $1::int as answer' };
    await handle.runPrepared([{ statement: lost, values: ['1'] }]);
    await handle.runScript('deallocate all');

    const [answer] = (await handle.runPrepared([{ statement: lost, values: ['42'] }])) ?? [];
    expect(answer).toEqual([{ answer: 42 }]);
    expect(await preparedNames('test_lost_')).toEqual(['test_lost_answer']);
  });

  it('when one name is given two texts, then it refuses rather than run the wrong statement', async () => {
    const first: PreparedStatement = { name: 'test_twice', text: 'select 1 as n' };
    await handle.runPrepared([{ statement: first, values: [] }]);
    await expect(
      handle.runPrepared([{ statement: { name: first.name, text: 'select 2 as n' }, values: [] }]),
    ).rejects.toThrow(/two different texts/);
  });

  it('when a name is not a plain identifier, then nothing is sent', async () => {
    const injected: PreparedStatement = {
      name: 'test_bad as select 1; drop table task; --',
      text: 'select 1',
    };
    await expect(handle.runPrepared([{ statement: injected, values: [] }])).rejects.toThrow(
      /not a statement name/,
    );
    const [tables] = await handle.runScript(`select to_regclass('task')::text as task`);
    expect(tables).toEqual([{ task: 'task' }]);
    expect(await preparedNames('test_bad')).toEqual([]);
  });
});
