import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** PGlite's own test for "this directory holds a cluster" (it runs initdb when the file is missing). */
const CLUSTER_MARKER = 'PG_VERSION';

/** As long as the server's start-up lets its migrations take (app.ts, pluginTimeout). */
const INITDB_LIMIT_MS = 120_000;

/**
 * Run by `node -e` with the PGlite package's entry and the directory as arguments. CommonJS,
 * so that it needs no file of its own beside the compiled code (or the sources under tsx).
 */
const INITDB_SCRIPT = `
const [entry, dir] = process.argv.slice(1);
const { PGlite } = require(entry);
const database = new PGlite(dir);
database.waitReady.then(
  () => database.close(),
  (error) => {
    // Emscripten's file-system errors carry a name and an errno, and no message.
    const errno = error?.errno === undefined ? '' : ' (errno ' + error.errno + ')';
    process.stderr.write(error?.message || String(error?.name ?? error) + errno);
    process.exitCode = 1;
  },
);
`;

/** PGlite's `memory://` directories (with or without a name after it) live in no file. */
export function isInMemory(dir: string): boolean {
  return dir.startsWith('memory://');
}

/**
 * Creates the PGlite cluster in `dir` when there is none yet, in a child process of its own.
 * initdb grows PGlite's WebAssembly memory to about 600 MB, and WebAssembly memory is never
 * given back: in the server's process, the first start on a new directory held about 730 MB of
 * RSS until the next restart, against about 260 MB for every later start. Closing that PGlite
 * and opening another in the same process does not return it either (measured, also after a
 * forced GC). Resolves to whether a cluster was created; in-memory databases are left alone.
 */
export async function createPgliteClusterIfMissing(dir: string): Promise<boolean> {
  if (isInMemory(dir) || existsSync(join(dir, CLUSTER_MARKER))) return false;
  mkdirSync(dir, { recursive: true });
  const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
  try {
    await execFileAsync(process.execPath, ['-e', INITDB_SCRIPT, entry, dir], {
      timeout: INITDB_LIMIT_MS,
    });
  } catch (error) {
    const stderr = typeof error === 'object' && error !== null ? Reflect.get(error, 'stderr') : '';
    const detail = typeof stderr === 'string' && stderr.trim() !== '' ? `: ${stderr.trim()}` : '';
    throw new Error(`could not create the PGlite database in ${dir}${detail}`, { cause: error });
  }
  if (!existsSync(join(dir, CLUSTER_MARKER))) {
    throw new Error(`PGlite left no database in ${dir}`);
  }
  return true;
}
