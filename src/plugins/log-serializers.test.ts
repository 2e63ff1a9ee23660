import { DrizzleQueryError } from 'drizzle-orm/errors';
import { describe, expect, it } from 'vitest';
import { serializeError } from './log-serializers.js';

describe('error log serializer', () => {
  it('when a query fails, then the log keeps the SQL and the cause but not the parameters', () => {
    const cause = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), {
      code: 'ECONNREFUSED',
    });
    const error = new DrizzleQueryError(
      'insert into "account" ("password") values ($1)',
      ['$argon2id$secret-hash', 'ada@example.com'],
      cause,
    );

    const logged = JSON.stringify(serializeError(error));

    expect(logged).toContain('insert into \\"account\\"');
    expect(logged).toContain('ECONNREFUSED');
    expect(logged).not.toContain('secret-hash');
    expect(logged).not.toContain('ada@example.com');
  });

  it('when an ordinary error is logged, then its message and stack are kept', () => {
    const logged = serializeError(new TypeError('boom'));
    expect(logged).toMatchObject({ type: 'TypeError', message: 'boom' });
    expect(logged.stack).toContain('boom');
  });
});
