import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createPgliteClusterIfMissing } from './pglite-cluster.js';

/** Creating a cluster is covered end to end by test/e2e/pglite-first-start.e2e.test.ts. */
describe('creating the PGlite database before the server opens it', () => {
  const dirs: string[] = [];
  const scratch = () => {
    const dir = mkdtempSync(join(tmpdir(), 'todo-pglite-cluster-'));
    dirs.push(dir);
    return dir;
  };
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  it('when the database is in memory, then nothing is created', async () => {
    expect(await createPgliteClusterIfMissing('memory://')).toBe(false);
    expect(existsSync('memory:')).toBe(false);
  });

  it('when the directory already holds a cluster, then it is left as it is', async () => {
    const dir = scratch();
    writeFileSync(join(dir, 'PG_VERSION'), '17\n');
    expect(await createPgliteClusterIfMissing(dir)).toBe(false);
    expect(readdirSync(dir)).toEqual(['PG_VERSION']);
  });

  it('when initdb fails, then the error names the directory and says why', async () => {
    const dir = scratch();
    // A file where initdb must make a directory.
    writeFileSync(join(dir, 'base'), 'not a directory');
    await expect(createPgliteClusterIfMissing(dir)).rejects.toThrow(
      new RegExp(`could not create the PGlite database in ${dir}: ErrnoError`),
    );
  }, 60_000);
});
