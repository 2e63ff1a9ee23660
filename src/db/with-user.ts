import { type ExtractTablesWithRelations, type RelationalSchemaConfig, sql } from 'drizzle-orm';
import {
  NodePgSession,
  type NodePgSessionOptions,
  NodePgTransaction,
} from 'drizzle-orm/node-postgres';
import { PgDialect, type PgQueryResultHKT, type PgTransaction } from 'drizzle-orm/pg-core';
import pg from 'pg';
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

type Relations = ExtractTablesWithRelations<typeof schema>;

/**
 * Runs `fn` in a transaction that is, from its first statement, the application role acting
 * for `userId`: row-level security then shows and accepts only that user's rows, whatever
 * the queries in `fn` forget to filter.
 *
 * Both settings are transaction-local (`set_config(…, true)`) and made in one statement, so
 * nothing outlives the transaction: safe on a pooled connection and behind a
 * transaction-pooling PgBouncer (Neon's pooled endpoint), where a session-level `SET` would
 * leak to whoever gets the server connection next.
 *
 * On node-postgres, `BEGIN` and the settings go to the server as one message (see
 * pooledWithUser): one round trip fewer on every task request. PGlite, in-process, uses
 * Drizzle's own transaction.
 */
export async function withUser<T>(
  db: Database,
  userId: string,
  fn: (tx: Transaction) => Promise<T>,
): Promise<T> {
  // An empty id would match no row anyway; refusing it makes the mistake loud.
  if (userId === '') throw new Error('withUser: the user id is empty');
  const pooled = pooledSetupOf(db);
  if (pooled !== undefined) return pooledWithUser(pooled, userId, fn);
  return db.transaction(async (tx) => {
    await tx.execute(
      sql`select set_config('role', ${APP_ROLE}, true), set_config(${USER_SETTING}, ${userId}, true)`,
    );
    return fn(tx);
  });
}

/** What Drizzle's own transaction on `db` would use: its pool, session options and schema. */
interface PooledSetup {
  pool: pg.Pool;
  options: NodePgSessionOptions;
  relations: RelationalSchemaConfig<Relations> | undefined;
}

const dialect = new PgDialect();
const pooledSetups = new WeakMap<Database, PooledSetup | null>();

/** The node-postgres pool behind `db` and what its sessions are built with; once per `db`. */
function pooledSetupOf(db: Database): PooledSetup | undefined {
  let setup = pooledSetups.get(db);
  if (setup === undefined) {
    const pool: unknown = Reflect.get(db, '$client');
    // The session's options carry the Drizzle logger a test may have given `db`.
    const options: unknown = Reflect.get(db._.session, 'options');
    setup =
      pool instanceof pg.Pool
        ? {
            pool,
            options: typeof options === 'object' && options !== null ? options : {},
            relations:
              db._.schema === undefined
                ? undefined
                : {
                    fullSchema: db._.fullSchema,
                    schema: db._.schema,
                    tableNamesMap: db._.tableNamesMap,
                  },
          }
        : null;
    pooledSetups.set(db, setup);
  }
  return setup ?? undefined;
}

/**
 * `BEGIN` and both settings in one simple-protocol message (several statements in one
 * Query message run in order, and an error stops the rest), so the transaction starts as the
 * role and user after one round trip instead of two. The user id cannot be a bind parameter
 * in the simple protocol: it is quoted by node-postgres's `escapeLiteral`, which doubles
 * quotes and backslashes (E'' form), so any string stays one literal.
 */
export function beginAsUserStatement(userId: string): string {
  const literal = pg.escapeLiteral;
  return (
    `begin; select set_config('role', ${literal(APP_ROLE)}, true), ` +
    `set_config(${literal(USER_SETTING)}, ${literal(userId)}, true)`
  );
}

/**
 * Drizzle's node-postgres transaction (checkout, BEGIN, fn, COMMIT or ROLLBACK, release)
 * with BEGIN and the settings merged; `fn` gets the same Drizzle transaction object as from
 * `db.transaction`. A client whose ROLLBACK failed (its connection is gone) is discarded by
 * the pool rather than handed to the next request, and the original error is the one thrown.
 */
async function pooledWithUser<T>(
  { pool, options, relations }: PooledSetup,
  userId: string,
  fn: (tx: Transaction) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(beginAsUserStatement(userId));
    const session = new NodePgSession<typeof schema, Relations>(
      client,
      dialect,
      relations,
      options,
    );
    const tx: Transaction = new NodePgTransaction<typeof schema, Relations>(
      dialect,
      session,
      relations,
    );
    const result = await fn(tx);
    await client.query('commit');
    return result;
  } catch (error) {
    try {
      await client.query('rollback');
    } catch (rollbackError) {
      broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
    }
    throw error;
  } finally {
    client.release(broken);
  }
}
