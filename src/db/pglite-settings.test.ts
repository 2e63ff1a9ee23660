import { afterEach, describe, expect, it } from 'vitest';
import { type DatabaseHandle, createDatabase } from './client.js';

/**
 * PGlite in memory, whatever database the rest of the run uses: the embedded database is what
 * `npm start` runs on, and its settings are this project's, not the server's.
 */
describe('the embedded PGlite database', () => {
  let handle: DatabaseHandle | undefined;
  afterEach(async () => {
    await handle?.close();
    handle = undefined;
  });

  const sharedBuffers = async (database: DatabaseHandle) => {
    const [rows] = await database.runScript('show shared_buffers');
    return rows?.[0]?.shared_buffers;
  };

  it('when no size is configured, then its page cache is 16MB, not PostgreSQL’s 128MB', async () => {
    handle = createDatabase({ kind: 'pglite', dir: 'memory://' }, () => undefined);
    expect(await sharedBuffers(handle)).toBe('16MB');
  });

  it('when a size is configured, then PGlite runs with it', async () => {
    handle = createDatabase(
      { kind: 'pglite', dir: 'memory://', sharedBuffers: '8MB' },
      () => undefined,
    );
    expect(await sharedBuffers(handle)).toBe('8MB');
  });
});
