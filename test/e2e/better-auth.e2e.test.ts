/**
 * Better Auth over real HTTP, in real processes (the compiled service, started as `npm start`
 * starts it), each on a free port and its own fresh database (PostgreSQL when DATABASE_URL is
 * set, else PGlite in memory):
 * - "api" serves tasks and hosts its own Better Auth (BETTER_AUTH_URL = its own address);
 * - "frontend" plays the Next.js app's Better Auth; "api" accepts its tokens through
 *   AUTH_JWKS_URL / AUTH_ISSUER / AUTH_AUDIENCE, as a deployment with an external issuer does.
 */
import { randomUUID } from 'node:crypto';
import { decodeJwt } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TaskBody, TEST_SECRET } from '../helpers.js';
import { freePort, type ServerProcess, serverDatabase, startServer } from '../process.js';

const STARTUP_LIMIT_MS = 90_000;
/** In CORS_ORIGINS (its default), so Better Auth trusts it; Node's fetch needs one. */
const ORIGIN = 'http://localhost:3000';
const PASSWORD = 'correct horse battery staple';
const FRONTEND_SECRET = 'the-front-end-better-auth-secret-0123456789abcdef';

/** One server process on its own port and database, and requests to it as a browser sends them. */
interface Instance {
  readonly url: string;
  fetch(path: string, init?: RequestInit): Promise<Response>;
  stop(): Promise<void>;
}

async function startInstance(env: Record<string, string>): Promise<Instance> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const database = await serverDatabase();
  let server: ServerProcess;
  try {
    server = await startServer({
      port,
      startupLimitMs: STARTUP_LIMIT_MS,
      env: { LOG_LEVEL: 'warn', BETTER_AUTH_URL: url, ...database.env, ...env },
    });
  } catch (error) {
    await database.drop();
    throw error;
  }
  return {
    url,
    fetch(path, init = {}) {
      const headers = new Headers(init.headers);
      if (!headers.has('origin')) headers.set('origin', ORIGIN);
      if (init.body !== undefined && !headers.has('content-type')) {
        headers.set('content-type', 'application/json');
      }
      return fetch(`${url}${path}`, { ...init, headers });
    },
    async stop() {
      await server.stop();
      await database.drop();
    },
  };
}

interface Session {
  userId: string;
  /** The `Cookie` header a browser would send back. */
  cookie: string;
}

function cookieOf(response: Response): string {
  return response.headers
    .getSetCookie()
    .filter((cookie) => !/;\s*max-age=0/i.test(cookie))
    .map((cookie) => cookie.split(';')[0])
    .join('; ');
}

async function signUp(server: Instance, email: string): Promise<Session> {
  const response = await server.fetch('/api/auth/sign-up/email', {
    method: 'POST',
    body: JSON.stringify({ email, password: PASSWORD, name: 'E2E User' }),
  });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { user: { id: string } };
  return { userId: body.user.id, cookie: cookieOf(response) };
}

async function signIn(server: Instance, email: string): Promise<Session> {
  const response = await server.fetch('/api/auth/sign-in/email', {
    method: 'POST',
    body: JSON.stringify({ email, password: PASSWORD }),
  });
  expect(response.status).toBe(200);
  const body = (await response.json()) as { user: { id: string } };
  return { userId: body.user.id, cookie: cookieOf(response) };
}

async function tokenOf(server: Instance, session: Session): Promise<string> {
  const response = await server.fetch('/api/auth/token', { headers: { cookie: session.cookie } });
  expect(response.status).toBe(200);
  return ((await response.json()) as { token: string }).token;
}

function bearer(token: string) {
  return { authorization: `Bearer ${token}` };
}

const uniqueEmail = () => `e2e-${randomUUID()}@example.com`;

let api: Instance;
let frontend: Instance;

beforeAll(async () => {
  // One after the other, to spare a busy machine two PGlite start-ups at once. The API
  // fetches the front end's key set lazily, on the first token that needs it.
  frontend = await startInstance({ BETTER_AUTH_SECRET: FRONTEND_SECRET });
  api = await startInstance({
    BETTER_AUTH_SECRET: TEST_SECRET,
    AUTH_JWKS_URL: `${frontend.url}/api/auth/jwks`,
    AUTH_ISSUER: frontend.url,
    AUTH_AUDIENCE: frontend.url,
  });
}, 180_000);

afterAll(async () => {
  await Promise.all([api?.stop(), frontend?.stop()]);
}, 60_000);

describe('built-in Better Auth over HTTP', () => {
  it('when a user signs up, signs in and takes a token, then the whole task lifecycle works and sign-out ends the session', async () => {
    const email = uniqueEmail();
    const signedUp = await signUp(api, email);
    const session = await signIn(api, email);
    expect(session.userId).toBe(signedUp.userId);
    const token = await tokenOf(api, session);
    expect(decodeJwt(token)).toMatchObject({ iss: api.url, aud: api.url, sub: session.userId });
    const auth = bearer(token);

    const create = (title: string) =>
      api.fetch(`/api/${session.userId}/tasks`, {
        method: 'POST',
        headers: auth,
        body: JSON.stringify({ title }),
      });
    const milk = await create('Buy milk');
    expect(milk.status).toBe(201);
    const milkTask = (await milk.json()) as TaskBody;
    expect(milkTask.user_id).toBe(session.userId);
    const bread = (await (await create('Bake bread')).json()) as TaskBody;

    const all = await api.fetch(`/api/${session.userId}/tasks?sort=title`, { headers: auth });
    expect(all.status).toBe(200);
    expect(((await all.json()) as TaskBody[]).map((task) => task.title)).toEqual([
      'Bake bread',
      'Buy milk',
    ]);

    const toggled = await api.fetch(`/api/${session.userId}/tasks/${milkTask.id}/complete`, {
      method: 'PATCH',
      headers: auth,
    });
    expect(((await toggled.json()) as TaskBody).completed).toBe(true);
    const completed = await api.fetch(`/api/tasks?status=completed`, { headers: auth });
    expect(((await completed.json()) as TaskBody[]).map((task) => task.id)).toEqual([milkTask.id]);
    const pending = await api.fetch(`/api/tasks?status=pending`, { headers: auth });
    expect(((await pending.json()) as TaskBody[]).map((task) => task.id)).toEqual([bread.id]);

    const deleted = await api.fetch(`/api/${session.userId}/tasks/${bread.id}`, {
      method: 'DELETE',
      headers: auth,
    });
    expect(deleted.status).toBe(204);
    const remaining = await api.fetch('/api/tasks', { headers: auth });
    expect(((await remaining.json()) as TaskBody[]).map((task) => task.id)).toEqual([milkTask.id]);

    const signOut = await api.fetch('/api/auth/sign-out', {
      method: 'POST',
      headers: { cookie: session.cookie },
    });
    expect(signOut.status).toBe(200);
    const afterSignOut = await api.fetch('/api/auth/token', {
      headers: { cookie: session.cookie },
    });
    expect(afterSignOut.status).toBe(401);
  });

  it("when a second user signs up, then they see none of the first user's tasks", async () => {
    const first = await signUp(api, uniqueEmail());
    const firstAuth = bearer(await tokenOf(api, first));
    const created = await api.fetch('/api/tasks', {
      method: 'POST',
      headers: firstAuth,
      body: JSON.stringify({ title: 'Private to the first user' }),
    });
    const task = (await created.json()) as TaskBody;

    const second = await signUp(api, uniqueEmail());
    const secondAuth = bearer(await tokenOf(api, second));
    const list = await api.fetch('/api/tasks', { headers: secondAuth });
    expect(list.status).toBe(200);
    expect(await list.json()).toEqual([]);
    const direct = await api.fetch(`/api/tasks/${task.id}`, { headers: secondAuth });
    expect(direct.status).toBe(404);
    const foreignPath = await api.fetch(`/api/${first.userId}/tasks`, { headers: secondAuth });
    expect(foreignPath.status).toBe(403);
  });
});

describe("the front end's own Better Auth (AUTH_JWKS_URL)", () => {
  it('when a user of the front end uses its JWT on the API, then the API creates the user and serves their tasks', async () => {
    const session = await signUp(frontend, uniqueEmail());
    const token = await tokenOf(frontend, session);
    expect(decodeJwt(token)).toMatchObject({ iss: frontend.url, sub: session.userId });
    const auth = bearer(token);

    // The API has never seen this user: the first request creates its row.
    const created = await api.fetch(`/api/${session.userId}/tasks`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ title: 'From the front end' }),
    });
    expect(created.status).toBe(201);
    expect(((await created.json()) as TaskBody).user_id).toBe(session.userId);

    const listed = await api.fetch(`/api/${session.userId}/tasks`, { headers: auth });
    expect(listed.status).toBe(200);
    expect(((await listed.json()) as TaskBody[]).map((task) => task.title)).toEqual([
      'From the front end',
    ]);
  });

  it('when a front-end token has a tampered signature, then the API answers 401', async () => {
    const session = await signUp(frontend, uniqueEmail());
    const token = await tokenOf(frontend, session);
    const [header, payload, signature = ''] = token.split('.');
    const at = Math.floor(signature.length / 2);
    const flipped = signature[at] === 'A' ? 'B' : 'A';
    const tampered = `${header}.${payload}.${signature.slice(0, at)}${flipped}${signature.slice(at + 1)}`;

    const response = await api.fetch('/api/tasks', { headers: bearer(tampered) });
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toBe('Bearer');
  });
});
