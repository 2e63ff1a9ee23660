import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgTable,
  primaryKey,
  text,
  timestamp,
  varchar,
} from 'drizzle-orm/pg-core';

export const TITLE_MAX_LENGTH = 200;
export const DESCRIPTION_MAX_LENGTH = 1000;

const createdAt = () => timestamp('created_at', { withTimezone: true }).notNull().defaultNow();
const updatedAt = () => timestamp('updated_at', { withTimezone: true }).notNull().defaultNow();

/**
 * Better Auth's `user` table, so that the users it signs up are the ones tasks belong to.
 * `email` is nullable (Better Auth's own is not): a token from an external issuer may
 * carry only `sub`, and such a user still needs a row to own tasks.
 */
export const user = pgTable('user', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  email: text('email').unique(),
  emailVerified: boolean('email_verified').notNull().default(false),
  image: text('image'),
  createdAt: createdAt(),
  updatedAt: updatedAt(),
});

export const session = pgTable(
  'session',
  {
    id: text('id').primaryKey(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    token: text('token').notNull().unique(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
    ipAddress: text('ip_address'),
    userAgent: text('user_agent'),
    userId: text('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
  },
  (table) => [index('session_user_id_idx').on(table.userId)],
);

export const account = pgTable(
  'account',
  {
    id: text('id').primaryKey(),
    accountId: text('account_id').notNull(),
    providerId: text('provider_id').notNull(),
    userId: text('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
    accessToken: text('access_token'),
    refreshToken: text('refresh_token'),
    idToken: text('id_token'),
    accessTokenExpiresAt: timestamp('access_token_expires_at', { withTimezone: true }),
    refreshTokenExpiresAt: timestamp('refresh_token_expires_at', { withTimezone: true }),
    scope: text('scope'),
    password: text('password'),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [index('account_user_id_idx').on(table.userId)],
);

export const verification = pgTable(
  'verification',
  {
    id: text('id').primaryKey(),
    identifier: text('identifier').notNull(),
    value: text('value').notNull(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [index('verification_identifier_idx').on(table.identifier)],
);

/** Better Auth's JWT plugin key set; private keys are encrypted with BETTER_AUTH_SECRET. */
export const jwks = pgTable('jwks', {
  id: text('id').primaryKey(),
  publicKey: text('public_key').notNull(),
  privateKey: text('private_key').notNull(),
  createdAt: createdAt(),
  expiresAt: timestamp('expires_at', { withTimezone: true }),
  alg: text('alg'),
  crv: text('crv'),
});

/**
 * Row-level security (migration 0002, not expressible here): RLS is enabled and forced, and a
 * row is visible and writable only when `user_id = current_setting('app.user_id', true)`.
 * The service reaches it only through `withUser` (src/db/with-user.ts).
 */
export const task = pgTable(
  'task',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    userId: text('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
    title: varchar('title', { length: TITLE_MAX_LENGTH }).notNull(),
    description: varchar('description', { length: DESCRIPTION_MAX_LENGTH }),
    completed: boolean('completed').notNull().default(false),
    createdAt: createdAt(),
    updatedAt: updatedAt(),
  },
  (table) => [
    check(
      'task_title_length',
      sql`char_length(btrim(${table.title})) between 1 and ${sql.raw(String(TITLE_MAX_LENGTH))}`,
    ),
    check(
      'task_description_length',
      sql`${table.description} is null or char_length(${table.description}) <= ${sql.raw(String(DESCRIPTION_MAX_LENGTH))}`,
    ),
    // One index per list shape (status filter × sort), each ending in the tie-breaker,
    // so every list query is an index scan that stops at LIMIT.
    index('task_user_created_idx').on(
      table.userId,
      table.createdAt.desc().nullsFirst(),
      table.id.desc().nullsFirst(),
    ),
    index('task_user_title_idx').on(table.userId, sql`lower(${table.title})`, table.id),
    index('task_user_completed_created_idx').on(
      table.userId,
      table.completed,
      table.createdAt.desc().nullsFirst(),
      table.id.desc().nullsFirst(),
    ),
    index('task_user_completed_title_idx').on(
      table.userId,
      table.completed,
      sql`lower(${table.title})`,
      table.id,
    ),
  ],
);

/** Longest `Idempotency-Key` header accepted (and stored). */
export const IDEMPOTENCY_KEY_MAX_LENGTH = 255;

/**
 * One row per `Idempotency-Key` a user sent to `POST …/tasks` in the last 24 hours. The row
 * is inserted first, in the transaction that creates the task, so two requests racing with
 * one key serialize on the primary key; the response columns are filled before commit.
 * Like `task`, it has row-level security (migration 0002): a replayed body is a task.
 */
export const idempotencyKey = pgTable(
  'idempotency_key',
  {
    userId: text('user_id')
      .notNull()
      .references(() => user.id, { onDelete: 'cascade' }),
    key: varchar('key', { length: IDEMPOTENCY_KEY_MAX_LENGTH }).notNull(),
    /** SHA-256 (hex) of the validated request body: the same key with another body is refused. */
    requestHash: text('request_hash').notNull(),
    responseStatus: integer('response_status'),
    responseBody: jsonb('response_body').$type<Record<string, unknown>>(),
    responseLocation: text('response_location'),
    createdAt: createdAt(),
  },
  (table) => [
    primaryKey({ columns: [table.userId, table.key] }),
    check('idempotency_key_key_length', sql`char_length(${table.key}) >= 1`),
  ],
);

/**
 * How many tasks each user has, and how many of them are completed: the `X-Total-Count` of
 * every list, read by primary key instead of counting a user's rows (a count of 100 000 rows
 * per page made a large user's page 14 times slower than a small user's). Kept exact by
 * statement-level triggers on `task` (migration 0003, not expressible here), in the same
 * transaction as the change; row-level security as on `task`. No CHECK on the figures: were
 * they ever to drift (triggers disabled by hand), a wrong count beats refusing deletes;
 * README "Operations" has the statement that recounts.
 */
export const taskCount = pgTable('task_count', {
  userId: text('user_id')
    .primaryKey()
    .references(() => user.id, { onDelete: 'cascade' }),
  total: integer('total').notNull().default(0),
  completed: integer('completed').notNull().default(0),
});

export const schema = {
  user,
  session,
  account,
  verification,
  jwks,
  task,
  idempotencyKey,
  taskCount,
};
