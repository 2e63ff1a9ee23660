import type pg from 'pg';

/**
 * Checks a client out of `pool`, sends `begin` (which may carry more statements in the same
 * message), runs `fn` on the client, commits, and releases it. On any error it rolls back and
 * rethrows that error; a client whose ROLLBACK failed (its connection is gone) is discarded by
 * the pool rather than handed to the next caller.
 */
export async function inPooledTransaction<T>(
  pool: pg.Pool,
  begin: string,
  fn: (client: pg.PoolClient) => Promise<T>,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(begin);
    const result = await fn(client);
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
