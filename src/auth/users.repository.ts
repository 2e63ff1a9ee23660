import type { Database } from '../db/client.js';
import { sqlState } from '../db/errors.js';
import { user } from '../db/schema.js';
import type { TokenIdentity } from './token-verifier.js';

const UNIQUE_VIOLATION = '23505';

/**
 * Makes sure a token's user has a row for tasks to reference, without a write on every
 * request: ids already seen by this process are remembered (bounded, oldest evicted).
 *
 * It runs as the connection user, not inside `withUser`: `user` has no row-level security
 * (Better Auth, which owns the table, reads and writes it as the connection user before any
 * user is known), so the role would confine nothing here and only cost a transaction. The
 * role holds the grants this upsert needs (tested in tasks.rls.test.ts), should that change.
 */
export class UserRegistry {
  private readonly known = new Map<string, true>();

  constructor(
    private readonly db: Database,
    private readonly maxRemembered = 50_000,
  ) {}

  async ensure(identity: TokenIdentity): Promise<void> {
    if (this.known.has(identity.sub)) return;
    try {
      await this.insert(identity, identity.email ?? null);
    } catch (error) {
      // The email belongs to another account: the claim is informational, the id is what
      // matters, so keep the user without it rather than refuse the request.
      if (sqlState(error) !== UNIQUE_VIOLATION) throw error;
      await this.insert(identity, null);
    }
    this.remember(identity.sub);
  }

  /** Drops a remembered id, e.g. after the row turned out to be gone. */
  forget(userId: string): void {
    this.known.delete(userId);
  }

  private async insert(identity: TokenIdentity, email: string | null): Promise<void> {
    // ON CONFLICT (id) makes concurrent first requests for one user all succeed.
    await this.db
      .insert(user)
      .values({ id: identity.sub, name: identity.name ?? identity.email ?? '', email })
      .onConflictDoNothing({ target: user.id });
  }

  private remember(userId: string): void {
    this.known.set(userId, true);
    if (this.known.size > this.maxRemembered) {
      const oldest = this.known.keys().next();
      if (!oldest.done) this.known.delete(oldest.value);
    }
  }
}
