import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresDatabase, POSTGRES_ADMIN_URL } from '../../test/helpers.js';
import {
  expectFailureRollsBackTheCall,
  expectSettingsHoldWithinTheCall,
  expectStatementsKeepOneGenericPlan,
} from '../../test/prepared-statements.js';
import { createDatabase, type DatabaseHandle } from './client.js';
import type { PreparedStatement } from './prepared-pipeline.js';
import { createTasksRepository } from '../tasks/tasks.repository.js';

/**
 * DatabaseHandle.runPrepared on node-postgres: named statements, one round trip, one implicit
 * transaction (PGlite's own way is pglite-prepared.test.ts).
 * These run on a real PostgreSQL in every CI pass, connected directly: what a connection
 * keeps between pipelines is the subject.
 */
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;
beforeAll(async () => {
  database = await createPostgresDatabase(POSTGRES_ADMIN_URL);
  const handle = createDatabase({ kind: 'postgres', url: database.directUrl, poolMax: 1 }, () => {
    return undefined;
  });
  try {
    await handle.migrate();
  } finally {
    await handle.close();
  }
});
afterAll(() => database.drop());

const WHO: PreparedStatement = {
  name: 'test_who',
  text: "select current_user as role, coalesce(current_setting('app.user_id', true), '') as setting",
};
const DIVIDE: PreparedStatement = { name: 'test_divide', text: 'select 1 / $1::int as quotient' };
const PREPARED = 'select name from pg_prepared_statements order by name';

/** One connection, so that what a pipeline left behind is seen by the next statement. */
async function withSingleConnection(
  check: (single: DatabaseHandle, errors: Error[]) => Promise<void>,
) {
  const url = database.directUrl;
  const errors: Error[] = [];
  const single = createDatabase({ kind: 'postgres', url, poolMax: 1 }, (error) =>
    errors.push(error),
  );
  try {
    await check(single, errors);
  } finally {
    await single.close();
  }
}

describe('prepared pipeline (PostgreSQL)', () => {
  it('when the settings come first, then the next statement runs as the app role for that user, and nothing outlives the pipeline', async () => {
    await withSingleConnection((single) =>
      expectSettingsHoldWithinTheCall(single, 'test_settings'),
    );
  });

  it('when a statement fails, then the whole pipeline is rolled back and the connection serves the next one', async () => {
    await withSingleConnection((single) => expectFailureRollsBackTheCall(single, 'test_rollback'));
  });

  it('when a statement runs after the settings again and again, then it keeps one generic plan and is never planned again', async () => {
    await withSingleConnection((single) =>
      expectStatementsKeepOneGenericPlan(single, 'test_generic'),
    );
  });

  it('when statements run again on the same connection, then they are parsed once', async () => {
    await withSingleConnection(async (single) => {
      for (let round = 0; round < 3; round++) {
        await single.runPrepared([
          { statement: WHO, values: [] },
          { statement: DIVIDE, values: ['1'] },
        ]);
      }
      const [prepared] = await single.runScript(PREPARED);
      expect(prepared).toEqual([{ name: 'test_divide' }, { name: 'test_who' }]);
    });
  });

  it('when the connection lost its statements (as behind a transaction pooler), then it declines from then on and says so once', async () => {
    await withSingleConnection(async (single, errors) => {
      expect(await single.runPrepared([{ statement: WHO, values: [] }])).toBeDefined();
      await single.runScript('deallocate all');
      expect(await single.runPrepared([{ statement: WHO, values: [] }])).toBeUndefined();
      expect(await single.runPrepared([{ statement: DIVIDE, values: ['1'] }])).toBeUndefined();
      expect(errors.map((error) => error.message)).toEqual([
        expect.stringContaining('do not keep prepared statements'),
      ]);
      // Declined without trying: nothing was parsed again.
      expect((await single.runScript(PREPARED))[0]).toEqual([]);
    });
  });

  it("when a pooler loses the create's statements, then that create is sent again as a script and succeeds", async () => {
    await withSingleConnection(async (single, errors) => {
      await single.runScript(`insert into "user" (id, name) values ('pipeline-owner', 'owner')`);
      const tasks = createTasksRepository(single);
      const first = await tasks.create('pipeline-owner', { title: 'prepared' });
      await single.runScript('deallocate all');
      const second = await tasks.create('pipeline-owner', {
        title: 'as a script',
        description: 'd',
      });
      expect(JSON.parse(second.body)).toMatchObject({
        id: first.id + 1,
        user_id: 'pipeline-owner',
        title: 'as a script',
        description: 'd',
      });
      expect(errors).toHaveLength(1);
      const [rows] = await single.runScript(
        "select title from task where user_id = 'pipeline-owner' order by id",
      );
      expect(rows).toEqual([{ title: 'prepared' }, { title: 'as a script' }]);
    });
  });

  it('when one name is given two texts, then it refuses rather than run the wrong statement', async () => {
    await withSingleConnection(async (single) => {
      await single.runPrepared([{ statement: WHO, values: [] }]);
      await expect(
        single.runPrepared([{ statement: { name: WHO.name, text: 'select 2' }, values: [] }]),
      ).rejects.toThrow(/two different texts/);
    });
  });

  it('when DATABASE_PREPARED_STATEMENTS is false, then it declines without touching the database', async () => {
    const off = createDatabase(
      { kind: 'postgres', url: database.directUrl, poolMax: 1, preparedStatements: false },
      () => undefined,
    );
    try {
      expect(await off.runPrepared([{ statement: WHO, values: [] }])).toBeUndefined();
      expect((await off.runScript(PREPARED))[0]).toEqual([]);
    } finally {
      await off.close();
    }
  });
});
