/**
 * The real process over real HTTP: the compiled service, started as `npm start` starts it, on a
 * free port, on a fresh database (PostgreSQL when DATABASE_URL is set, else PGlite in memory).
 */
import http from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAndToken, type TaskBody, TEST_SECRET, type TestUser } from '../helpers.js';
import {
  type ServerDatabase,
  type ServerProcess,
  serverDatabase,
  sleep,
  startServer,
} from '../process.js';

const EXIT_LIMIT_MS = 10_000;

let server: ServerProcess;
let baseUrl = '';
let database: ServerDatabase | undefined;

const logLines = () => server.logLines();
const waitForLogLine = (predicate: (line: Record<string, unknown>) => boolean) =>
  server.waitForLogLine(predicate);

beforeAll(async () => {
  database = await serverDatabase();
  server = await startServer({ env: database.env });
  baseUrl = server.baseUrl;
}, 90_000);

afterAll(async () => {
  await server?.kill();
  await database?.drop();
}, 60_000);

async function api(user: TestUser | null, path: string, init: RequestInit = {}) {
  const headers = new Headers(init.headers);
  if (user) headers.set('authorization', `Bearer ${user.token}`);
  if (init.body !== undefined) headers.set('content-type', 'application/json');
  return fetch(`${baseUrl}${path}`, { ...init, headers });
}

async function createTaskOverHttp(user: TestUser, title: string): Promise<TaskBody> {
  const response = await api(user, `/api/${user.id}/tasks`, {
    method: 'POST',
    body: JSON.stringify({ title }),
  });
  expect(response.status).toBe(201);
  return (await response.json()) as TaskBody;
}

describe('the running server, over HTTP', () => {
  it('when a user creates, lists, toggles, updates and deletes a task, then each step answers as the contract says', async () => {
    const user = await createUserAndToken();

    const created = await api(user, `/api/${user.id}/tasks`, {
      method: 'POST',
      body: JSON.stringify({ title: 'Water the plants', description: 'balcony' }),
    });
    expect(created.status).toBe(201);
    const task = (await created.json()) as TaskBody;
    expect(task).toMatchObject({
      user_id: user.id,
      title: 'Water the plants',
      description: 'balcony',
      completed: false,
    });
    expect(created.headers.get('location')).toBe(`/api/${user.id}/tasks/${task.id}`);

    const listed = await api(user, `/api/${user.id}/tasks`);
    expect(listed.status).toBe(200);
    expect(await listed.json()).toEqual([task]);

    const toggled = await api(user, `/api/${user.id}/tasks/${task.id}/complete`, {
      method: 'PATCH',
    });
    expect(toggled.status).toBe(200);
    expect(await toggled.json()).toMatchObject({ id: task.id, completed: true });

    const updated = await api(user, `/api/${user.id}/tasks/${task.id}`, {
      method: 'PUT',
      body: JSON.stringify({ title: 'Water the herbs' }),
    });
    expect(updated.status).toBe(200);
    expect(await updated.json()).toMatchObject({
      id: task.id,
      title: 'Water the herbs',
      description: 'balcony',
      completed: true,
    });

    const deleted = await api(user, `/api/${user.id}/tasks/${task.id}`, { method: 'DELETE' });
    expect(deleted.status).toBe(204);
    expect(await deleted.text()).toBe('');

    const gone = await api(user, `/api/${user.id}/tasks/${task.id}`);
    expect(gone.status).toBe(404);
    const listedAfter = await api(user, `/api/tasks`);
    expect(await listedAfter.json()).toEqual([]);
  }, 60_000);

  it("when a second user lists tasks, then none of the first user's tasks appear", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    await createTaskOverHttp(alice, 'Alice only');

    const response = await api(bob, `/api/${bob.id}/tasks`);
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual([]);
  }, 60_000);

  it("when a second user asks for the first user's task by id, then it is 404", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const task = await createTaskOverHttp(alice, 'Alice private');

    const read = await api(bob, `/api/${bob.id}/tasks/${task.id}`);
    expect(read.status).toBe(404);
    const removed = await api(bob, `/api/tasks/${task.id}`, { method: 'DELETE' });
    expect(removed.status).toBe(404);

    const stillThere = await api(alice, `/api/${alice.id}/tasks/${task.id}`);
    expect(stillThere.status).toBe(200);
  }, 60_000);

  it("when a user uses another user's id in the path, then it is 403", async () => {
    const alice = await createUserAndToken();
    const bob = await createUserAndToken();
    const response = await api(bob, `/api/${alice.id}/tasks`);
    expect(response.status).toBe(403);
    expect(await response.json()).toHaveProperty('detail');
  }, 60_000);

  it('when a request has no token, then it is 401 with a Bearer challenge', async () => {
    const response = await api(null, '/api/tasks');
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^Bearer/);
    expect(await response.json()).toHaveProperty('detail');
  }, 60_000);
});

describe('the running server, its logs', () => {
  it('when a request is served, then one JSON line logs its id, user, route, status and duration', async () => {
    const user = await createUserAndToken();
    const response = await api(user, `/api/${user.id}/tasks`);
    expect(response.status).toBe(200);
    const requestId = response.headers.get('x-request-id');
    expect(requestId).toBeTruthy();

    const line = await waitForLogLine(
      (entry) => entry.reqId === requestId && entry.status !== undefined,
    );
    expect(line).toMatchObject({
      reqId: requestId,
      userId: user.id,
      route: '/api/:user_id/tasks',
      status: 200,
    });
    expect(typeof line.durationMs).toBe('number');
    const perRequest = logLines().filter(
      (entry) => entry.reqId === requestId && entry.msg === line.msg,
    );
    expect(perRequest).toHaveLength(1);
  }, 60_000);

  it('when requests carry tokens, good or bad, then no token appears in the logs', async () => {
    const user = await createUserAndToken();
    await createTaskOverHttp(user, 'Logged but not the token');
    const rejected = await fetch(`${baseUrl}/api/tasks`, {
      headers: { authorization: `Bearer ${user.token}x` },
    });
    expect(rejected.status).toBe(401);
    const requestId = rejected.headers.get('x-request-id');
    await waitForLogLine((entry) => entry.reqId === requestId && entry.status === 401);

    const signature = user.token.split('.')[2] ?? user.token;
    const output = server.stdout() + server.stderr();
    expect(output).not.toContain(signature);
    expect(output).not.toContain(user.token);
    expect(output).not.toContain(TEST_SECRET);
  }, 60_000);
});

/**
 * Sends a POST whose headers ask `Expect: 100-continue`: Node's server answers "100 Continue"
 * only once it has parsed the request, so when `onContinue` runs the request is surely in
 * flight. The body is sent when `onContinue` resolves.
 */
function postWithContinue(
  user: TestUser,
  body: string,
  onContinue: () => Promise<void>,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request(`${baseUrl}/api/${user.id}/tasks`, {
      method: 'POST',
      agent: false,
      headers: {
        authorization: `Bearer ${user.token}`,
        'content-type': 'application/json',
        'content-length': String(Buffer.byteLength(body)),
        connection: 'close',
        expect: '100-continue',
      },
    });
    request.on('error', reject);
    request.on('continue', () => {
      onContinue().then(() => request.end(body), reject);
    });
    request.on('response', (response) => {
      let text = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        text += chunk;
      });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, body: text }));
      response.on('error', reject);
    });
    request.flushHeaders();
  });
}

// Last in the file: it stops the process the tests above share.
describe('the running server, shutdown', () => {
  it('when SIGTERM arrives during a request, then the request completes and the process exits 0', async () => {
    const user = await createUserAndToken();
    const response = await postWithContinue(
      user,
      JSON.stringify({ title: 'In flight at SIGTERM' }),
      async () => {
        server.child.kill('SIGTERM');
        // The body goes out only once the server has started shutting down.
        await waitForLogLine((entry) => entry.signal === 'SIGTERM');
      },
    );
    expect(response.status).toBe(201);
    expect(JSON.parse(response.body)).toMatchObject({
      title: 'In flight at SIGTERM',
      user_id: user.id,
    });

    const result = await Promise.race([
      server.exited,
      sleep(EXIT_LIMIT_MS).then(() => 'still running' as const),
    ]);
    expect(result).toEqual({ code: 0, signal: null });

    // The request was served during the shutdown, not before it began.
    const lines = logLines();
    const shutdownAt = lines.findIndex((entry) => entry.signal === 'SIGTERM');
    const servedAt = lines.findIndex(
      (entry) => entry.userId === user.id && entry.method === 'POST' && entry.status === 201,
    );
    expect(shutdownAt).toBeGreaterThanOrEqual(0);
    expect(servedAt).toBeGreaterThan(shutdownAt);
  }, 60_000);
});
