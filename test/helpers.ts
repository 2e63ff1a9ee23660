import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { FastifyInstance } from 'fastify';
import { SignJWT } from 'jose';
import pg from 'pg';
import { inject } from 'vitest';
import { buildApp } from '../src/app.js';
import { type Config, loadConfig } from '../src/config.js';
import { createDatabase, type DatabaseHandle } from '../src/db/client.js';
import { atLocalPort } from './free-port.js';

export const TEST_SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

/** Set by .ci/run (and by anyone) to run every suite on a real PostgreSQL server. */
export const ADMIN_DATABASE_URL = process.env.DATABASE_URL;
export const DATABASE_KIND = ADMIN_DATABASE_URL ? 'postgres' : 'pglite';

/**
 * For the tests that need a real PostgreSQL in both CI runs (outages, PgBouncer, clusters):
 * DATABASE_URL's server when set, else the one every machine here and CI has.
 */
export const POSTGRES_ADMIN_URL =
  ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  handle: DatabaseHandle;
  /** The connection string of the suite's own database (postgres only). */
  url: string | undefined;
  drop(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${name}`;
  return parsed.toString();
}

/**
 * How a suite's code reaches `directUrl`: through the run's PgBouncer when .ci/run's third pass
 * (TEST_VIA_PGBOUNCER=1, test/global-setup.ts) started one, else directly.
 */
function connectionUrl(directUrl: string): string {
  const bouncerPort = inject('pgbouncerPort');
  return bouncerPort === null ? directUrl : atLocalPort(directUrl, bouncerPort);
}

/**
 * Creates an empty database with a unique name on the server of `adminUrl`. Its `url` is how
 * apps, servers and checks connect (through the run's PgBouncer, if any); creating and dropping
 * always talk to the server itself.
 */
export async function createPostgresDatabase(adminUrl: string) {
  const name = `todo_test_${process.pid}_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(`create database "${name}"`);
  } finally {
    await admin.end();
  }
  const directUrl = withDatabase(adminUrl, name);
  return {
    name,
    url: connectionUrl(directUrl),
    /** The server itself, never through a bouncer (for checks of the bouncer's own effects). */
    directUrl,
    async drop() {
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`drop database if exists "${name}" with (force)`);
      } finally {
        await client.end();
      }
    },
  };
}

let pgliteSeed: Blob | undefined;

/** The run's dump of a migrated PGlite database (test/global-setup.ts), read once per worker. */
function migratedPgliteSeed(): Blob {
  if (pgliteSeed === undefined) {
    const path = inject('pgliteSeedPath');
    if (path === null) throw new Error('no PGlite seed: test/global-setup.ts did not make one');
    pgliteSeed = new Blob([readFileSync(path)]);
  }
  return pgliteSeed;
}

/** Connections of a suite's database handle on PostgreSQL. */
export const SUITE_POOL_SIZE = 5;

/** A fresh, migrated database for one test file: PGlite in memory, or a new PostgreSQL one. */
export async function createTestDatabase(): Promise<TestDatabase> {
  if (!ADMIN_DATABASE_URL) {
    const handle = createDatabase(
      { kind: 'pglite', dir: 'memory://' },
      () => undefined,
      migratedPgliteSeed(),
    );
    await handle.migrate();
    return { handle, url: undefined, drop: () => handle.close() };
  }
  const database = await createPostgresDatabase(ADMIN_DATABASE_URL);
  const handle = createDatabase(
    { kind: 'postgres', url: database.url, poolMax: SUITE_POOL_SIZE },
    () => undefined,
  );
  await handle.migrate();
  return {
    handle,
    url: database.url,
    async drop() {
      await handle.close();
      await database.drop();
    },
  };
}

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({
    NODE_ENV: 'test',
    BETTER_AUTH_SECRET: TEST_SECRET,
    LOG_LEVEL: 'silent',
    PGLITE_DIR: 'memory://',
    ...env,
  });
}

export interface TestContext {
  app: FastifyInstance;
  database: TestDatabase;
  close(): Promise<void>;
}

/** An app on its own fresh database; call close() in afterAll. */
export async function startTestApp(env: Record<string, string> = {}): Promise<TestContext> {
  const database = await createTestDatabase();
  const app = await buildApp(testConfig(env), { database: database.handle });
  await app.ready();
  return {
    app,
    database,
    async close() {
      await app.close();
      await database.drop();
    },
  };
}

export interface TokenOptions {
  secret?: string;
  /** Seconds from now; negative for an expired token. Pass null for no `exp`. */
  expiresIn?: number | null;
  claims?: Record<string, unknown>;
  header?: Record<string, unknown>;
}

/** An HS256 token as a front end holding BETTER_AUTH_SECRET would mint it. */
export async function signToken(sub: string | undefined, options: TokenOptions = {}) {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ ...options.claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT', ...options.header })
    .setIssuedAt(now);
  if (sub !== undefined) jwt.setSubject(sub);
  const expiresIn = options.expiresIn === undefined ? 3600 : options.expiresIn;
  if (expiresIn !== null) jwt.setExpirationTime(now + expiresIn);
  return jwt.sign(new TextEncoder().encode(options.secret ?? TEST_SECRET));
}

export interface TestUser {
  id: string;
  token: string;
  headers: { authorization: string };
}

/** A user nobody else in the run shares, with a valid token. */
export async function createUserAndToken(claims: Record<string, unknown> = {}): Promise<TestUser> {
  const id = `user_${randomUUID()}`;
  const token = await signToken(id, { claims });
  return { id, token, headers: { authorization: `Bearer ${token}` } };
}

/** Creates a task through the API and returns its JSON. */
export async function createTask(
  app: FastifyInstance,
  user: TestUser,
  body: Record<string, unknown> = { title: 'A task' },
) {
  const response = await app.inject({
    method: 'POST',
    url: `/api/${encodeURIComponent(user.id)}/tasks`,
    headers: user.headers,
    payload: body,
  });
  if (response.statusCode !== 201) {
    throw new Error(`createTask: expected 201, got ${response.statusCode} ${response.body}`);
  }
  return response.json<TaskBody>();
}

export interface TaskBody {
  id: number;
  user_id: string;
  title: string;
  description: string | null;
  completed: boolean;
  created_at: string;
  updated_at: string;
}
