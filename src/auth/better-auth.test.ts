import { randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TaskBody, type TestContext, testConfig } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { createDatabase } from '../db/client.js';
import { jwks, user } from '../db/schema.js';

/** An origin in CORS_ORIGINS (the test default), hence one Better Auth trusts. */
const ORIGIN = 'http://localhost:3000';
/** BETTER_AUTH_URL's default: the `iss` and `aud` of built-in tokens. */
const ISSUER = 'http://localhost:8000';
const PASSWORD = 'correct horse battery staple';
const OTHER_SECRET = 'another-instance-secret-that-is-long-enough-0123456789';

// These tests are about Better Auth, not about our limit on sign-ups per IP.
const ENV = { RATE_LIMIT_AUTH_PER_MINUTE: '0' };

let ctx: TestContext;
/** Another deployment: its own secret and database, so its own key set. */
let other: TestContext;

beforeAll(async () => {
  // One after the other: PGlite's start-up holds the event loop, and a second app building
  // meanwhile could miss Fastify's plugin timeout on a busy machine.
  ctx = await startTestApp(ENV);
  other = await startTestApp({ ...ENV, BETTER_AUTH_SECRET: OTHER_SECRET });
});
afterAll(async () => {
  await Promise.all([ctx?.close(), other?.close()]);
});

interface SignedIn {
  userId: string;
  email: string;
  /** The `Cookie` header a browser would send back. */
  cookie: string;
  /** The session token the bearer plugin accepts as `Authorization: Bearer <token>`. */
  sessionToken: string;
}

function uniqueEmail() {
  return `user-${randomUUID()}@example.com`;
}

function bearer(token: string) {
  return { authorization: `Bearer ${token}` };
}

function setCookies(response: LightMyRequestResponse): string[] {
  const header = response.headers['set-cookie'];
  if (header === undefined) return [];
  return Array.isArray(header) ? header : [header];
}

/** The cookies a browser keeps from a response (those not being deleted). */
function cookieHeader(response: LightMyRequestResponse): string {
  return setCookies(response)
    .filter((cookie) => !/;\s*max-age=0/i.test(cookie))
    .map((cookie) => cookie.split(';')[0])
    .join('; ');
}

async function signUp(app: FastifyInstance, email = uniqueEmail()): Promise<SignedIn> {
  const response = await app.inject({
    method: 'POST',
    url: '/api/auth/sign-up/email',
    headers: { origin: ORIGIN },
    payload: { email, password: PASSWORD, name: 'Test User' },
  });
  if (response.statusCode !== 200) {
    throw new Error(`sign-up: expected 200, got ${response.statusCode} ${response.body}`);
  }
  const body = response.json<{ token: string; user: { id: string } }>();
  return { userId: body.user.id, email, cookie: cookieHeader(response), sessionToken: body.token };
}

async function signIn(app: FastifyInstance, email: string): Promise<SignedIn> {
  const response = await app.inject({
    method: 'POST',
    url: '/api/auth/sign-in/email',
    headers: { origin: ORIGIN },
    payload: { email, password: PASSWORD },
  });
  if (response.statusCode !== 200) {
    throw new Error(`sign-in: expected 200, got ${response.statusCode} ${response.body}`);
  }
  const body = response.json<{ token: string; user: { id: string } }>();
  return { userId: body.user.id, email, cookie: cookieHeader(response), sessionToken: body.token };
}

/** GET /api/auth/token with the given credentials; returns the JWT. */
async function getJwt(app: FastifyInstance, headers: Record<string, string>): Promise<string> {
  const response = await app.inject({
    url: '/api/auth/token',
    headers: { origin: ORIGIN, ...headers },
  });
  if (response.statusCode !== 200) {
    throw new Error(`token: expected 200, got ${response.statusCode} ${response.body}`);
  }
  return response.json<{ token: string }>().token;
}

async function signedUpJwt(app: FastifyInstance) {
  const account = await signUp(app);
  return { ...account, jwt: await getJwt(app, { cookie: account.cookie }) };
}

async function usersWithEmail(email: string) {
  return ctx.app.db.select({ id: user.id }).from(user).where(eq(user.email, email));
}

/** Changes one character in the middle of the signature. */
function tamperSignature(token: string): string {
  const [header, payload, signature = ''] = token.split('.');
  const at = Math.floor(signature.length / 2);
  const replacement = signature[at] === 'A' ? 'B' : 'A';
  return `${header}.${payload}.${signature.slice(0, at)}${replacement}${signature.slice(at + 1)}`;
}

describe('built-in Better Auth: accounts and sessions', () => {
  it('when a user signs up, signs in and asks for a token, then that JWT creates and lists their tasks', async () => {
    const { email, userId } = await signUp(ctx.app);
    const session = await signIn(ctx.app, email);
    expect(session.userId).toBe(userId);
    const jwt = await getJwt(ctx.app, { cookie: session.cookie });

    const created = await ctx.app.inject({
      method: 'POST',
      url: `/api/${userId}/tasks`,
      headers: bearer(jwt),
      payload: { title: 'Signed up with Better Auth' },
    });
    expect(created.statusCode).toBe(201);
    expect(created.json<TaskBody>().user_id).toBe(userId);

    const listed = await ctx.app.inject({ url: '/api/tasks', headers: bearer(jwt) });
    expect(listed.statusCode).toBe(200);
    expect(listed.json<TaskBody[]>().map((task) => task.title)).toEqual([
      'Signed up with Better Auth',
    ]);
  });

  it('when the session token is sent as a bearer token (bearer plugin), then /api/auth/token hands out a JWT that works', async () => {
    const { sessionToken, userId } = await signUp(ctx.app);
    const jwt = await getJwt(ctx.app, bearer(sessionToken));
    expect(decodeJwt(jwt).sub).toBe(userId);

    const listed = await ctx.app.inject({ url: `/api/${userId}/tasks`, headers: bearer(jwt) });
    expect(listed.statusCode).toBe(200);
    expect(listed.json()).toEqual([]);
  });

  it('when a session is signed in, then sign-in sets its cookie and get-session hands a JWT in set-auth-jwt, exposed to browsers', async () => {
    const { cookie, userId } = await signUp(ctx.app);
    expect(cookie).toMatch(/better-auth\.session_token=/);
    const response = await ctx.app.inject({
      url: '/api/auth/get-session',
      headers: { origin: ORIGIN, cookie },
    });
    expect(response.statusCode).toBe(200);
    expect(response.json<{ user: { id: string } }>().user.id).toBe(userId);
    const jwt = response.headers['set-auth-jwt'];
    expect(typeof jwt).toBe('string');
    expect(String(response.headers['access-control-expose-headers'])).toMatch(/set-auth-jwt/i);

    const listed = await ctx.app.inject({ url: '/api/tasks', headers: bearer(String(jwt)) });
    expect(listed.statusCode).toBe(200);
  });

  it('when a built-in token is issued, then it is EdDSA with iss and aud the BETTER_AUTH_URL origin, the user id as sub and 15 minutes of life', async () => {
    const { jwt, userId, email } = await signedUpJwt(ctx.app);
    expect(decodeProtectedHeader(jwt)).toMatchObject({ alg: 'EdDSA', kid: expect.any(String) });
    const claims = decodeJwt(jwt);
    expect(claims).toMatchObject({ iss: ISSUER, aud: ISSUER, sub: userId, email });
    expect(Number(claims.exp) - Number(claims.iat)).toBe(15 * 60);
  });

  it('when the key set is fetched, then it lists a public Ed25519 key and no private part', async () => {
    await signedUpJwt(ctx.app);
    const response = await ctx.app.inject({ url: '/api/auth/jwks' });
    expect(response.statusCode).toBe(200);
    const { keys } = response.json<{ keys: Record<string, unknown>[] }>();
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) {
      expect(key).toMatchObject({
        kty: 'OKP',
        crv: 'Ed25519',
        alg: 'EdDSA',
        kid: expect.any(String),
      });
      expect(key).not.toHaveProperty('d');
    }
  });

  it('when a user signs out, then the session no longer yields tokens', async () => {
    const { cookie } = await signUp(ctx.app);
    const signOut = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-out',
      headers: { origin: ORIGIN, cookie },
    });
    expect(signOut.statusCode).toBe(200);
    expect(
      setCookies(signOut).some((c) => /^better-auth\.session_token=;.*max-age=0/i.test(c)),
    ).toBe(true);

    const token = await ctx.app.inject({
      url: '/api/auth/token',
      headers: { origin: ORIGIN, cookie },
    });
    expect(token.statusCode).toBe(401);
    const session = await ctx.app.inject({
      url: '/api/auth/get-session',
      headers: { origin: ORIGIN, cookie },
    });
    expect(session.json()).toBeNull();
  });

  it('when the password is wrong, then sign-in is 401 and sets no session', async () => {
    const { email } = await signUp(ctx.app);
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: { origin: ORIGIN },
      payload: { email, password: 'not the password' },
    });
    expect(response.statusCode).toBe(401);
    expect(setCookies(response)).toEqual([]);
  });

  it('when an email is already registered, then a second sign-up is 422 and adds no user', async () => {
    const { email } = await signUp(ctx.app);
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-up/email',
      headers: { origin: ORIGIN },
      payload: { email, password: 'another password', name: 'Impostor' },
    });
    expect(response.statusCode).toBe(422);
    expect(await usersWithEmail(email)).toHaveLength(1);
  });

  it('when the password is shorter than 8 characters, then sign-up is 400 and creates no user', async () => {
    const email = uniqueEmail();
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-up/email',
      headers: { origin: ORIGIN },
      payload: { email, password: 'short12', name: 'Weak' },
    });
    expect(response.statusCode).toBe(400);
    expect(response.json()).toMatchObject({ code: 'PASSWORD_TOO_SHORT' });
    expect(await usersWithEmail(email)).toHaveLength(0);
  });

  it('when a browser-like request signs up without an Origin, then it is 403 and creates no user', async () => {
    const email = uniqueEmail();
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-up/email',
      headers: {
        'sec-fetch-site': 'same-origin',
        'sec-fetch-mode': 'cors',
        'sec-fetch-dest': 'empty',
      },
      payload: { email, password: PASSWORD, name: 'No Origin' },
    });
    expect(response.statusCode).toBe(403);
    expect(await usersWithEmail(email)).toHaveLength(0);
  });

  it('when sign-in comes from an origin outside CORS_ORIGINS, then it is 403', async () => {
    const { email } = await signUp(ctx.app);
    const response = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      headers: {
        origin: 'https://evil.example',
        'sec-fetch-site': 'cross-site',
        'sec-fetch-mode': 'cors',
      },
      payload: { email, password: PASSWORD },
    });
    expect(response.statusCode).toBe(403);
    expect(setCookies(response)).toEqual([]);
  });

  it('when the sign-up body is not valid JSON or has wrong types, then it is 400, never 500', async () => {
    const malformed = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-up/email',
      headers: { origin: ORIGIN, 'content-type': 'application/json' },
      payload: '{"email": ',
    });
    expect(malformed.statusCode).toBe(400);
    const wrongTypes = await ctx.app.inject({
      method: 'POST',
      url: '/api/auth/sign-up/email',
      headers: { origin: ORIGIN },
      payload: { email: 5, password: ['x'], name: {} },
    });
    expect(wrongTypes.statusCode).toBe(400);
    expect(wrongTypes.body).not.toMatch(/\bat \S+:\d+/); // no stack trace
  });

  it('when a path under /api/auth does not exist, then it is 404 in our error shape', async () => {
    const response = await ctx.app.inject({ url: '/api/auth/no-such-endpoint' });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toEqual({ detail: 'Not Found' });
  });
});

describe('built-in Better Auth: its tokens on the tasks API', () => {
  it('when a session token (not a JWT) is sent to the tasks API, then it is 401', async () => {
    const { sessionToken } = await signUp(ctx.app);
    const response = await ctx.app.inject({ url: '/api/tasks', headers: bearer(sessionToken) });
    expect(response.statusCode).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer');
  });

  it('when a built-in token has a tampered signature, then it is 401', async () => {
    const { jwt } = await signedUpJwt(ctx.app);
    const response = await ctx.app.inject({
      url: '/api/tasks',
      headers: bearer(tamperSignature(jwt)),
    });
    expect(response.statusCode).toBe(401);
    expect(response.headers['www-authenticate']).toBe('Bearer');
    expect(response.json()).toEqual({ detail: 'Invalid token signature' });
  });

  it("when a token with our issuer comes from another instance's key set, then it is 401", async () => {
    const { jwt } = await signedUpJwt(other.app);
    expect(decodeJwt(jwt).iss).toBe(ISSUER);
    const response = await ctx.app.inject({ url: '/api/tasks', headers: bearer(jwt) });
    expect(response.statusCode).toBe(401);
    expect(response.json()).toEqual({ detail: 'Invalid token: no known key matches it' });
  });

  it('when a token signed with our key names another audience, then it is 401', async () => {
    const { userId } = await signUp(ctx.app);
    const { token } = await ctx.app.betterAuth.api.signJWT({
      body: { payload: { sub: userId, aud: 'https://another-api.example' } },
    });
    const response = await ctx.app.inject({ url: '/api/tasks', headers: bearer(token) });
    expect(response.statusCode).toBe(401);
    expect(response.json()).toEqual({ detail: 'Invalid token: unexpected "aud"' });
  });

  it('when a token signed with our key has expired, then it is 401', async () => {
    const { userId } = await signUp(ctx.app);
    const longAgo = Math.floor(Date.now() / 1000) - 3600;
    const { token } = await ctx.app.betterAuth.api.signJWT({
      body: { payload: { sub: userId, iat: longAgo, exp: longAgo + 900 } },
    });
    const response = await ctx.app.inject({ url: '/api/tasks', headers: bearer(token) });
    expect(response.statusCode).toBe(401);
    expect(response.json()).toEqual({ detail: 'Token has expired' });
  });

  it('when the key set is rotated while running, then tokens of the new key are accepted and those of the removed key refused', async () => {
    const before = await signedUpJwt(ctx.app);
    const first = await ctx.app.inject({ url: '/api/tasks', headers: bearer(before.jwt) });
    expect(first.statusCode).toBe(200);

    // Rotation as an operator does it: remove the keys; Better Auth makes a new one on demand.
    await ctx.app.db.delete(jwks);
    const after = await signedUpJwt(ctx.app);
    expect(decodeProtectedHeader(after.jwt).kid).not.toBe(decodeProtectedHeader(before.jwt).kid);

    const fresh = await ctx.app.inject({ url: '/api/tasks', headers: bearer(after.jwt) });
    expect(fresh.statusCode).toBe(200);
    const stale = await ctx.app.inject({ url: '/api/tasks', headers: bearer(before.jwt) });
    expect(stale.statusCode).toBe(401);
  });

  it('when the database is down, then a built-in token and a sign-in are 503, not 401 or 500', async () => {
    const { jwt, email } = await signedUpJwt(ctx.app);
    // Nothing listens on port 1: every query fails at once with ECONNREFUSED.
    const unreachable = createDatabase(
      { kind: 'postgres', url: 'postgres://postgres@127.0.0.1:1/todo', poolMax: 1 },
      () => undefined,
    );
    const app = await buildApp(testConfig(ENV), { database: unreachable });
    try {
      const tasks = await app.inject({ url: '/api/tasks', headers: bearer(jwt) });
      expect(tasks.statusCode).toBe(503);
      const signInResponse = await app.inject({
        method: 'POST',
        url: '/api/auth/sign-in/email',
        headers: { origin: ORIGIN },
        payload: { email, password: PASSWORD },
      });
      expect(signInResponse.statusCode).toBe(503);
      expect(signInResponse.json()).toEqual({
        detail: 'Service temporarily unavailable: the database cannot be reached',
      });
    } finally {
      await app.close();
      await unreachable.close();
    }
  });

  it('when BETTER_AUTH_SECRET changed since the keys were made, then issuing tokens fails with a bare 500 until the jwks rows are deleted', async () => {
    await signedUpJwt(ctx.app); // a key encrypted with the current secret exists
    const restarted = await buildApp(testConfig({ ...ENV, BETTER_AUTH_SECRET: OTHER_SECRET }), {
      database: ctx.database.handle,
    });
    try {
      const { cookie } = await signUp(restarted);
      const broken = await restarted.inject({
        url: '/api/auth/token',
        headers: { origin: ORIGIN, cookie },
      });
      expect(broken.statusCode).toBe(500);
      expect(broken.json()).toEqual({ detail: 'Internal Server Error' });

      // The documented fix: delete the rows; a new key is made with the new secret.
      await restarted.db.delete(jwks);
      const repaired = await restarted.inject({
        url: '/api/auth/token',
        headers: { origin: ORIGIN, cookie },
      });
      expect(repaired.statusCode).toBe(200);
      const tasks = await restarted.inject({
        url: '/api/tasks',
        headers: bearer(repaired.json<{ token: string }>().token),
      });
      expect(tasks.statusCode).toBe(200);
    } finally {
      // Leave no key encrypted with the other secret behind for the app under test.
      await ctx.app.db.delete(jwks);
      await restarted.close();
    }
  });
});
