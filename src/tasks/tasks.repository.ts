import { and, eq, sql } from 'drizzle-orm';
import { type DatabaseHandle, rowsOf, type ScriptRows } from '../db/client.js';
import { idempotencyKey } from '../db/schema.js';
import {
  type BoundStatement,
  inlined,
  runBoundAsUser,
  type SqlValue,
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

/** How many unpaged lists at the cap a repository remembers (listsAtCap); the oldest go first. */
const LISTS_AT_CAP_REMEMBERED = 10_000;

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
 * The columns a task is answered from. Timestamps come in PostgreSQL's text form, cast to
 * text so that neither driver parses them (isoTimeOfTimestamptz turns the text into JSON by
 * slicing). The cast is the same output function the wire format calls anyway: no
 * measurable cost at the database (pgbench of the list message, 3 runs each, interleaved:
 * 1 356–1 577 tps without, 1 406–1 463 with). It saves the drivers work: PGlite's
 * per-query type parsers (`exec(…, { parsers })`, which the uncast column needed to stay text)
 * took a quarter of PGlite's CPU per list (README, "Timestamps as text"). Computing epoch
 * milliseconds in SQL instead (`floor(extract(epoch from created_at) * 1000)::float8`, two per
 * row) took about a fifth of PostgreSQL's CPU per list request (pgbench, medians of 4 runs:
 * 677 µs against 546 µs per list message).
 */
const TASK_COLUMNS =
  'id::text as id_text, user_id, title, description, completed, ' +
  'created_at::text as created_at, updated_at::text as updated_at';

/**
 * PostgreSQL's text form of a timestamptz in DateStyle ISO (which node-postgres and Drizzle
 * assume too): date, time, up to six fraction digits, and the session's UTC offset.
 */
const TIMESTAMPTZ_TEXT =
  /^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?([+-])(\d\d)(?::(\d\d))?(?::(\d\d))?$/;

/** The same text in a UTC session (the usual server default, and Neon's): offset `+00`. */
const UTC_TIMESTAMPTZ_TEXT = /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d{1,6})?\+00$/;

/**
 * What follows `HH:MM:SS` and up to three fraction digits of a UTC text to make milliseconds,
 * by where those digits end: no fraction (19), one digit (21), two (22), three or more (23).
 */
const MILLIS_PADDING = ['.000', '', '00', '0', ''];

/**
 * A timestamptz's text as toISOString writes the instant: UTC, milliseconds (truncated, as
 * before: the microseconds never round up into the next millisecond), `Z`. A session in UTC
 * needs only slicing, with no match object or captures: this runs twice for every task
 * answered, and the capturing match was a quarter of the service's allocation on a list
 * (a sampling heap profile under `npm run bench`). Another zone's offset is subtracted.
 * Anything else (another DateStyle, BC, a year past 9999) is refused.
 */
export function isoTimeOfTimestamptz(value: unknown): string {
  if (typeof value === 'string' && UTC_TIMESTAMPTZ_TEXT.test(value)) {
    const end = Math.min(value.length - 3, 23);
    return `${value.slice(0, 10)}T${value.slice(11, end)}${MILLIS_PADDING[end - 19] ?? ''}Z`;
  }
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
 * owner's rows (runBoundAsUser, withUser): the second wall, should a WHERE clause ever be
 * wrong.
 *
 * The routes' statements are written out here rather than built by Drizzle per request: they
 * travel with the role and user settings in one round trip and one implicit transaction (no
 * BEGIN/COMMIT), and their rows become the response's JSON text directly (taskJson). Building
 * them with Drizzle on every request was the largest single cost in the service's own
 * profile. Each is a BoundStatement: named and prepared where the database keeps prepared
 * statements (parsed and planned once per connection), else sent as a script with its values
 * written in by textLiteral and integerLiteral, which accept only strings without NUL and
 * safe integers.
 */
export function createTasksRepository(
  database: DatabaseHandle,
  options: TasksRepositoryOptions = {},
) {
  const { db } = database;
  const ownerFilter = options.unsafeOmitOwnerFilter !== true;

  /**
   * Every statement's owner is `$1`. Without the owner filter (tests of row-level security
   * alone) the parameter stays, typed and always true, so the values keep their places.
   */
  const owner = ownerFilter ? 'user_id = $1' : '$1::text is not null';
  // The other text has another name: a name is given to one text only.
  const bound = (name: string, text: string, values: SqlValue[]): BoundStatement => ({
    name: `todo_${ownerFilter ? '' : 'unfiltered_'}${name}`,
    text,
    values,
  });

  const run = (userId: string, statements: BoundStatement[]) =>
    options.unsafeSkipRowLevelSecurity === true
      ? database.runScript(statements.map(inlined).join(';\n'))
      : runBoundAsUser(database, userId, statements);

  /** The create's statement: the plain route runs it alone, the idempotent one in its transaction. */
  const insertStatement = (userId: string, input: NewTask) =>
    bound(
      'task_insert',
      `insert into task (user_id, title, description) values ($1, $2, $3) returning ${TASK_COLUMNS}`,
      [userId, input.title, input.description ?? null],
    );

  /** `assignments` name their values `$3`, `$4` … in the order of `values`. */
  const update = async (
    userId: string,
    id: number,
    name: string,
    assignments: string[],
    values: SqlValue[],
  ) => {
    const [rows] = await run(userId, [
      bound(
        name,
        `update task set ${[...assignments, 'updated_at = now()'].join(', ')} ` +
          `where ${owner} and id = $2 returning ${TASK_COLUMNS}`,
        [userId, id, ...values],
      ),
    ]);
    return bodyOf(rows);
  };

  /**
   * An unpaged list whose page ends before the cap, where the page says the total; undefined
   * (and nothing kept) when the counter is needed.
   */
  const wholeListBelowCap = async (
    userId: string,
    offset: number,
    page: BoundStatement,
  ): Promise<TaskJsonPage | undefined> => {
    const [rows = []] = await run(userId, [page]);
    if (rows.length >= LIST_CAP || (rows.length === 0 && offset > 0)) return undefined;
    return { tasks: bodiesOf(rows), total: offset + rows.length };
  };

  /**
   * Unpaged lists (by status filter and user) whose page last reached the cap: the next one
   * asks for the counter with its page straight away instead of reading the page twice. A
   * shortcut only: either way the answer is the same, and a list below the cap drops its entry.
   */
  const listsAtCap = new Set<string>();
  const rememberCap = (key: string, atCap: boolean) => {
    if (!atCap) {
      listsAtCap.delete(key);
      return;
    }
    if (listsAtCap.size >= LISTS_AT_CAP_REMEMBERED && !listsAtCap.has(key)) {
      const oldest = listsAtCap.values().next();
      if (oldest.done !== true) listsAtCap.delete(oldest.value);
    }
    listsAtCap.add(key);
  };

  return {
    /**
     * The page's statement and the total's. The total is the user's counter row, one
     * primary-key read however many tasks they have (no row: no task yet, 0). The EXPLAIN
     * test reads them, inlined as a script sends them and prepared as a generic plan.
     */
    listStatements(
      userId: string,
      query: ListTasksQuery,
    ): { page: BoundStatement; total: BoundStatement } {
      const status =
        query.status === 'all' ? '' : ` and completed = ${String(query.status === 'completed')}`;
      return {
        page: bound(
          `list_${query.status}_${query.sort}`,
          `select ${TASK_COLUMNS} from task where ${owner}${status} ` +
            `order by ${ORDER_BY[query.sort]} limit $2 offset $3`,
          [userId, query.limit ?? LIST_CAP, query.offset],
        ),
        total: bound(
          `total_${query.status}`,
          `select ${TOTAL_OF[query.status]} as total from task_count where ${owner}`,
          [userId],
        ),
      };
    },

    /**
     * A client that pages (`limit`) needs the total on most pages: it travels in the same
     * message. A whole-list read (no `limit`, what today's front ends send) mostly ends before
     * the cap, where the total is known from the page itself: one statement. In the rare other
     * case (a full page, or one past the end) that page is dropped and asked again with the
     * counter in one message, and a list that reached the cap asks for both at once next time
     * (listsAtCap). Keeping the page while a second round trip waited for a connection held
     * every such request's thousand tasks in memory at once: 1 000 clients listing a user at
     * the cap kept 510 MB live, until the heap limit stopped the process.
     */
    async list(userId: string, query: ListTasksQuery): Promise<TaskJsonPage> {
      const { page, total } = this.listStatements(userId, query);
      const unpaged = query.limit === undefined;
      const capKey = `${query.status} ${userId}`;
      if (unpaged && !listsAtCap.has(capKey)) {
        const whole = await wholeListBelowCap(userId, query.offset, page);
        if (whole !== undefined) return whole;
      }
      const [pageRows, totalRows] = await run(userId, [page, total]);
      if (unpaged) rememberCap(capKey, (pageRows?.length ?? 0) >= LIST_CAP);
      const value: unknown = totalRows?.[0]?.total;
      return { tasks: bodiesOf(pageRows), total: typeof value === 'number' ? value : 0 };
    },

    async get(userId: string, id: number): Promise<string | null> {
      const [rows] = await run(userId, [
        bound('task_get', `select ${TASK_COLUMNS} from task where ${owner} and id = $2`, [
          userId,
          id,
        ]),
      ]);
      return bodyOf(rows);
    },

    async create(userId: string, input: NewTask): Promise<CreatedTaskJson> {
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

        const inserted = await tx.execute(sql.raw(inlined(insertStatement(userId, input))));
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
      const columns: string[] = [];
      const values: SqlValue[] = [];
      const assign = (column: string, value: SqlValue) => {
        columns.push(column);
        values.push(value);
      };
      if (changes.title !== undefined) assign('title', changes.title);
      if (changes.description !== undefined) assign('description', changes.description);
      if (changes.completed !== undefined) assign('completed', changes.completed);
      // Each set of columns is its own text, so its own name.
      const assignments = columns.map((column, i) => `${column} = $${i + 3}`);
      return update(userId, id, `task_update_${columns.join('_')}`, assignments, values);
    },

    /** Sets `completed`, or flips it in SQL when not given, so concurrent toggles never race. */
    setCompleted(userId: string, id: number, completed?: boolean): Promise<string | null> {
      return completed === undefined
        ? update(userId, id, 'task_toggle', ['completed = not completed'], [])
        : update(userId, id, 'task_set_completed', ['completed = $3'], [completed]);
    },

    async delete(userId: string, id: number): Promise<boolean> {
      const [rows] = await run(userId, [
        bound('task_delete', `delete from task where ${owner} and id = $2 returning id`, [
          userId,
          id,
        ]),
      ]);
      return (rows ?? []).length > 0;
    },
  };
}

export type TasksRepository = ReturnType<typeof createTasksRepository>;
