import pg from 'pg';
import type { ScriptRows } from './client.js';

/** A named statement with `$n` parameters, planned once per server connection. */
export interface PreparedStatement {
  name: string;
  text: string;
}

/** One execution of a PreparedStatement: text parameters, or null for SQL NULL. */
export interface Execution {
  statement: PreparedStatement;
  values: readonly (string | null)[];
}

interface Field {
  name: string;
  dataTypeID: number;
  format: string;
}

type Parser = (value: string) => unknown;

/** Name → text of the statements each connection has parsed (they live as long as it does). */
const parsedOn = new WeakMap<pg.Connection, Map<string, string>>();

/**
 * The extended-protocol messages of several executions (Bind, Describe, Execute each) followed
 * by one Sync: one round trip, and one implicit transaction, so that settings made by the
 * first (`set_config(…, true)`) hold for the rest, as in a simple-protocol script. Unlike a
 * script, nothing is parsed or planned again. node-postgres sends a Sync after every query,
 * which would end the transaction between them, hence this Submittable (node-postgres's own
 * extension point, as pg-cursor uses it).
 *
 * The statements must already be parsed on the connection (runPipeline sees to it): after an error
 * PostgreSQL skips every message up to Sync, and a Parse among them would be lost unseen.
 */
class ExecutionPipeline implements pg.Submittable {
  private readonly results: ScriptRows[] = [];
  private fields: Field[] = [];
  private parsers: Parser[] = [];
  private rows: ScriptRows = [];
  private failed = false;

  constructor(
    private readonly executions: readonly Execution[],
    public callback: (error: Error | null, results?: ScriptRows[]) => void,
  ) {}

  submit(connection: pg.Connection): void {
    connection.stream.cork();
    try {
      for (const { statement, values } of this.executions) {
        connection.bind({ statement: statement.name, values: [...values] }, true);
        connection.describe({ type: 'P', name: '' }, true);
        connection.execute({ portal: '' }, true);
      }
      connection.sync();
    } finally {
      connection.stream.uncork();
    }
  }

  handleRowDescription(message: { fields: Field[] }): void {
    this.fields = message.fields;
    this.parsers = message.fields.map((field): Parser =>
      pg.types.getTypeParser(field.dataTypeID, 'text'),
    );
  }

  handleDataRow(message: { fields: (string | null)[] }): void {
    const row: Record<string, unknown> = {};
    for (let i = 0; i < this.fields.length; i++) {
      const value = message.fields[i];
      const field = this.fields[i];
      const parse = this.parsers[i];
      if (field === undefined || parse === undefined) continue;
      row[field.name] = value === null || value === undefined ? null : parse(value);
    }
    this.rows.push(row);
  }

  handleCommandComplete(): void {
    this.results.push(this.rows);
    this.rows = [];
    this.fields = [];
    this.parsers = [];
  }

  handleEmptyQuery(): void {
    this.handleCommandComplete();
  }

  handleError(error: Error): void {
    // node-postgres drops the active query on an error; the ReadyForQuery that follows the
    // skipped messages reaches no one, so the answer is given now (as its own Query does).
    if (this.failed) return;
    this.failed = true;
    this.callback(error);
  }

  handleReadyForQuery(): void {
    if (this.failed) return;
    if (this.results.length !== this.executions.length) {
      this.failed = true;
      this.callback(new Error('the database answered fewer statements than were sent'));
      return;
    }
    this.callback(null, this.results);
  }

  handlePortalSuspended(): void {
    this.handleError(new Error('a prepared statement was suspended (row limit)'));
  }

  handleCopyInResponse(): void {
    this.handleError(new Error('COPY is not supported in a prepared pipeline'));
  }

  handleCopyData(): void {
    // never reached: no COPY is sent
  }
}

/**
 * Parses (Parse, then Sync) the statements not yet known on this connection. Once per
 * connection and statement; an error here leaves nothing half-known.
 */
class ParseStatements implements pg.Submittable {
  private failed = false;

  constructor(
    private readonly statements: readonly PreparedStatement[],
    public callback: (error: Error | null) => void,
  ) {}

  submit(connection: pg.Connection): void {
    connection.stream.cork();
    try {
      for (const { name, text } of this.statements) {
        connection.parse({ name, text, types: [] }, true);
      }
      connection.sync();
    } finally {
      connection.stream.uncork();
    }
  }

  handleError(error: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.callback(error);
  }

  handleReadyForQuery(): void {
    if (!this.failed) this.callback(null);
  }
}

function connectionOf(client: pg.PoolClient): pg.Connection {
  const connection: unknown = Reflect.get(client, 'connection');
  if (!(connection instanceof pg.Connection))
    throw new Error('node-postgres client has no connection');
  return connection;
}

/**
 * Runs `executions` on one pooled client as one pipeline (see ExecutionPipeline), parsing
 * first, in a round trip of its own, the statements this server connection has not seen.
 */
export async function runPipeline(
  pool: pg.Pool,
  executions: readonly Execution[],
): Promise<ScriptRows[]> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    const connection = connectionOf(client);
    let known = parsedOn.get(connection);
    if (known === undefined) {
      known = new Map();
      parsedOn.set(connection, known);
    }
    const missing = new Map<string, PreparedStatement>();
    for (const { statement } of executions) {
      const text = known.get(statement.name) ?? missing.get(statement.name)?.text;
      if (text === undefined) missing.set(statement.name, statement);
      else if (text !== statement.text) {
        throw new Error(`prepared statement ${statement.name} was given two different texts`);
      }
    }
    if (missing.size > 0) {
      const statements = [...missing.values()];
      await new Promise<void>((resolve, reject) => {
        client.query(
          new ParseStatements(statements, (error) => (error ? reject(error) : resolve())),
        );
      });
      for (const { name, text } of statements) known.set(name, text);
    }
    return await new Promise<ScriptRows[]>((resolve, reject) => {
      client.query(
        new ExecutionPipeline(executions, (error, results) =>
          error ? reject(error) : resolve(results ?? []),
        ),
      );
    });
  } catch (error) {
    // A connection-level failure (not an SQL error answered by the server) must not go back.
    if (error instanceof Error && !('code' in error)) broken = error;
    throw error;
  } finally {
    client.release(broken);
  }
}
