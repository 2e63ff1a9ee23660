/**
 * A database outage, from outside: the real server process reaches PostgreSQL through a TCP
 * proxy this test controls, and the test cuts the link (every open connection dropped, new
 * ones refused) and restores it.
 *
 * PostgreSQL only in effect (PGlite runs inside the process; there is no link to cut), but it
 * always runs: without DATABASE_URL it uses the PostgreSQL every machine here and CI has at
 * 127.0.0.1:5432, in a fresh database it drops at the end.
 */
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPostgresDatabase,
  POSTGRES_ADMIN_URL,
  createUserAndToken,
  type TaskBody,
  type TestUser,
} from '../helpers.js';
import { type ServerProcess, sleep, startServer } from '../process.js';
import { atLocalPort } from '../free-port.js';
import { CuttableProxy } from '../proxy.js';

/** No request may take longer than this, outage or not: past it, the service hung. */
const REQUEST_LIMIT_MS = 10_000;
/** SPEC: within 5 s of the link returning, everything works again. */
const RECOVERY_LIMIT_MS = 5_000;

interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
  ms: number;
}

let server: ServerProcess;
let proxy: CuttableProxy;
let database: Awaited<ReturnType<typeof createPostgresDatabase>>;

beforeAll(async () => {
  database = await createPostgresDatabase(POSTGRES_ADMIN_URL);
  const direct = new URL(database.url);
  proxy = new CuttableProxy(direct.hostname, Number(direct.port || 5432));
  await proxy.open();
  server = await startServer({
    env: {
      DATABASE_URL: atLocalPort(database.url, proxy.port),
      LOG_LEVEL: 'warn',
      RATE_LIMIT_USER_PER_MINUTE: '0',
      RATE_LIMIT_IP_PER_MINUTE: '0',
      RATE_LIMIT_AUTH_PER_MINUTE: '0',
    },
  });
}, 120_000);

afterAll(async () => {
  await server?.kill();
  await proxy?.cut();
  await database?.drop();
}, 60_000);

/** One request, bounded: a request that takes REQUEST_LIMIT_MS fails the test as a hang. */
async function call(
  user: TestUser | null,
  method: string,
  path: string,
  body?: unknown,
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (user) headers.authorization = `Bearer ${user.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const startedAt = Date.now();
  let response: Response;
  try {
    response = await fetch(`${server.baseUrl}${path}`, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(REQUEST_LIMIT_MS),
    });
  } catch (error) {
    const cause =
      error instanceof Error && error.cause !== undefined ? ` (${String(error.cause)})` : '';
    await sleep(500); // an exit is reported after the sockets close
    const exit = server.exitResult();
    throw new Error(
      `${method} ${path} got no answer within ${REQUEST_LIMIT_MS} ms: ${String(error)}${cause}` +
        (exit
          ? `; the server exited (${JSON.stringify(exit)}): ${server.stderr()}${server.stdout().slice(-3000)}`
          : ''),
    );
  }
  const text = await response.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: kept as text for the assertion message
  }
  return {
    status: response.status,
    headers: response.headers,
    body: parsed,
    ms: Date.now() - startedAt,
  };
}

function expectUnavailable(answer: Answer, what: string) {
  expect(answer.status, `${what}: ${JSON.stringify(answer.body)}`).toBe(503);
  expect(answer.headers.get('retry-after'), what).toMatch(/^\d+$/);
  expect(answer.body, what).toEqual({ detail: expect.any(String) });
}

/** Cuts the link for the duration of `during`, and always restores it. */
async function withLinkCut<T>(during: () => Promise<T>): Promise<T> {
  await proxy.cut();
  try {
    return await during();
  } finally {
    await proxy.open();
  }
}

async function createTask(user: TestUser, title: string): Promise<Answer> {
  return call(user, 'POST', '/api/tasks', { title });
}

/** Polls until /ready is 200 and a create is 201; the milliseconds that took. */
async function waitForRecovery(user: TestUser): Promise<number> {
  const restoredAt = Date.now();
  const deadline = restoredAt + REQUEST_LIMIT_MS * 3;
  let ready = false;
  for (;;) {
    if (!ready) ready = (await call(null, 'GET', '/ready')).status === 200;
    if (ready && (await createTask(user, 'after the outage')).status === 201) {
      return Date.now() - restoredAt;
    }
    if (Date.now() > deadline) throw new Error('the service did not recover');
    await sleep(50);
  }
}

describe('database outage through a cut link', () => {
  it('when the link to the database is cut, then every task route answers 503 with Retry-After, not 500 and not a hang', async () => {
    const user = await createUserAndToken();
    const task = (await createTask(user, 'before the cut')).body as TaskBody;
    expect(task.id).toEqual(expect.any(Number));

    await withLinkCut(async () => {
      const routes: [string, string, unknown?][] = [
        ['GET', '/api/tasks'],
        ['GET', `/api/${user.id}/tasks`],
        ['POST', '/api/tasks', { title: 'during the cut' }],
        ['GET', `/api/tasks/${task.id}`],
        ['PUT', `/api/tasks/${task.id}`, { title: 'changed during the cut' }],
        ['PATCH', `/api/tasks/${task.id}/complete`],
        ['DELETE', `/api/tasks/${task.id}`],
      ];
      for (const [method, path, body] of routes) {
        expectUnavailable(await call(user, method, path, body), `${method} ${path}`);
      }
      // A user this process has not seen yet needs the database to be registered: also 503.
      const newcomer = await createUserAndToken();
      expectUnavailable(await call(newcomer, 'GET', '/api/tasks'), 'a first request');
    });
    await waitForRecovery(user);
  }, 120_000);

  it('when the link is cut, then /ready turns 503 while /health stays 200', async () => {
    await withLinkCut(async () => {
      expectUnavailable(await call(null, 'GET', '/ready'), 'GET /ready');
      const health = await call(null, 'GET', '/health');
      expect(health.status).toBe(200);
      expect(health.body).toEqual({ status: 'ok' });
    });
    const user = await createUserAndToken();
    await waitForRecovery(user);
  }, 120_000);

  it('when the link returns, then /ready and creating a task work again within 5 s', async () => {
    const user = await createUserAndToken();
    await withLinkCut(async () => {
      expectUnavailable(await createTask(user, 'refused'), 'POST /api/tasks');
      expectUnavailable(await call(null, 'GET', '/ready'), 'GET /ready');
    });
    const recoveryMs = await waitForRecovery(user);
    console.log(
      `db outage: recovered in ${recoveryMs} ms after the link returned (/ready 200 and a create 201)`,
    );
    expect(recoveryMs).toBeLessThanOrEqual(RECOVERY_LIMIT_MS);
  }, 120_000);

  it('when creates run concurrently through a cut, then every create acknowledged with 201 is in the database', async () => {
    const user = await createUserAndToken();
    const acknowledged: number[] = [];
    const statuses = new Map<number, number>();
    let stop = false;
    let sequence = 0;
    let failure: unknown;

    const work = async () => {
      while (!stop) {
        const answer = await createTask(user, `load ${sequence++}`);
        statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
        if (answer.status === 201) {
          acknowledged.push((answer.body as TaskBody).id);
        } else {
          expectUnavailable(answer, 'a create under load');
          await sleep(20);
        }
      }
    };
    const worker = () =>
      work().catch((error: unknown) => {
        failure ??= error;
        stop = true;
      });
    const until = async (condition: () => boolean) => {
      const deadline = Date.now() + 30_000;
      while (!condition()) {
        if (failure !== undefined) throw failure;
        if (Date.now() > deadline) {
          throw new Error(
            `the load made no progress: ${JSON.stringify(Object.fromEntries(statuses))}`,
          );
        }
        await sleep(20);
      }
    };

    const workers = Array.from({ length: 8 }, worker);
    const settled = Promise.all(workers);
    try {
      await until(() => acknowledged.length >= 30);
      await withLinkCut(async () => {
        await until(() => (statuses.get(503) ?? 0) >= 20);
      });
      const before = acknowledged.length;
      await until(() => acknowledged.length >= before + 30);
    } finally {
      stop = true;
    }
    await settled;
    if (failure !== undefined) throw failure;

    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    let found: number[];
    try {
      const { rows } = await client.query<{ id: string }>(
        'select id from task where user_id = $1 and id = any($2::bigint[])',
        [user.id, acknowledged],
      );
      found = rows.map((row) => Number(row.id));
    } finally {
      await client.end();
    }
    console.log(
      `db outage under load: ${acknowledged.length} creates acknowledged with 201, ${found.length} of them in the database; answers ${JSON.stringify(Object.fromEntries(statuses))}`,
    );
    expect([...statuses.keys()].sort()).toEqual([201, 503]);
    expect(found.sort((a, b) => a - b)).toEqual([...acknowledged].sort((a, b) => a - b));
  }, 180_000);
});
