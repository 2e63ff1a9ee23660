import type { ScriptRows } from './client.js';
import { sqlState } from './errors.js';
import type { Execution, PreparedStatement } from './prepared-pipeline.js';
import { textLiteral } from './with-user.js';

/** What PostgreSQL answers to EXECUTE of a name that is not prepared in the session. */
const NO_SUCH_STATEMENT = '26000';

/** Statement names are written into SQL as they are: plain lower-case identifiers only. */
const STATEMENT_NAME = /^[a-z_][a-z0-9_]*$/;

function executeStatement({ statement, values }: Execution): string {
  if (values.length === 0) return `execute ${statement.name}`;
  // A quoted literal has no type of its own: PostgreSQL reads it with the parameter's input
  // function, as it reads a text parameter bound through the extended protocol.
  const literals = values.map((value) => (value === null ? 'null' : textLiteral(value)));
  return `execute ${statement.name}(${literals.join(', ')})`;
}

/**
 * DatabaseHandle.runPrepared for PGlite. PGlite is one session in this process, so SQL-level
 * `PREPARE` (once per statement, in a call of its own) and a script of `EXECUTE`s (one call,
 * one implicit transaction, the settings of the first statement holding for the rest, as in
 * any script) give the same answers as the pipeline on node-postgres, without parsing,
 * analysing and planning the statement again on every request. On PGlite that work runs as
 * WebAssembly on the thread that serves HTTP: a quarter to a third of a list's CPU (README,
 * Benchmark, "Prepared statements on PGlite").
 *
 * `exec` runs a script and answers each statement's rows (DatabaseHandle.runScript).
 */
export function pglitePreparedStatements(exec: (script: string) => Promise<ScriptRows[]>) {
  /** Name → its text and the PREPARE that makes it (shared by requests that race for it). */
  const prepared = new Map<string, { text: string; ready: Promise<unknown> }>();

  const prepare = ({ name, text }: PreparedStatement): Promise<unknown> => {
    const known = prepared.get(name);
    if (known !== undefined) {
      if (known.text !== text) {
        throw new Error(`prepared statement ${name} was given two different texts`);
      }
      return known.ready;
    }
    if (!STATEMENT_NAME.test(name)) throw new Error(`not a statement name: ${name}`);
    // PREPARE is not transactional: once made, the statement stays whatever happens next.
    const entry = { text, ready: exec(`prepare ${name} as ${text}`) };
    prepared.set(name, entry);
    entry.ready.catch(() => {
      if (prepared.get(name) === entry) prepared.delete(name);
    });
    return entry.ready;
  };

  const run = async (executions: readonly Execution[]): Promise<ScriptRows[]> => {
    await Promise.all(executions.map(({ statement }) => prepare(statement)));
    return exec(executions.map(executeStatement).join(';\n'));
  };

  return async (executions: readonly Execution[]): Promise<ScriptRows[]> => {
    try {
      return await run(executions);
    } catch (error) {
      if (sqlState(error) !== NO_SUCH_STATEMENT) throw error;
      // Something deallocated them (`DEALLOCATE ALL`, `DISCARD ALL`): the failed script ran
      // nothing that stays (its implicit transaction was rolled back), so prepare them again.
      prepared.clear();
      return run(executions);
    }
  };
}
