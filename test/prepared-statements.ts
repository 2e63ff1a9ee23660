import { expect } from 'vitest';
import type { DatabaseHandle } from '../src/db/client.js';
import { sqlState } from '../src/db/errors.js';
import type { PreparedStatement } from '../src/db/prepared-pipeline.js';
import { APP_ROLE, actAsUser } from '../src/db/with-user.js';

/**
 * What DatabaseHandle.runPrepared promises on either database, checked the same way on
 * node-postgres (src/db/prepared-pipeline.test.ts) and PGlite (src/db/pglite-prepared.test.ts).
 * `prefix` starts the names of the statements a check prepares, and the ids of what it writes.
 */

/** The settings made first hold for the rest of the call, and nothing outlives it. */
export async function expectSettingsHoldWithinTheCall(handle: DatabaseHandle, prefix: string) {
  const who: PreparedStatement = {
    name: `${prefix}_who`,
    text: "select current_user as role, coalesce(current_setting('app.user_id', true), '') as setting",
  };
  const [, inside] =
    (await handle.runPrepared([actAsUser(`${prefix}-user`), { statement: who, values: [] }])) ?? [];
  expect(inside).toEqual([{ role: APP_ROLE, setting: `${prefix}-user` }]);
  const [after] = await handle.runScript(who.text);
  expect(after).toEqual([{ role: 'postgres', setting: '' }]);
}

/** A failing statement rolls back the whole call, and the next call runs. */
export async function expectFailureRollsBackTheCall(handle: DatabaseHandle, prefix: string) {
  const insertUser: PreparedStatement = {
    name: `${prefix}_insert_user`,
    text: 'insert into "user" (id, name) values ($1, \'prepared\') returning id',
  };
  const divide: PreparedStatement = {
    name: `${prefix}_divide`,
    text: 'select 1 / $1::int as quotient',
  };
  const userId = `${prefix}-rolled-back`;
  const failing = handle.runPrepared([
    { statement: insertUser, values: [userId] },
    { statement: divide, values: ['0'] },
  ]);
  await expect(failing).rejects.toSatisfy((error) => sqlState(error) === '22012');
  const [rows] = await handle.runScript(`select id from "user" where id = '${userId}'`);
  expect(rows).toEqual([]);
  const [quotient] = (await handle.runPrepared([{ statement: divide, values: ['1'] }])) ?? [];
  expect(quotient).toEqual([{ quotient: 1 }]);
}

/**
 * A statement run after the settings keeps one generic plan from its first execution: never
 * planned again per call, whatever PostgreSQL's comparison of plan costs would choose.
 */
export async function expectStatementsKeepOneGenericPlan(handle: DatabaseHandle, prefix: string) {
  const owner = `${prefix}-user`;
  const tasksAfter: PreparedStatement = {
    name: `${prefix}_tasks_after`,
    text: 'select count(*)::int as tasks from task where user_id = $1 and id > $2',
  };
  const plansOf: PreparedStatement = {
    name: `${prefix}_plans_of`,
    text:
      'select generic_plans::int as generic, custom_plans::int as custom ' +
      'from pg_prepared_statements where name = $1',
  };
  const executions = 8;
  for (let after = 0; after < executions; after++) {
    await handle.runPrepared([
      actAsUser(owner),
      { statement: tasksAfter, values: [owner, String(after)] },
    ]);
  }
  const [, plans] =
    (await handle.runPrepared([
      actAsUser(owner),
      { statement: plansOf, values: [tasksAfter.name] },
    ])) ?? [];
  expect(plans).toEqual([{ generic: executions, custom: 0 }]);
}
