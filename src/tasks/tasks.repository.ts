import { and, eq, sql } from 'drizzle-orm';
import { type DatabaseHandle, rowsOf, type ScriptRows } from '../db/client.js';
import { idempotencyKey } from '../db/schema.js';
import type { PreparedStatement } from '../db/prepared-pipeline.js';
import {
  actAsUser,
  integerLiteral,
  runAsUser,
  textLiteral,
  textParameter,
  withUser,
} from '../db/with-user.js';
import { LIST_CAP, type ListTasksQuery } from './tasks.schemas.js';

export interface NewTask {
  title: string;
  description?: string | null | undefined;
}

export interface TaskChanges {
  title?: string | undefined;
  description?: string | null | undefined;
  completed?: boolean | undefined;
}

/** How long a stored `Idempotency-Key` answers replays; older ones count as new. */
export const IDEMPOTENCY_TTL_HOURS = 24;

/** A response kept with its `Idempotency-Key`, replayed as it was first sent. */
export interface StoredResponse {
  status: number;
  body: Record<string, unknown>;
  location: string | null;
}

export interface IdempotencyClaim {
  key: string;
  /** Hash of the request body: the same key with another body is refused, not replayed. */
  requestHash: string;
}

export type IdempotentCreateResult =
  | { outcome: 'created'; response: StoredResponse }
  | { outcome: 'replayed'; response: StoredResponse }
  | { outcome: 'key-reused-with-other-body' };

export interface TasksRepositoryOptions {
  /**
   * TESTS ONLY — never set by the service. Drops the repository's own `user_id = $1` from
   * every read, update and delete, so that a test can show that row-level security alone
   * still confines every route. Setting it anywhere else removes the first of two walls.
   */
  unsafeOmitOwnerFilter?: boolean;
  /**
   * BENCHMARK ONLY — never set by the service (no configuration reaches it). Sends the routes'
   * statements as the connection user, without the role and user settings, so that
   * `npm run bench` can measure what row-level security costs against the same build with it
   * off (bench/no-rls-server.ts). The repository's own owner filter still applies.
   */
  unsafeSkipRowLevelSecurity?: boolean;
}

/**
 * The key's row vanished between the conflicting insert and the read. Carries SQLSTATE 40001
 * (serialization_failure), which the error handler answers 503 with Retry-After.
 */
class IdempotencyRace extends Error {
  override name = 'IdempotencyRace';
  readonly code = '40001';

  constructor() {
    super('idempotency key disappeared during the request; retry');
  }
}

const idempotencyExpired = sql`${idempotencyKey.createdAt} < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})`;

/**
 * The columns a task is answered from. Timestamps come as they are, in PostgreSQL's text form
 * (runScript keeps them text), and become JSON by string slicing (isoTimeOfTimestamptz):
 * any expression on them costs the database more than the rest of a list. Computing epoch
 * milliseconds in SQL (`floor(extract(epoch from created_at) * 1000)::float8`, two per row)
 * took about a fifth of PostgreSQL's CPU per list request (pgbench, medians of 4 runs: 677 µs
 * against 546 µs per list message).
 */
const TASK_COLUMNS =
  'id::text as id_text, user_id, title, description, completed, created_at, updated_at';

/** The create, where the service may prepare statements (DatabaseHandle.runPrepared). */
const INSERT_TASK: PreparedStatement = {
  name: 'todo_task_insert',
  text: `insert into task (user_id, title, description) values ($1, $2, $3) returning ${TASK_COLUMNS}`,
};

/**
 * PostgreSQL's text form of a timestamptz in DateStyle ISO (which node-postgres and Drizzle
 * assume too): date, time, up to six fraction digits, and the session's UTC offset.
 */
const TIMESTAMPTZ_TEXT =
  /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?$/;

/**
 * A timestamptz's text as toISOString writes the instant: UTC, milliseconds (truncated, as
 * before: the microseconds never round up into the next millisecond), `Z`. A session in UTC
 * (the usual server default, and Neon's) needs only slicing; another zone's offset is
 * subtracted. Anything else (another DateStyle, BC, a year past 9999) is refused.
 */
export function isoTimeOfTimestamptz(value: unknown): string {
  const match = typeof value === 'string' ? TIMESTAMPTZ_TEXT.exec(value) : null;
  if (match === null) {
    throw new Error(`a task timestamp came back malformed (is DateStyle ISO?): ${String(value)}`);
  }
  const [, year = '', month = '', day = '', hours = '', minutes = '', seconds = ''] = match;
  const millis = `${match[7] ?? ''}000`.slice(0, 3);
  const offsetSeconds =
    Number(match[9]) * 3600 + Number(match[10] ?? 0) * 60 + Number(match[11] ?? 0);
  if (offsetSeconds === 0)
    return `${year}-${month}-${day}T${hours}:${minutes}:${seconds}.${millis}Z`;
  const local = new Date(0);
  // setUTCFullYear, unlike Date.UTC, takes years 0–99 as they are.
  local.setUTCFullYear(Number(year), Number(month) - 1, Number(day));
  local.setUTCHours(Number(hours), Number(minutes), Number(seconds), Number(millis));
  const sign = match[8] === '-' ? -1 : 1;
  return new Date(local.getTime() - sign * offsetSeconds * 1000).toISOString();
}

const text = (value: unknown) => {
  if (typeof value !== 'string') throw new Error('a task text column came back malformed');
  return JSON.stringify(value);
};

/**
 * A task row as the JSON the API answers (SPEC §5: the fields of `taskResponse`, in order),
 * written directly: the route sends it as it is, with no object, validation or serializer
 * in between. JSON.stringify escapes the strings.
 */
export function taskJson(row: Record<string, unknown>): string {
  const { id_text: id, completed, description } = row;
  if (typeof id !== 'string' || !/^\d+$/.test(id) || typeof completed !== 'boolean') {
    throw new Error('a task row came back malformed');
  }
  return (
    `{"id":${id},"user_id":${text(row.user_id)},"title":${text(row.title)},` +
    `"description":${description === null ? 'null' : text(description)},` +
    `"completed":${String(completed)},"created_at":"${isoTimeOfTimestamptz(row.created_at)}",` +
    `"updated_at":"${isoTimeOfTimestamptz(row.updated_at)}"}`
  );
}

/** One page of the list: the tasks' JSON texts, in order, and the total for X-Total-Count. */
export interface TaskJsonPage {
  tasks: string[];
  total: number;
}

/** A created task: its id (for the Location header) and its JSON. */
export interface CreatedTaskJson {
  id: number;
  body: string;
}

// Qualified: a bare name in ORDER BY would mean the select list's column of that name first.
const ORDER_BY: Record<ListTasksQuery['sort'], string> = {
  created: 'task.created_at desc, task.id desc',
  title: 'lower(task.title), task.id',
};

/** Which figure of the user's task_count row is the total of each status filter. */
const TOTAL_OF: Record<ListTasksQuery['status'], string> = {
  all: 'total',
  completed: 'completed',
  pending: 'total - completed',
};

function bodyOf(rows: ScriptRows | undefined): string | null {
  const row = rows?.[0];
  return row === undefined ? null : taskJson(row);
}

function bodiesOf(rows: ScriptRows | undefined): string[] {
  return (rows ?? []).map(taskJson);
}

function createdOf(rows: ScriptRows | undefined): CreatedTaskJson {
  const row = rows?.[0];
  if (row === undefined) throw new Error('INSERT ... RETURNING returned no row');
  return { id: Number(row.id_text), body: taskJson(row) };
}

/**
 * Data access for tasks. Every function takes the owner first and puts it in the WHERE
 * clause: a task that is missing and one that belongs to someone else are the same `null`.
 * Every statement also runs as the database role that row-level security confines to that
 * owner's rows (runAsUser, withUser): the second wall, should a WHERE clause ever be wrong.
 *
 * The routes' statements are written out here rather than built by Drizzle per request: they
 * travel with the role and user settings as one message (one round trip, no BEGIN/COMMIT),
 * and their rows become the response's JSON text directly (taskJson). Building them with
 * Drizzle on every request was the largest single cost in the service's own profile. Values
 * are inlined by textLiteral and integerLiteral, which accept only strings without NUL and
 * safe integers.
 */
export function createTasksRepository(
  database: DatabaseHandle,
  options: TasksRepositoryOptions = {},
) {
  const { db } = database;
  const ownerFilter = options.unsafeOmitOwnerFilter !== true;

  /** `user_id = '…'`, or (tests of row-level security alone) nothing. */
  const ownedBy = (userId: string) => (ownerFilter ? `user_id = ${textLiteral(userId)}` : 'true');
  const owned = (userId: string, id: number) => `${ownedBy(userId)} and id = ${integerLiteral(id)}`;

  const run = (userId: string, statements: string[]) =>
    options.unsafeSkipRowLevelSecurity === true
      ? database.runScript(statements.join(';\n'))
      : runAsUser(database, userId, statements);

  /** The create's statement: the plain route sends it alone, the idempotent one in its transaction. */
  const insertStatement = (userId: string, input: NewTask) => {
    const description =
      input.description === undefined || input.description === null
        ? 'null'
        : textLiteral(input.description);
    return (
      'insert into task (user_id, title, description) ' +
      `values (${textLiteral(userId)}, ${textLiteral(input.title)}, ${description}) ` +
      `returning ${TASK_COLUMNS}`
    );
  };

  const update = async (userId: string, id: number, assignments: string[]) => {
    const [rows] = await run(userId, [
      `update task set ${[...assignments, 'updated_at = now()'].join(', ')} ` +
        `where ${owned(userId, id)} returning ${TASK_COLUMNS}`,
    ]);
    return bodyOf(rows);
  };

  return {
    /**
     * The page's statement and the total's, as sent (the EXPLAIN test reads them). The total
     * is the user's counter row, one primary-key read however many tasks they have (no row:
     * no task yet, 0).
     */
    listStatements(userId: string, query: ListTasksQuery): { page: string; total: string } {
      const status =
        query.status === 'all' ? '' : ` and completed = ${String(query.status === 'completed')}`;
      const limit = integerLiteral(query.limit ?? LIST_CAP);
      return {
        page:
          `select ${TASK_COLUMNS} from task where ${ownedBy(userId)}${status} ` +
          `order by ${ORDER_BY[query.sort]} limit ${limit} offset ${integerLiteral(query.offset)}`,
        total: `select ${TOTAL_OF[query.status]} as total from task_count where ${ownedBy(userId)}`,
      };
    },

    /**
     * A client that pages (`limit`) needs the total on most pages: it travels in the same
     * message. A whole-list read (no `limit`, what today's front ends send) mostly ends before
     * the cap, where the total is known from the page itself: one statement, and a second
     * round trip only in the rare other case (a full or empty page).
     */
    async list(userId: string, query: ListTasksQuery): Promise<TaskJsonPage> {
      const { page, total } = this.listStatements(userId, query);
      const paged = query.limit !== undefined;
      const [pageRows, totalRows] = await run(userId, paged ? [page, total] : [page]);
      const tasks = bodiesOf(pageRows);
      const limit = query.limit ?? LIST_CAP;
      if (!paged && tasks.length < limit && (tasks.length > 0 || query.offset === 0)) {
        return { tasks, total: query.offset + tasks.length };
      }
      const [counted] = paged ? [totalRows] : await run(userId, [total]);
      const value: unknown = counted?.[0]?.total;
      return { tasks, total: typeof value === 'number' ? value : 0 };
    },

    async get(userId: string, id: number): Promise<string | null> {
      const [rows] = await run(userId, [
        `select ${TASK_COLUMNS} from task where ${owned(userId, id)}`,
      ]);
      return bodyOf(rows);
    },

    async create(userId: string, input: NewTask): Promise<CreatedTaskJson> {
      if (options.unsafeSkipRowLevelSecurity !== true) {
        const description =
          input.description === undefined || input.description === null
            ? null
            : textParameter(input.description);
        const prepared = await database.runPrepared([
          actAsUser(userId),
          {
            statement: INSERT_TASK,
            values: [textParameter(userId), textParameter(input.title), description],
          },
        ]);
        if (prepared !== undefined) return createdOf(prepared[1]);
      }
      const [rows] = await run(userId, [insertStatement(userId, input)]);
      return createdOf(rows);
    },

    /**
     * Creates a task at most once per `(userId, key)` within IDEMPOTENCY_TTL_HOURS. The key
     * row is inserted first, in the task's transaction: a second request with the key waits
     * on the first one's uncommitted row, then finds it committed (and replays its response)
     * or gone (and creates). A failed create rolls its claim back, so the key stays unused.
     */
    createIdempotent(
      userId: string,
      input: NewTask,
      claim: IdempotencyClaim,
      respond: (created: CreatedTaskJson) => StoredResponse,
    ): Promise<IdempotentCreateResult> {
      return withUser(db, userId, async (tx) => {
        const mine = and(eq(idempotencyKey.userId, userId), eq(idempotencyKey.key, claim.key));
        // Opportunistic purge of this user's expired keys (the primary key's user_id prefix
        // finds them); an expired key is thereby free to be claimed again just below.
        await tx
          .delete(idempotencyKey)
          .where(and(eq(idempotencyKey.userId, userId), idempotencyExpired));
        const claimed = await tx
          .insert(idempotencyKey)
          .values({ userId, key: claim.key, requestHash: claim.requestHash })
          .onConflictDoNothing({ target: [idempotencyKey.userId, idempotencyKey.key] })
          .returning({ key: idempotencyKey.key });

        if (claimed.length === 0) {
          const [stored] = await tx.select().from(idempotencyKey).where(mine);
          // Gone between the conflict and this read (purged by a concurrent request once it
          // expired): the client may simply retry.
          if (!stored) throw new IdempotencyRace();
          if (stored.requestHash !== claim.requestHash) {
            return { outcome: 'key-reused-with-other-body' };
          }
          const { responseStatus, responseBody, responseLocation } = stored;
          if (responseStatus === null || responseBody === null) {
            // Cannot happen: the claiming transaction fills these before it commits.
            throw new Error('idempotency key committed without its response');
          }
          return {
            outcome: 'replayed',
            response: { status: responseStatus, body: responseBody, location: responseLocation },
          };
        }

        const inserted = await tx.execute(sql.raw(insertStatement(userId, input)));
        const response = respond(createdOf(rowsOf(inserted)));
        await tx
          .update(idempotencyKey)
          .set({
            responseStatus: response.status,
            responseBody: response.body,
            responseLocation: response.location,
          })
          .where(mine);
        return { outcome: 'created', response };
      });
    },

    update(userId: string, id: number, changes: TaskChanges): Promise<string | null> {
      const assignments: string[] = [];
      if (changes.title !== undefined) assignments.push(`title = ${textLiteral(changes.title)}`);
      if (changes.description !== undefined) {
        const value = changes.description === null ? 'null' : textLiteral(changes.description);
        assignments.push(`description = ${value}`);
      }
      if (changes.completed !== undefined) {
        assignments.push(`completed = ${String(changes.completed)}`);
      }
      return update(userId, id, assignments);
    },

    /** Sets `completed`, or flips it in SQL when not given, so concurrent toggles never race. */
    setCompleted(userId: string, id: number, completed?: boolean): Promise<string | null> {
      const value = completed === undefined ? 'not completed' : String(completed);
      return update(userId, id, [`completed = ${value}`]);
    },

    async delete(userId: string, id: number): Promise<boolean> {
      const [rows] = await run(userId, [
        `delete from task where ${owned(userId, id)} returning id`,
      ]);
      return (rows ?? []).length > 0;
    },
  };
}

export type TasksRepository = ReturnType<typeof createTasksRepository>;
