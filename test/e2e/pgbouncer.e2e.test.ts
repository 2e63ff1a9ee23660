/**
 * The real server process behind PgBouncer in transaction pooling mode (what Neon's pooled
 * `-pooler` endpoint runs): each transaction, or statement outside one, may land on another
 * server connection, and 3 server connections serve every client. Anything that relies on
 * session state (a session-level SET, a session advisory lock, a named prepared statement)
 * breaks here, where it works on a direct connection.
 *
 * PostgreSQL only in effect, but it always runs: the server of DATABASE_URL when set, else
 * the PostgreSQL every machine here and CI has at 127.0.0.1:5432, in fresh databases it drops
 * at the end. A missing `pgbouncer` fails it (.ci/run installs it).
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDatabase, type DatabaseHandle } from '../../src/db/client.js';
import {
  createPostgresDatabase,
  POSTGRES_ADMIN_URL,
  createUserAndToken,
  type TaskBody,
  type TestUser,
} from '../helpers.js';
import { type PgBouncer, startPgBouncer } from '../pgbouncer.js';
import { freePort, REPO_ROOT, type ServerProcess, startServer } from '../process.js';

/** Server connections per database and user: far fewer than the clients sharing them. */
const POOL_SIZE = 3;
/** In CORS_ORIGINS (its default), so Better Auth trusts it; Node's fetch needs one. */
const ORIGIN = 'http://localhost:3000';
/** Past this, a start-up or a migrate() counts as hung (a leaked lock never lets go). */
const HANG_LIMIT_MS = 60_000;

const MIGRATION_COUNT = (
  JSON.parse(readFileSync(join(REPO_ROOT, 'drizzle/meta/_journal.json'), 'utf8')) as {
    entries: unknown[];
  }
).entries.length;

type PostgresDatabase = Awaited<ReturnType<typeof createPostgresDatabase>>;

let bouncer: PgBouncer;
let database: PostgresDatabase;
/** The first instance, started alone on the fresh database (it runs the migrations). */
let first: ServerProcess;
/** A second instance on the same database, started while the first is under load. */
let second: ServerProcess | undefined;
const servers: ServerProcess[] = [];
const scratchDatabases: PostgresDatabase[] = [];

async function startInstance(port?: number): Promise<ServerProcess> {
  const server = await startServer({
    ...(port === undefined ? {} : { port }),
    startupLimitMs: HANG_LIMIT_MS,
    env: {
      DATABASE_URL: bouncer.urlFor(database.directUrl),
      LOG_LEVEL: 'warn',
      RATE_LIMIT_USER_PER_MINUTE: '0',
      RATE_LIMIT_IP_PER_MINUTE: '0',
      RATE_LIMIT_AUTH_PER_MINUTE: '0',
      ...(port === undefined ? {} : { BETTER_AUTH_URL: `http://127.0.0.1:${port}` }),
    },
  });
  servers.push(server);
  return server;
}

beforeAll(async () => {
  bouncer = await startPgBouncer(POSTGRES_ADMIN_URL, POOL_SIZE);
  database = await createPostgresDatabase(POSTGRES_ADMIN_URL);
  // Its own address as BETTER_AUTH_URL: the built-in auth's tokens name it as issuer.
  first = await startInstance(await freePort());
}, 120_000);

afterAll(async () => {
  await Promise.all(servers.map((server) => server.kill()));
  await bouncer?.stop();
  await database?.drop();
  await Promise.all(scratchDatabases.map((scratch) => scratch.drop()));
}, 60_000);

/** One query on a direct connection (never through the bouncer). */
async function direct<R extends pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Advisory locks held in `databaseName` right now, by anyone. */
async function advisoryLocks(databaseName: string): Promise<number> {
  const [row] = await direct<{ count: string }>(
    POSTGRES_ADMIN_URL,
    `select count(*) from pg_locks l join pg_database d on d.oid = l.database
     where l.locktype = 'advisory' and l.granted and d.datname = $1`,
    [databaseName],
  );
  return Number(row?.count);
}

async function recordedMigrations(url: string): Promise<number> {
  const [row] = await direct<{ count: string }>(
    url,
    'select count(*) from drizzle.__drizzle_migrations',
  );
  return Number(row?.count);
}

interface Answer<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
}

async function call<T = unknown>(
  server: ServerProcess,
  user: TestUser | null,
  method: string,
  path: string,
  body?: unknown,
  extraHeaders: Record<string, string> = {},
): Promise<Answer<T>> {
  const headers: Record<string, string> = { ...extraHeaders };
  if (user) headers.authorization = `Bearer ${user.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const response = await fetch(`${server.baseUrl}${path}`, {
    method,
    headers,
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(HANG_LIMIT_MS),
  });
  const text = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body: (text === '' ? undefined : JSON.parse(text)) as T,
  };
}

async function create(server: ServerProcess, user: TestUser, title: string, path = '/api/tasks') {
  const answer = await call<TaskBody>(server, user, 'POST', path, { title });
  expect(answer.status, JSON.stringify(answer.body)).toBe(201);
  return answer.body;
}

const titles = (tasks: TaskBody[]) => tasks.map((task) => task.title);

/** Resolves to `work`'s value, or rejects naming `what` when it takes past HANG_LIMIT_MS. */
async function unlessHung<T>(what: string, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: hung`)), HANG_LIMIT_MS);
  });
  try {
    return await Promise.race([work, hung]);
  } finally {
    clearTimeout(timer);
  }
}

describe('start-up through a transaction-pooling PgBouncer', () => {
  it('when the first instance starts on a fresh database, then every migration is applied once and /ready is 200', async () => {
    expect(await recordedMigrations(database.directUrl)).toBe(MIGRATION_COUNT);
    const ready = await call(first, null, 'GET', '/ready');
    expect(ready.status).toBe(200);
    expect(ready.body).toEqual({ status: 'ready', database: 'postgres' });
    expect(await advisoryLocks(database.name)).toBe(0);
  }, 60_000);

  it('when more instances start on the same database while the first is under load, then none hangs and no migration lock is left held', async () => {
    // Load on the first instance keeps the few server connections busy, so the start-up's
    // statements land on different ones: a session-level lock taken on one connection and
    // "released" on another would stay held, and the next start-up would wait forever.
    const user = await createUserAndToken();
    let stop = false;
    const load = Array.from({ length: 8 }, async () => {
      for (let i = 0; !stop; i += 1) {
        if (i % 2 === 0) await create(first, user, `load ${i}`);
        else expect((await call(first, user, 'GET', '/api/tasks?limit=5')).status).toBe(200);
      }
    });
    try {
      second = await startInstance();
      expect(await advisoryLocks(database.name)).toBe(0);
      const third = await startInstance();
      expect(await advisoryLocks(database.name)).toBe(0);
      await third.stop();
    } finally {
      stop = true;
      await Promise.all(load);
    }
    expect(await recordedMigrations(database.directUrl)).toBe(MIGRATION_COUNT);
    expect(await advisoryLocks(database.name)).toBe(0);
  }, 240_000);

  it('when four migrate() calls race on a fresh database through the bouncer, then all finish, each migration is applied once and no lock is left', async () => {
    const scratch = await createPostgresDatabase(POSTGRES_ADMIN_URL);
    scratchDatabases.push(scratch);
    // Four racers over three server connections: one migrates while the others wait.
    const handles: DatabaseHandle[] = Array.from({ length: 4 }, () =>
      createDatabase(
        { kind: 'postgres', url: bouncer.urlFor(scratch.directUrl), poolMax: 2 },
        () => undefined,
      ),
    );
    try {
      await unlessHung(
        'concurrent migrate()',
        Promise.all(handles.map((handle) => handle.migrate())),
      );
      expect(await recordedMigrations(scratch.directUrl)).toBe(MIGRATION_COUNT);
      expect(await advisoryLocks(scratch.name)).toBe(0);
      // And once more, on a database that is already current.
      await unlessHung('migrate() again', Promise.all(handles.map((handle) => handle.migrate())));
      expect(await recordedMigrations(scratch.directUrl)).toBe(MIGRATION_COUNT);
    } finally {
      // A hung racer would keep pool.end() waiting: the database goes first (with force).
      await scratch.drop();
      await Promise.all(handles.map((handle) => handle.close()));
    }
  }, 180_000);
});

describe('the task routes through the bouncer', () => {
  it('when two users use every task route, filters, sorts and pages, then each answers as the contract says', async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();

    const banana = await create(first, alice, 'banana');
    const apple = await create(first, alice, 'Apple', `/api/${alice.id}/tasks`);
    const cherryAnswer = await call<TaskBody>(first, alice, 'POST', `/api/${alice.id}/tasks`, {
      title: 'cherry',
      description: 'from the tree',
    });
    expect(cherryAnswer.status).toBe(201);
    expect(cherryAnswer.headers.get('location')).toBe(
      `/api/${alice.id}/tasks/${cherryAnswer.body.id}`,
    );
    const cherry = cherryAnswer.body;
    expect(cherry).toMatchObject({ user_id: alice.id, description: 'from the tree' });
    const bobs = await create(first, bob, 'Bob only');

    // Toggle, then set, on both URL shapes.
    const toggled = await call<TaskBody>(first, alice, 'PATCH', `/api/tasks/${apple.id}/complete`);
    expect(toggled.status).toBe(200);
    expect(toggled.body.completed).toBe(true);
    const set = await call<TaskBody>(
      first,
      alice,
      'PATCH',
      `/api/${alice.id}/tasks/${cherry.id}/complete`,
      { completed: true },
    );
    expect(set.body.completed).toBe(true);

    const list = async (query: string) => {
      const answer = await call<TaskBody[]>(first, alice, 'GET', `/api/${alice.id}/tasks${query}`);
      expect(answer.status).toBe(200);
      return { titles: titles(answer.body), total: answer.headers.get('x-total-count') };
    };
    expect(await list('')).toEqual({ titles: ['cherry', 'Apple', 'banana'], total: '3' });
    expect(await list('?sort=title')).toEqual({
      titles: ['Apple', 'banana', 'cherry'],
      total: '3',
    });
    expect(await list('?status=completed&sort=title')).toEqual({
      titles: ['Apple', 'cherry'],
      total: '2',
    });
    expect(await list('?status=pending')).toEqual({ titles: ['banana'], total: '1' });
    expect(await list('?sort=title&limit=2&offset=1')).toEqual({
      titles: ['banana', 'cherry'],
      total: '3',
    });
    expect(await list('?status=completed&limit=1')).toEqual({ titles: ['cherry'], total: '2' });
    expect(await list('?limit=2&offset=5')).toEqual({ titles: [], total: '3' });

    const one = await call<TaskBody>(first, alice, 'GET', `/api/tasks/${banana.id}`);
    expect(one.body).toEqual(banana);
    const updated = await call<TaskBody>(
      first,
      alice,
      'PUT',
      `/api/${alice.id}/tasks/${banana.id}`,
      {
        title: 'Banana bread',
        description: null,
        completed: true,
      },
    );
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({
      title: 'Banana bread',
      description: null,
      completed: true,
    });

    // Bob: only his own task, and Alice's are 404 on every route, 403 under her id.
    const bobList = await call<TaskBody[]>(first, bob, 'GET', '/api/tasks');
    expect(bobList.body).toEqual([bobs]);
    for (const [method, path, body] of [
      ['GET', `/api/tasks/${apple.id}`],
      ['PUT', `/api/tasks/${apple.id}`, { title: 'mine now' }],
      ['PATCH', `/api/${bob.id}/tasks/${apple.id}/complete`],
      ['DELETE', `/api/${bob.id}/tasks/${apple.id}`],
    ] as const) {
      expect((await call(first, bob, method, path, body)).status, `${method} ${path}`).toBe(404);
    }
    expect((await call(first, bob, 'GET', `/api/${alice.id}/tasks`)).status).toBe(403);

    const deleted = await call(first, alice, 'DELETE', `/api/${alice.id}/tasks/${apple.id}`);
    expect(deleted.status).toBe(204);
    expect((await call(first, alice, 'GET', `/api/tasks/${apple.id}`)).status).toBe(404);
    expect(await list('?sort=title')).toEqual({
      titles: ['Banana bread', 'cherry'],
      total: '2',
    });
    expect((await call<TaskBody[]>(first, bob, 'GET', '/api/tasks')).body).toEqual([bobs]);
  }, 60_000);

  it('when 200 concurrent requests of 4 users interleave on 3 server connections, then every answer holds only its own user’s tasks', async () => {
    const instances = second ? [first, second] : [first];
    const users = await Promise.all(Array.from({ length: 4 }, () => createUserAndToken()));
    const owned = new Map<string, Set<number>>(users.map((user) => [user.id, new Set<number>()]));
    for (const user of users) {
      for (let i = 0; i < 3; i += 1) {
        owned.get(user.id)?.add((await create(first, user, `${user.id} seed ${i}`)).id);
      }
    }

    const answers = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const user = users[i % users.length];
        const server = instances[i % instances.length];
        if (!user || !server) throw new Error('no user or server');
        const shape = i % 5;
        const answer =
          shape === 0
            ? await call(server, user, 'POST', '/api/tasks', { title: `${user.id} burst ${i}` })
            : shape === 1
              ? await call(server, user, 'GET', '/api/tasks?sort=title&status=pending&limit=50')
              : shape === 2
                ? await call(server, user, 'GET', `/api/${user.id}/tasks?limit=2&offset=1`)
                : await call(server, user, 'GET', '/api/tasks');
        return { user, answer };
      }),
    );

    for (const { user, answer } of answers) {
      expect([200, 201], JSON.stringify(answer.body)).toContain(answer.status);
      const tasks = (Array.isArray(answer.body) ? answer.body : [answer.body]) as TaskBody[];
      for (const task of tasks) {
        expect(task.user_id).toBe(user.id);
        expect(task.title.startsWith(`${user.id} `)).toBe(true);
      }
      if (answer.status === 201) owned.get(user.id)?.add((answer.body as TaskBody).id);
    }
    for (const user of users) {
      const list = await call<TaskBody[]>(first, user, 'GET', '/api/tasks');
      expect(new Set(list.body.map((task) => task.id))).toEqual(owned.get(user.id));
      expect(list.headers.get('x-total-count')).toBe(String(owned.get(user.id)?.size));
    }

    // The bouncer really is in the way: however many clients, at most POOL_SIZE backends.
    const [row] = await direct<{ count: string }>(
      POSTGRES_ADMIN_URL,
      'select count(*) from pg_stat_activity where datname = $1',
      [database.name],
    );
    expect(Number(row?.count)).toBeLessThanOrEqual(POOL_SIZE);
  }, 120_000);

  it('when 10 POSTs race with one Idempotency-Key, then exactly one task is created and all get its answer', async () => {
    const user = await createUserAndToken();
    const key = randomUUID();
    const title = `idempotent ${key}`;
    const answers = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        call<TaskBody>(
          i % 2 === 0 || !second ? first : second,
          user,
          'POST',
          '/api/tasks',
          { title },
          {
            'idempotency-key': key,
          },
        ),
      ),
    );
    expect(answers.map((answer) => answer.status)).toEqual(Array(10).fill(201));
    const ids = new Set(answers.map((answer) => answer.body.id));
    expect(ids.size).toBe(1);
    expect(
      answers.filter((answer) => answer.headers.get('idempotent-replayed') === 'true'),
    ).toHaveLength(9);
    const list = await call<TaskBody[]>(first, user, 'GET', '/api/tasks');
    expect(titles(list.body)).toEqual([title]);
  }, 60_000);
});

describe('built-in Better Auth through the bouncer', () => {
  it('when a user signs up and takes a JWT from /api/auth/token, then the task routes accept it', async () => {
    const authFetch = (path: string, init: RequestInit = {}) => {
      const headers = new Headers(init.headers);
      headers.set('origin', ORIGIN);
      if (init.body !== undefined) headers.set('content-type', 'application/json');
      return fetch(`${first.baseUrl}${path}`, { ...init, headers });
    };
    const signUp = await authFetch('/api/auth/sign-up/email', {
      method: 'POST',
      body: JSON.stringify({
        email: `pgbouncer-${randomUUID()}@example.com`,
        password: 'correct horse battery staple',
        name: 'Pooled User',
      }),
    });
    expect(signUp.status).toBe(200);
    const userId = ((await signUp.json()) as { user: { id: string } }).user.id;
    const cookie = signUp.headers
      .getSetCookie()
      .map((entry) => entry.split(';')[0])
      .join('; ');

    const tokenAnswer = await authFetch('/api/auth/token', { headers: { cookie } });
    expect(tokenAnswer.status).toBe(200);
    const { token } = (await tokenAnswer.json()) as { token: string };
    const user: TestUser = { id: userId, token, headers: { authorization: `Bearer ${token}` } };

    const created = await create(
      first,
      user,
      'Signed up through the pooler',
      `/api/${userId}/tasks`,
    );
    expect(created.user_id).toBe(userId);
    const list = await call<TaskBody[]>(first, user, 'GET', '/api/tasks');
    expect(list.body).toEqual([created]);
  }, 60_000);
});
