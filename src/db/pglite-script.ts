import { type PGlite, types } from '@electric-sql/pglite';
import type { ScriptRows } from './client.js';

/**
 * DatabaseHandle.runScript for PGlite, reading PostgreSQL's answer itself. `PGlite.exec`
 * turns every field of every row into a fresh ArrayBuffer and a TextDecoder call, wraps each
 * message in an object, then builds rows with Object.fromEntries: a sixth of the service's
 * CPU per list on PGlite (CPU profile under `npm run bench -- --pglite`), where that CPU is
 * the thread serving HTTP. Here the answer is copied once into one buffer and each field is
 * sliced out of it as text and passed to the type parser `exec` would use
 * (`client.parsers`), so the rows are the same values `exec` gives.
 *
 * What `exec` guarantees is kept: the script runs under PGlite's transaction and query locks
 * (never between the statements of someone else's `transaction()`), one Query message as one
 * implicit transaction followed by a Sync (as `exec` sends), the file system synced after it,
 * the first error thrown with its SQLSTATE as `code`, and "PGlite is closed" once it is.
 */
export function pgliteScriptRunner(client: PGlite): (script: string) => Promise<ScriptRows[]> {
  const answer = new AnswerBuffer();
  return async (script) => {
    await client._checkReady();
    return client._runExclusiveTransaction(() =>
      client._runExclusiveQuery(async () => {
        answer.reset();
        await client.execProtocolRawStream(queryMessage(script), {
          onRawData: (bytes) => answer.append(bytes),
        });
        return readScriptAnswer(answer.bytes(), (typeId) => client.parsers[typeId]);
      }),
    );
  };
}

/** A PostgreSQL error from PGlite, as `exec` would have thrown it: `code` is the SQLSTATE. */
export class PgliteScriptError extends Error {
  override name = 'PgliteScriptError';

  constructor(
    message: string,
    readonly code: string | undefined,
    readonly severity: string | undefined,
    readonly detail: string | undefined,
    readonly hint: string | undefined,
  ) {
    super(message);
  }
}

const SYNC = [0x53, 0, 0, 0, 4];

/** A simple-protocol Query message for `script`, then a Sync, as `PGlite.exec` sends them. */
function queryMessage(script: string): Buffer {
  const length = Buffer.byteLength(script);
  const message = Buffer.allocUnsafe(1 + 4 + length + 1 + SYNC.length);
  message[0] = 0x51; // 'Q'
  message.writeInt32BE(4 + length + 1, 1);
  message.write(script, 5, length, 'utf8');
  message[5 + length] = 0;
  message.set(SYNC, 6 + length);
  return message;
}

/** A buffer larger than this is dropped after its call, not kept for the next one. */
const KEPT_CAPACITY = 1 << 20;

/**
 * The answer of one call. PGlite hands it over as views into WebAssembly memory that the
 * next write reuses, so each is copied, into one buffer reused from call to call (the calls
 * never overlap: they hold PGlite's query lock).
 */
class AnswerBuffer {
  private buffer = Buffer.allocUnsafe(64 * 1024);
  private length = 0;

  reset(): void {
    if (this.buffer.length > KEPT_CAPACITY) this.buffer = Buffer.allocUnsafe(64 * 1024);
    this.length = 0;
  }

  append(bytes: Uint8Array): void {
    const needed = this.length + bytes.length;
    if (needed > this.buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(needed, this.buffer.length * 2));
      this.buffer.copy(grown, 0, 0, this.length);
      this.buffer = grown;
    }
    this.buffer.set(bytes, this.length);
    this.length = needed;
  }

  bytes(): Buffer {
    return this.buffer.subarray(0, this.length);
  }
}

type Parser = (text: string, typeId: number) => unknown;

interface Column {
  name: string;
  typeId: number;
  parse: Parser | undefined;
}

/**
 * Each statement's rows from the backend messages of a simple-protocol script: a result per
 * CommandComplete (and one empty result if there was none, as `exec` answers), values parsed
 * by their type's parser. An ErrorResponse is thrown once the whole answer is read.
 */
function readScriptAnswer(
  answer: Buffer,
  parserOf: (typeId: number) => Parser | undefined,
): ScriptRows[] {
  const results: ScriptRows[] = [];
  let columns: Column[] = [];
  let rows: ScriptRows = [];
  let error: PgliteScriptError | undefined;
  let at = 0;
  while (at + 5 <= answer.length) {
    const type = answer[at];
    const end = at + 1 + answer.readInt32BE(at + 1);
    let field = at + 5;
    if (end > answer.length) throw new Error('PGlite answered a truncated message');
    switch (type) {
      case 0x54: {
        // 'T' RowDescription: name, table, column number, type, size, modifier, format.
        const count = answer.readInt16BE(field);
        field += 2;
        columns = [];
        for (let i = 0; i < count; i++) {
          const nameEnd = answer.indexOf(0, field);
          const name = answer.toString('utf8', field, nameEnd);
          const typeId = answer.readInt32BE(nameEnd + 7);
          columns.push({ name, typeId, parse: parserOf(typeId) ?? types.parsers[typeId] });
          field = nameEnd + 19;
        }
        break;
      }
      case 0x44: {
        // 'D' DataRow: each value's length (-1 for NULL), then its text.
        const count = answer.readInt16BE(field);
        field += 2;
        const row: Record<string, unknown> = {};
        for (let i = 0; i < count; i++) {
          const size = answer.readInt32BE(field);
          field += 4;
          const column = columns[i];
          if (column === undefined) throw new Error('PGlite answered a row without its columns');
          if (size < 0) {
            row[column.name] = null;
            continue;
          }
          const text = answer.toString('utf8', field, field + size);
          field += size;
          row[column.name] = column.parse === undefined ? text : column.parse(text, column.typeId);
        }
        rows.push(row);
        break;
      }
      case 0x43: // 'C' CommandComplete: the statement's rows are all here.
        results.push(rows);
        rows = [];
        columns = [];
        break;
      case 0x45: // 'E' ErrorResponse: the first one is the script's error.
        error ??= errorOf(answer, field, end);
        break;
      default:
        // ReadyForQuery, notices, parameter status, empty query: nothing to return.
        break;
    }
    at = end;
  }
  if (error !== undefined) throw error;
  if (results.length === 0) results.push([]);
  return results;
}

/** The fields of an ErrorResponse: a code byte, then a NUL-terminated text, until a 0 byte. */
function errorOf(answer: Buffer, start: number, end: number): PgliteScriptError {
  const fields = new Map<string, string>();
  let at = start;
  while (at < end && answer[at] !== 0) {
    const textEnd = answer.indexOf(0, at + 1);
    fields.set(String.fromCharCode(answer[at] ?? 0), answer.toString('utf8', at + 1, textEnd));
    at = textEnd + 1;
  }
  return new PgliteScriptError(
    fields.get('M') ?? 'PGlite answered an error without a message',
    fields.get('C'),
    fields.get('S'),
    fields.get('D'),
    fields.get('H'),
  );
}
