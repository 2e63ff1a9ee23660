import { and, asc, count, desc, eq, not, type SQL, sql } from 'drizzle-orm';
import type { Database } from '../db/client.js';
import { type TaskRow, task } from '../db/schema.js';
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

const byTitle = sql`lower(${task.title})`;

/**
 * Data access for tasks. Every function takes the owner first and puts it in the WHERE
 * clause: a task that is missing and one that belongs to someone else are the same `null`.
 */
export function createTasksRepository(db: Database) {
  const owned = (userId: string, id: number) => and(eq(task.userId, userId), eq(task.id, id));

  function listFilter(userId: string, status: ListTasksQuery['status']): SQL | undefined {
    if (status === 'all') return eq(task.userId, userId);
    return and(eq(task.userId, userId), eq(task.completed, status === 'completed'));
  }

  return {
    async list(userId: string, query: ListTasksQuery): Promise<TaskPage> {
      const where = listFilter(userId, query.status);
      const order =
        query.sort === 'title'
          ? [asc(byTitle), asc(task.id)]
          : [desc(task.createdAt), desc(task.id)];
      const limit = query.limit ?? LIST_CAP;
      const tasks = await db
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
      const [row] = await db.select({ total: count() }).from(task).where(where);
      return { tasks, total: row?.total ?? 0 };
    },

    async get(userId: string, id: number): Promise<TaskRow | null> {
      const [row] = await db.select().from(task).where(owned(userId, id));
      return row ?? null;
    },

    async create(userId: string, input: NewTask): Promise<TaskRow> {
      const [row] = await db
        .insert(task)
        .values({ userId, title: input.title, description: input.description ?? null })
        .returning();
      if (!row) throw new Error('INSERT ... RETURNING returned no row');
      return row;
    },

    async update(userId: string, id: number, changes: TaskChanges): Promise<TaskRow | null> {
      const [row] = await db
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
    },

    /** Sets `completed`, or flips it in SQL when not given, so concurrent toggles never race. */
    async setCompleted(userId: string, id: number, completed?: boolean): Promise<TaskRow | null> {
      const [row] = await db
        .update(task)
        .set({ completed: completed ?? not(task.completed), updatedAt: sql`now()` })
        .where(owned(userId, id))
        .returning();
      return row ?? null;
    },

    async delete(userId: string, id: number): Promise<boolean> {
      const deleted = await db.delete(task).where(owned(userId, id)).returning({ id: task.id });
      return deleted.length > 0;
    },
  };
}

export type TasksRepository = ReturnType<typeof createTasksRepository>;
