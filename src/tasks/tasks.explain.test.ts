import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestContext } from '../../test/helpers.js';
import { type BoundStatement, inlined, withUser } from '../db/with-user.js';
import { createTasksRepository } from './tasks.repository.js';
import type { ListTasksQuery } from './tasks.schemas.js';

/**
 * Cost as work grows (issue 6, part 5): every list query the repository issues for a user
 * with 100 000 tasks is served by one of the task_user_* indexes, never by a sequential scan
 * of `task`, and its X-Total-Count by the user's counter row. The SQL is the repository's own
 * (listStatements), explained as it runs: as the application role, with row-level security
 * in force, both as a script sends it (values written in) and as the generic plan of its
 * prepared statement (which node-postgres runs once PostgreSQL settles on one).
 */
const BIG_USER_TASKS = 100_000;
const OTHER_USERS = 5;
const OTHER_USER_TASKS = 200;

interface PlanNode {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  Plans?: PlanNode[];
}

let ctx: TestContext;
const bigUser = `explain_${randomUUID()}`;

beforeAll(async () => {
  ctx = await startTestApp();
  const { db } = ctx.database.handle;
  const otherPrefix = `${bigUser}_other_`;
  await db.execute(sql`
    insert into "user" (id, name)
    select ${bigUser}, 'explain test user'
    union all
    select ${otherPrefix} || g, 'explain test user' from generate_series(0, ${OTHER_USERS - 1}) as g`);
  // One statement: 100 000 tasks for the big user, then a few hundred for each other user.
  // As the connection user (a superuser), which row-level security does not confine.
  await db.execute(sql`
    insert into task (user_id, title, description, completed, created_at, updated_at)
    select case when g <= ${BIG_USER_TASKS} then ${bigUser}
                else ${otherPrefix} || (g % ${OTHER_USERS}) end,
           'Task ' || g,
           case when g % 4 = 0 then 'described' end,
           g % 3 = 0,
           now() - g * interval '1 second',
           now()
    from generate_series(1, ${BIG_USER_TASKS + OTHER_USERS * OTHER_USER_TASKS}) as g`);
  await db.execute(sql`analyze task`);
});
afterAll(() => ctx.close());

function planNodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(planNodes)];
}

/**
 * EXPLAIN in a transaction set up exactly as the repository's (role and user id), with
 * sequential scans priced out: the planner then still falls back to one when no index can
 * serve the query, which is what this test is after. Left free, it rightly prefers a
 * sequential scan to count a user who owns nearly every row of a small test table, which
 * says nothing about a production table where that user is one of thousands.
 */
async function explain(statement: string, setup: string[] = [], cleanup: string[] = []) {
  const result = await withUser(ctx.database.handle.db, bigUser, async (tx) => {
    await tx.execute(sql`select set_config('enable_seqscan', 'off', true)`);
    for (const step of setup) await tx.execute(sql.raw(step));
    const explained = await tx.execute(sql.raw(`explain (format json) ${statement}`));
    for (const step of cleanup) await tx.execute(sql.raw(step));
    return explained;
  });
  // Both drivers answer an object whose `rows` are the plan's one row.
  const rows: unknown =
    typeof result === 'object' && result !== null && !Array.isArray(result)
      ? Reflect.get(result, 'rows')
      : result;
  if (!Array.isArray(rows)) throw new Error('EXPLAIN returned no rows');
  const [row] = rows;
  const raw: unknown = typeof row === 'object' && row !== null ? Object.values(row)[0] : undefined;
  const plans = (typeof raw === 'string' ? JSON.parse(raw) : raw) as { Plan: PlanNode }[];
  const [first] = plans;
  if (!first) throw new Error('EXPLAIN returned no plan');
  return planNodes(first.Plan);
}

let prepared = 0;

/** The plan PostgreSQL keeps for the statement prepared, whatever the values. */
function explainGeneric(statement: BoundStatement): Promise<PlanNode[]> {
  const name = `explain_generic_${++prepared}`;
  const placeholders = statement.values.map((_value, i) => `$${i + 1}`).join(', ');
  return explain(
    inlined({ ...statement, text: `execute ${name}(${placeholders})` }),
    [`prepare ${name} as ${statement.text}`, 'set local plan_cache_mode = force_generic_plan'],
    // PREPARE is not transactional: without this it would stay on the connection.
    [`deallocate ${name}`],
  );
}

/** The statements (page and total) the repository sends for this user and query. */
function listStatements(query: ListTasksQuery) {
  return createTasksRepository(ctx.database.handle).listStatements(bigUser, query);
}

const PAGINGS: { name: string; paging: Pick<ListTasksQuery, 'limit' | 'offset'> }[] = [
  { name: 'no limit or offset', paging: { limit: undefined, offset: 0 } },
  { name: 'limit=50', paging: { limit: 50, offset: 0 } },
  { name: 'limit=50&offset=5000', paging: { limit: 50, offset: 5_000 } },
];

const SHAPES = (['all', 'pending', 'completed'] as const).flatMap((status) =>
  (['created', 'title'] as const).flatMap((sort) =>
    PAGINGS.map(({ name, paging }) => ({
      name: `status=${status}&sort=${sort}, ${name}`,
      query: { status, sort, ...paging },
    })),
  ),
);

const PLANS = [
  { plan: 'as a script', of: (statement: BoundStatement) => explain(inlined(statement)) },
  { plan: 'prepared (generic plan)', of: explainGeneric },
];

describe(`list queries at ${BIG_USER_TASKS} tasks`, () => {
  it.each(SHAPES.flatMap((shape) => PLANS.map((plan) => ({ ...shape, ...plan }))))(
    'when the user with 100 000 tasks lists with $name ($plan), then the page uses a task_user_* index, the total its counter row, and neither scans task',
    async ({ query, of }) => {
      const { page, total } = listStatements(query);
      {
        const nodes = await of(page);
        const plan = `${page.text}\n${nodes
          .map((node) =>
            [node['Node Type'], node['Relation Name'], node['Index Name']]
              .filter(Boolean)
              .join(' '),
          )
          .join('\n')}`;
        const seqScans = nodes.filter(
          (node) => node['Node Type'] === 'Seq Scan' && node['Relation Name'] === 'task',
        );
        expect(seqScans, plan).toEqual([]);
        const indexes = nodes.flatMap((node) => node['Index Name'] ?? []);
        expect(
          indexes.some((name) => name.startsWith('task_user_')),
          plan,
        ).toBe(true);
        // The index gives the page its order, so the scan stops at LIMIT: nothing is sorted.
        expect(
          nodes.filter((node) => node['Node Type'].includes('Sort')),
          plan,
        ).toEqual([]);
      }
      // X-Total-Count: one primary-key read of the user's counter, never a count of tasks.
      const nodes = await of(total);
      const plan = `${total.text}\n${JSON.stringify(nodes)}`;
      expect(
        nodes.filter((node) => node['Relation Name'] === 'task'),
        plan,
      ).toEqual([]);
      expect(
        nodes.map((node) => node['Index Name']),
        plan,
      ).toContain('task_count_pkey');
    },
  );
});
