import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { PGlite } from '@electric-sql/pglite';
import { sql } from 'drizzle-orm';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import { drizzle as drizzlePg, NodePgSession, NodePgTransaction } from 'drizzle-orm/node-postgres';
import { type PgDatabase, PgDialect, type PgQueryResultHKT } from 'drizzle-orm/pg-core';
import { drizzle as drizzlePglite } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import pg from 'pg';
import {
  type Config,
  DATABASE_CONNECT_TIMEOUT_MS_DEFAULT,
  PGLITE_SHARED_BUFFERS_DEFAULT,
} from '../config.js';
import { isDatabaseUnavailable, sqlState } from './errors.js';
import { inPooledTransaction } from './pooled-transaction.js';
import { isInMemory } from './pglite-cluster.js';
import { pglitePreparedStatements } from './pglite-prepared.js';
import { pgliteScriptRunner } from './pglite-script.js';
import { type Execution, runPipeline } from './prepared-pipeline.js';
import { schema } from './schema.js';
import { APP_ROLE } from './with-user.js';

export type Database = PgDatabase<PgQueryResultHKT, typeof schema>;

/** The rows of one statement, as the driver decoded them. */
export type ScriptRows = Record<string, unknown>[];

export interface DatabaseHandle {
  kind: Config['database']['kind'];
  db: Database;
  /**
   * Applies the committed SQL migrations, then checks that this connection may switch to the
   * application role; safe to call from several instances at once.
   */
  migrate(): Promise<void>;
  /**
   * Sends `script` (statements separated by `;`, values already inlined as literals) as one
   * simple-protocol Query message: one round trip. PostgreSQL runs the statements of one such
   * message, in order, as one implicit transaction (an error stops and rolls back all of
   * them, and the connection is left clean); a transaction-pooling PgBouncer hands the
   * message to one server connection. Resolves to each statement's rows as the driver
   * decodes them (the task routes select their timestamps as text: TASK_COLUMNS).
   */
  runScript(script: string): Promise<ScriptRows[]>;
  /**
   * Runs named statements with parameters as one round trip and one implicit transaction,
   * each statement parsed and planned once per connection: an extended-protocol pipeline on
   * node-postgres (prepared-pipeline.ts), `EXECUTE`s of statements prepared in its session on
   * PGlite (pglite-prepared.ts). Rows as runScript answers them. Resolves to undefined, having
   * run nothing, where prepared statements are off (DATABASE_PREPARED_STATEMENTS=false, or
   * once the connections turned out not to keep them); the caller then sends the same work as
   * a script.
   */
  runPrepared(executions: readonly Execution[]): Promise<ScriptRows[] | undefined>;
  /** Resolves when the database answers a trivial query. */
  ping(): Promise<void>;
  /**
   * Whether every connection the pool may open is open and checked out: a request that then
   * waits too long for one met load, not an outage (the error handler words its 503 so).
   * Always false on PGlite, which has no pool.
   */
  allConnectionsInUse(): boolean;
  close(): Promise<void>;
}

const MIGRATIONS_FOLDER = fileURLToPath(new URL('../../drizzle', import.meta.url));

// Any constant works; it only has to be the same for every instance of this service. (Earlier
// versions took it as a session lock: transaction and session advisory locks on one key
// conflict, so old and new instances still exclude each other during a rolling deploy.)
const MIGRATION_LOCK_ID = 7_284_130_551;

/** What PgDialect.migrate() expects of a session: no schema, no relations. */
type NoSchema = Record<string, never>;

/**
 * A session on a client whose transaction is already open: Drizzle's migrator reads its
 * journal through the session, then applies the pending migrations in `transaction()`, which
 * here runs in that open transaction instead of beginning (and committing) its own.
 */
class OpenTransactionSession extends NodePgSession<NoSchema, NoSchema> {
  constructor(
    client: pg.PoolClient,
    private readonly migrationDialect: PgDialect,
  ) {
    super(client, migrationDialect, undefined);
  }

  override async transaction<T>(
    fn: (tx: NodePgTransaction<NoSchema, NoSchema>) => Promise<T>,
  ): Promise<T> {
    return fn(new NodePgTransaction(this.migrationDialect, this, undefined));
  }
}

/**
 * Applies the pending migrations in one transaction that first takes a transaction-level
 * advisory lock, so that instances starting at once migrate one after the other, the later
 * ones finding nothing left to do.
 *
 * One transaction, not a session lock around Drizzle's migrate(): behind a transaction-pooling
 * PgBouncer (Neon's pooled endpoint) every statement outside a transaction may run on another
 * server connection, so `pg_advisory_lock` held one connection and `pg_advisory_unlock` ran on
 * another (a no-op): the lock stayed held by a pooled connection until it closed, and a later
 * start-up that landed elsewhere waited forever, while one that landed on the holder got it
 * again (locks are re-entrant) and migrated alongside another instance. A transaction is kept
 * on one server connection from BEGIN to COMMIT, and its lock ends with it whatever happens.
 * It also needs one server connection per instance, however small the bouncer's pool is: the
 * one migrating never waits for a second connection held by those waiting for the lock.
 * test/e2e/pgbouncer.e2e.test.ts shows both failures of the old way and this one passing.
 */
async function migratePostgres(pool: pg.Pool): Promise<void> {
  const config = { migrationsFolder: MIGRATIONS_FOLDER };
  const migrations = readMigrationFiles(config);
  const dialect = new PgDialect();
  await inPooledTransaction(pool, 'begin', async (client) => {
    await client.query('select pg_advisory_xact_lock($1)', [MIGRATION_LOCK_ID]);
    await dialect.migrate(migrations, new OpenTransactionSession(client, dialect), config);
  });
}

/**
 * Every task query switches to APP_ROLE (src/db/with-user.ts). A connection user that may not
 * (on Neon: a runtime user other than the one that ran the migration) would answer every task
 * request with an error; refuse to start instead, saying what to grant.
 */
async function verifyAppRole(db: Database): Promise<void> {
  try {
    await db.transaction(async (tx) => {
      await tx.execute(sql`select set_config('role', ${APP_ROLE}, true)`);
    });
  } catch (error) {
    if (isDatabaseUnavailable(error)) throw error;
    const reason = error instanceof Error ? (error.cause ?? error) : error;
    const message = reason instanceof Error ? reason.message : String(reason);
    throw new Error(
      `the database user cannot switch to role ${APP_ROLE} (${message}); ` +
        `as an administrator run: GRANT ${APP_ROLE} TO <this user>`,
    );
  }
}

/** The rows of one statement's result, from either driver (both answer `{ rows }`). */
export function rowsOf(result: unknown): ScriptRows {
  const rows: unknown =
    typeof result === 'object' && result !== null ? Reflect.get(result, 'rows') : undefined;
  if (!Array.isArray(rows)) throw new Error('the database answered a statement without rows');
  return rows;
}

/** The rows of each statement from a driver's answer to a multi-statement script. */
function rowsOfEach(answer: unknown): ScriptRows[] {
  return (Array.isArray(answer) ? answer : [answer]).map(rowsOf);
}

/**
 * `pgliteSeed` (tests only): a dump (PGlite's dumpDataDir) to start an in-memory PGlite from,
 * instead of initialising a new cluster, which takes 3–5 s per database on a busy machine.
 */
export function createDatabase(
  config: Config['database'],
  onPoolError: (error: Error) => void,
  pgliteSeed?: Blob,
): DatabaseHandle {
  return config.kind === 'postgres'
    ? createPostgres(config, onPoolError)
    : createPglite(config.dir, config.sharedBuffers ?? PGLITE_SHARED_BUFFERS_DEFAULT, pgliteSeed);
}

/**
 * What a transaction-pooling PgBouncer without prepared-statement support answers when a
 * statement was parsed on one server connection and is used on another: 26000 (no such
 * statement) or 42P05 (the name exists already, from another client). Either way the
 * pipeline ran nothing that stays: the Bind or Parse failed, and an error rolls back the
 * pipeline's implicit transaction.
 */
const PREPARED_STATEMENT_LOST = new Set(['26000', '42P05']);

function createPostgres(
  {
    url,
    poolMax,
    connectTimeoutMs = DATABASE_CONNECT_TIMEOUT_MS_DEFAULT,
    preparedStatements = true,
  }: Extract<Config['database'], { kind: 'postgres' }>,
  onPoolError: (error: Error) => void,
): DatabaseHandle {
  let prepared = preparedStatements;
  const pool = new pg.Pool({
    connectionString: url,
    max: poolMax,
    // A database that does not answer must turn into a quick 503, not a hung request. The
    // same bound applies to the wait for a busy pool's next free connection.
    connectionTimeoutMillis: connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    keepAlive: true,
  });
  // Connections that reached the server (counted on 'connect' below), less those the pool has
  // dropped since; 'remove' is not emitted for an attempt that never connected.
  let connected = 0;
  pool.on('remove', () => connected--);
  // An idle client losing its connection emits here; without a listener the process dies.
  pool.on('error', onPoolError);
  // So does a checked-out client whose connection drops between two queries of a transaction
  // (the pool listens only while a client is idle): the process crashed on exactly that when
  // the database link was cut under load. Its next query fails instead (a 503), and the pool
  // discards it on release.
  pool.on('connect', (client) => {
    connected++;
    client.on('error', onPoolError);
  });
  const db = drizzlePg(pool, { schema });

  return {
    kind: 'postgres',
    db,
    async migrate() {
      await migratePostgres(pool);
      await verifyAppRole(db);
    },
    async runScript(script) {
      // node-postgres answers one result for one statement and an array for several.
      const answer: unknown = await pool.query(script);
      return rowsOfEach(answer);
    },
    async runPrepared(executions) {
      if (!prepared) return undefined;
      try {
        return await runPipeline(pool, executions);
      } catch (error) {
        const code = sqlState(error);
        if (code === undefined || !PREPARED_STATEMENT_LOST.has(code)) throw error;
        if (prepared) {
          prepared = false;
          onPoolError(
            new Error(
              'the database connections do not keep prepared statements (a transaction-pooling ' +
                'PgBouncer before 1.21, or max_prepared_statements = 0?): sending statements as ' +
                'scripts from now on; DATABASE_PREPARED_STATEMENTS=false skips the attempt',
              { cause: error },
            ),
          );
        }
        return undefined;
      }
    },
    async ping() {
      await pool.query('select 1');
    },
    allConnectionsInUse: () => connected >= poolMax && pool.idleCount === 0,
    async close() {
      await pool.end();
    },
  };
}

function createPglite(dir: string, sharedBuffers: string, seed: Blob | undefined): DatabaseHandle {
  if (!isInMemory(dir)) mkdirSync(dir, { recursive: true });
  const client = new PGlite(dir, {
    // A start-up setting, as `postgres -c` takes it: the directory's postgresql.conf is left as
    // initdb wrote it.
    startParams: [...PGlite.defaultStartParams, '-c', `shared_buffers=${sharedBuffers}`],
    ...(seed === undefined ? {} : { loadDataDir: seed }),
  });
  const db = drizzlePglite(client, { schema });
  const runScript = pgliteScriptRunner(client);

  return {
    kind: 'pglite',
    db,
    async migrate() {
      await migratePglite(db, { migrationsFolder: MIGRATIONS_FOLDER });
      await verifyAppRole(db);
    },
    runScript,
    runPrepared: pglitePreparedStatements(runScript),
    async ping() {
      await db.execute(sql`select 1`);
    },
    allConnectionsInUse: () => false,
    async close() {
      await client.close();
    },
  };
}
