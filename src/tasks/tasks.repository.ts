import { and, asc, count, desc, eq, not, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { idempotencyKey, type TaskRow, task } from '../db/schema.js';
import { type Transaction, withUser } from '../db/with-user.js';
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

export interface TaskPage {
  tasks: TaskRow[];
  total: number;
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

const byTitle = sql`lower(${task.title})`;

const idempotencyExpired = sql`${idempotencyKey.createdAt} < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})`;

/**
 * Data access for tasks. Every function takes the owner first and puts it in the WHERE
 * clause: a task that is missing and one that belongs to someone else are the same `null`.
 * Every function also runs inside `withUser`, as the database role that row-level security
 * confines to that owner's rows: the second wall, should a WHERE clause ever be wrong.
 */
export function createTasksRepository(db: Database, options: TasksRepositoryOptions = {}) {
  const ownerFilter = options.unsafeOmitOwnerFilter !== true;

  const ownedBy = (userId: string): SQL | undefined =>
    ownerFilter ? eq(task.userId, userId) : undefined;
  const owned = (userId: string, id: number) => and(ownedBy(userId), eq(task.id, id));

  function listFilter(userId: string, status: ListTasksQuery['status']): SQL | undefined {
    if (status === 'all') return ownedBy(userId);
    return and(ownedBy(userId), eq(task.completed, status === 'completed'));
  }

  async function insertTask(tx: Transaction, userId: string, input: NewTask): Promise<TaskRow> {
    const [row] = await tx
      .insert(task)
      .values({ userId, title: input.title, description: input.description ?? null })
      .returning();
    if (!row) throw new Error('INSERT ... RETURNING returned no row');
    return row;
  }

  async function listIn(tx: Transaction, userId: string, query: ListTasksQuery): Promise<TaskPage> {
    const where = listFilter(userId, query.status);
    const order =
      query.sort === 'title' ? [asc(byTitle), asc(task.id)] : [desc(task.createdAt), desc(task.id)];
    const limit = query.limit ?? LIST_CAP;
    const tasks = await tx
      .select()
      .from(task)
      .where(where)
      .orderBy(...order)
      .limit(limit)
      .offset(query.offset);

    // The total is known without a second query whenever this page is the last one.
    if (tasks.length > 0 && tasks.length < limit) {
      return { tasks, total: query.offset + tasks.length };
    }
    if (tasks.length === 0 && query.offset === 0) return { tasks, total: 0 };
    const [row] = await tx.select({ total: count() }).from(task).where(where);
    return { tasks, total: row?.total ?? 0 };
  }

  return {
    list(userId: string, query: ListTasksQuery): Promise<TaskPage> {
      return withUser(db, userId, (tx) => listIn(tx, userId, query));
    },

    get(userId: string, id: number): Promise<TaskRow | null> {
      return withUser(db, userId, async (tx) => {
        const [row] = await tx.select().from(task).where(owned(userId, id));
        return row ?? null;
      });
    },

    create(userId: string, input: NewTask): Promise<TaskRow> {
      return withUser(db, userId, (tx) => insertTask(tx, userId, input));
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
      respond: (row: TaskRow) => StoredResponse,
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

        const response = respond(await insertTask(tx, userId, input));
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

    update(userId: string, id: number, changes: TaskChanges): Promise<TaskRow | null> {
      return withUser(db, userId, async (tx) => {
        const [row] = await tx
          .update(task)
          .set({
            ...(changes.title !== undefined && { title: changes.title }),
            ...(changes.description !== undefined && { description: changes.description }),
            ...(changes.completed !== undefined && { completed: changes.completed }),
            updatedAt: sql`now()`,
          })
          .where(owned(userId, id))
          .returning();
        return row ?? null;
      });
    },

    /** Sets `completed`, or flips it in SQL when not given, so concurrent toggles never race. */
    setCompleted(userId: string, id: number, completed?: boolean): Promise<TaskRow | null> {
      return withUser(db, userId, async (tx) => {
        const [row] = await tx
          .update(task)
          .set({ completed: completed ?? not(task.completed), updatedAt: sql`now()` })
          .where(owned(userId, id))
          .returning();
        return row ?? null;
      });
    },

    delete(userId: string, id: number): Promise<boolean> {
      return withUser(db, userId, async (tx) => {
        const deleted = await tx.delete(task).where(owned(userId, id)).returning({ id: task.id });
        return deleted.length > 0;
      });
    },
  };
}

export type TasksRepository = ReturnType<typeof createTasksRepository>;
