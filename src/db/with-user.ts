import { type ExtractTablesWithRelations, type RelationalSchemaConfig, sql } from 'drizzle-orm';
import {
  NodePgSession,
  type NodePgSessionOptions,
  NodePgTransaction,
} from 'drizzle-orm/node-postgres';
import { PgDialect, type PgQueryResultHKT, type PgTransaction } from 'drizzle-orm/pg-core';
import pg from 'pg';
import type { Database, DatabaseHandle, ScriptRows } from './client.js';
import { inPooledTransaction } from './pooled-transaction.js';
import type { Execution, PreparedStatement } from './prepared-pipeline.js';
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
  // actAsUserStatements (used on both paths) refuses an empty user id.
  const pooled = pooledSetupOf(db);
  if (pooled !== undefined) return pooledWithUser(pooled, userId, fn);
  return db.transaction(async (tx) => {
    for (const statement of actAsUserStatements(userId)) await tx.execute(sql.raw(statement));
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
 * A string as an SQL literal, for the scripts below, which run on the simple protocol and so
 * cannot bind parameters. node-postgres's `escapeLiteral` doubles quotes and backslashes and
 * uses the E'' form when there is a backslash, so any string stays one literal whatever
 * `standard_conforming_strings` is. NUL cannot travel in a Query message (it would end the
 * text there): refused, as the validators already refuse it in every field.
 */
export function textLiteral(value: string): string {
  return pg.escapeLiteral(textParameter(value));
}

/**
 * A string as a statement parameter (prepared-pipeline.ts): the same text textLiteral would
 * send, unquoted. NUL is refused for the same reason (PostgreSQL text cannot hold it).
 */
function textParameter(value: string): string {
  if (value.includes('\u0000')) throw new Error('a NUL character cannot be sent in SQL text');
  return wellFormed(value);
}

/**
 * The prepared form of actAsUserStatements: both settings in one planned statement, and a
 * third for the statements prepared after it. With the default plan_cache_mode (auto),
 * PostgreSQL planned the routes' statements again on every execution: after five custom
 * plans it keeps one only if its estimate beats theirs, and the generic plan of a list never
 * did (its LIMIT and owner are parameters). The generic plans are the ones
 * src/tasks/tasks.explain.test.ts holds to an index and no sort at 100 000 tasks, so the
 * routes use them from the first execution. Transaction-local like the rest: nothing else
 * (Better Auth's statements, another client of a pooled connection) is affected.
 */
const ACT_AS_USER: PreparedStatement = {
  name: 'todo_act_as_user',
  text:
    `select set_config('role', '${APP_ROLE}', true), set_config('${USER_SETTING}', $1, true), ` +
    "set_config('plan_cache_mode', 'force_generic_plan', true)",
};

/** The execution that makes the rest of a pipeline the application role acting for `userId`. */
export function actAsUser(userId: string): Execution {
  return { statement: ACT_AS_USER, values: [textParameter(actingUserId(userId))] };
}

/** An empty id would match no row anyway; refusing it makes the mistake loud. */
function actingUserId(userId: string): string {
  if (userId === '') throw new Error('the user id is empty');
  return userId;
}

/** A UTF-16 surrogate without its pair: valid in a JSON string, not in Unicode text. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Lone surrogates become U+FFFD, as node-postgres's UTF-8 encoding makes them on the wire
 * anyway; PGlite's encoder instead miscounts them and cuts the message (a syntax error, a
 * 500, found by the fuzz test). Done here, both databases store the same text.
 */
function wellFormed(value: string): string {
  return value.replace(LONE_SURROGATE, '\uFFFD');
}

/** A whole number as an SQL literal; anything else (NaN, 1.5, 2^60) is a programming error. */
export function integerLiteral(value: number): string {
  if (!Number.isSafeInteger(value)) throw new Error(`not a safe integer: ${String(value)}`);
  return String(value);
}

/**
 * The statements that make the rest of their transaction the application role acting for
 * `userId`. SET LOCAL is a utility statement: no planner, no result row (about half the cost
 * of the same settings through `select set_config(…)`, measured at the database); in the
 * implicit transaction of a multi-statement message it lasts until the message ends.
 */
export function actAsUserStatements(userId: string): readonly [string, string] {
  return [
    `set local role ${APP_ROLE}`,
    `set local ${USER_SETTING} = ${textLiteral(actingUserId(userId))}`,
  ];
}

/** `BEGIN` and both settings in one simple-protocol message (see pooledWithUser). */
export function beginAsUserStatement(userId: string): string {
  return ['begin', ...actAsUserStatements(userId)].join('; ');
}

/**
 * Runs `statements` (values inlined with textLiteral/integerLiteral) as the application role
 * acting for `userId`, in one round trip: the settings and the statements travel as one
 * message and run as one implicit transaction (DatabaseHandle.runScript), so row-level
 * security costs no extra round trip, and nothing outlives the message (safe behind a
 * transaction-pooling PgBouncer). Resolves to the rows of each of `statements`.
 */
export async function runAsUser(
  database: Pick<DatabaseHandle, 'runScript'>,
  userId: string,
  statements: readonly string[],
): Promise<ScriptRows[]> {
  const settings = actAsUserStatements(userId);
  const results = await database.runScript([...settings, ...statements].join(';\n'));
  return results.slice(settings.length);
}

/** A value of a BoundStatement: text, a safe integer, a boolean, or SQL NULL. */
export type SqlValue = string | number | boolean | null;

/**
 * A statement with `$n` placeholders and its values, runnable both ways: prepared (named,
 * the values as parameters) or in a script (the values written in as literals). Its text
 * holds no `$` but its placeholders; a name is given to one text only.
 */
export interface BoundStatement {
  name: string;
  text: string;
  values: readonly SqlValue[];
}

function literalOf(value: SqlValue): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return textLiteral(value);
  if (typeof value === 'boolean') return String(value);
  return integerLiteral(value);
}

function parameterOf(value: SqlValue): string | null {
  if (value === null) return null;
  if (typeof value === 'string') return textParameter(value);
  if (typeof value === 'boolean') return String(value);
  return integerLiteral(value);
}

/** The statement with its values written in, for a script. */
export function inlined({ text, values }: BoundStatement): string {
  return text.replace(/\$(\d+)/g, (_placeholder, position: string) => {
    const value = values[Number(position) - 1];
    if (value === undefined) throw new Error(`no value for $${position} in: ${text}`);
    return literalOf(value);
  });
}

function executionOf({ name, text, values }: BoundStatement): Execution {
  return { statement: { name, text }, values: values.map(parameterOf) };
}

/**
 * runAsUser for bound statements: as one prepared pipeline where the database keeps prepared
 * statements (DatabaseHandle.runPrepared), else as the same script runAsUser sends. Either
 * way one round trip and one implicit transaction, the role and user settings first.
 */
export async function runBoundAsUser(
  database: Pick<DatabaseHandle, 'runScript' | 'runPrepared'>,
  userId: string,
  statements: readonly BoundStatement[],
): Promise<ScriptRows[]> {
  const prepared = await database.runPrepared([actAsUser(userId), ...statements.map(executionOf)]);
  if (prepared !== undefined) return prepared.slice(1);
  return runAsUser(database, userId, statements.map(inlined));
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
  return inPooledTransaction(pool, beginAsUserStatement(userId), (client) => {
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
    return fn(tx);
  });
}
