import { type ExtractTablesWithRelations, sql } from 'drizzle-orm';
import type { PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { Database } from './client.js';
import type { schema } from './schema.js';

/**
 * The role every task query runs as: NOLOGIN, no BYPASSRLS, created by migration 0002.
 * Switching to it confines even a superuser or table-owner connection string.
 */
export const APP_ROLE = 'todo_app';

/** The per-transaction setting the row-level security policies compare `user_id` with. */
export const USER_SETTING = 'app.user_id';

export type Transaction = PgTransaction<
  PgQueryResultHKT,
  typeof schema,
  ExtractTablesWithRelations<typeof schema>
>;

/**
 * Runs `fn` in a transaction that is, from its first statement, the application role acting
 * for `userId`: row-level security then shows and accepts only that user's rows, whatever
 * the queries in `fn` forget to filter.
 *
 * Both settings are transaction-local (`set_config(…, true)`) and made in one statement, so
 * nothing outlives the transaction: safe on a pooled connection and behind a
 * transaction-pooling PgBouncer (Neon's pooled endpoint), where a session-level `SET` would
 * leak to whoever gets the server connection next.
 */
export async function withUser<T>(
  db: Database,
  userId: string,
  fn: (tx: Transaction) => Promise<T>,
): Promise<T> {
  // An empty id would match no row anyway; refusing it makes the mistake loud.
  if (userId === '') throw new Error('withUser: the user id is empty');
  return db.transaction(async (tx) => {
    await tx.execute(
      sql`select set_config('role', ${APP_ROLE}, true), set_config(${USER_SETTING}, ${userId}, true)`,
    );
    return fn(tx);
  });
}
