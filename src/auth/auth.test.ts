import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import {
  base64url,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  SignJWT,
} from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  createTask,
  createUserAndToken,
  signToken,
  startTestApp,
  TEST_SECRET,
  type TestContext,
  testConfig,
} from '../../test/helpers.js';
import { buildApp } from '../app.js';

const ISSUER = 'http://issuer.test';

/** jose refuses to refetch a key set within 30 s of the last fetch (our cooldownDuration). */
const JWKS_COOLDOWN_MS = 30_000;

const now = () => Math.floor(Date.now() / 1000);

/** Every 401 of SPEC §4: a Bearer challenge, a `detail` string, and never the token itself. */
function expectUnauthorized(response: LightMyRequestResponse, token?: string) {
  expect(response.statusCode).toBe(401);
  expect(String(response.headers['www-authenticate'])).toMatch(/^Bearer/);
  const body = response.json<{ detail: unknown }>();
  expect(typeof body.detail).toBe('string');
  if (token !== undefined && token !== '') expect(response.body).not.toContain(token);
  return String(body.detail);
}

function listTasks(app: FastifyInstance, token: string) {
  return app.inject({ url: '/api/tasks', headers: { authorization: `Bearer ${token}` } });
}

/** An HS256-family token with full control over every claim (helpers' signToken sets iat). */
async function signClaims(
  claims: JWTPayload,
  options: { alg?: string; secret?: string | Uint8Array } = {},
) {
  const secret = options.secret ?? TEST_SECRET;
  return new SignJWT(claims)
    .setProtectedHeader({ alg: options.alg ?? 'HS256', typ: 'JWT' })
    .sign(typeof secret === 'string' ? new TextEncoder().encode(secret) : secret);
}

const encodeJson = (value: unknown) => base64url.encode(JSON.stringify(value));

/** The default app: shared-secret tokens only. */
let ctx: TestContext;
beforeAll(async () => {
  ctx = await startTestApp();
});
afterAll(() => ctx.close());

describe('shared-secret tokens (HS256)', () => {
  it('when the token is valid, then the request is 200', async () => {
    const user = await createUserAndToken();
    const response = await listTasks(ctx.app, user.token);
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual([]);
  });

  it('when there is no Authorization header, then it is 401 saying it is missing', async () => {
    const response = await ctx.app.inject({ url: '/api/tasks' });
    expect(expectUnauthorized(response)).toMatch(/missing/i);
  });

  it.each([
    ['a Basic credential', 'Basic dXNlcjpwYXNzd29yZA=='],
    ['Bearer with no token', 'Bearer'],
    ['Bearer and spaces only', 'Bearer    '],
    ['a token that is not a JWT', 'Bearer not-a-jwt'],
    ['a token of two parts', 'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0'],
    ['a token of four parts', 'Bearer a.b.c.d'],
    ['three parts whose header is not JSON', 'Bearer a.b.c'],
    ['characters outside base64url', 'Bearer ey$.ey$.sig'],
    ['another scheme name', 'Token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'],
  ])('when the Authorization header is %s, then it is 401 "malformed"', async (_, header) => {
    const response = await ctx.app.inject({
      url: '/api/tasks',
      headers: { authorization: header },
    });
    expect(expectUnauthorized(response)).toMatch(/malformed/i);
  });

  it('when the token expired more than 60 s ago, then it is 401 saying it expired', async () => {
    const token = await signToken(`user_${randomUUID()}`, { expiresIn: -120 });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/expired/i);
  });

  it('when the token expired only 30 s ago, then it is still accepted (60 s skew)', async () => {
    const token = await signClaims({
      sub: `user_${randomUUID()}`,
      iat: now() - 600,
      exp: now() - 30,
    });
    const response = await listTasks(ctx.app, token);
    expect(response.statusCode).toBe(200);
  });

  it('when the token is signed with another secret, then it is 401 bad signature', async () => {
    const token = await signToken(`user_${randomUUID()}`, {
      secret: 'some-other-secret-that-is-long-enough-for-hs256-00',
    });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/signature/i);
  });

  it('when the payload is changed but the signature kept, then it is 401 bad signature', async () => {
    const victim = await createUserAndToken();
    const attacker = await createUserAndToken();
    await createTask(ctx.app, victim);
    const [header, payload, signature] = attacker.token.split('.');
    const claims: unknown = JSON.parse(new TextDecoder().decode(base64url.decode(payload ?? '')));
    const forged = `${header}.${encodeJson({ ...(claims as object), sub: victim.id })}.${signature}`;

    const response = await listTasks(ctx.app, forged);
    expect(expectUnauthorized(response, forged)).toMatch(/signature/i);
  });

  it('when the token is unsigned (alg "none"), then it is 401', async () => {
    const token = `${encodeJson({ alg: 'none', typ: 'JWT' })}.${encodeJson({
      sub: `user_${randomUUID()}`,
      iat: now(),
      exp: now() + 3600,
    })}.`;
    const response = await listTasks(ctx.app, token);
    expectUnauthorized(response, token);
  });

  it('when the token has no "sub", then it is 401', async () => {
    const token = await signToken(undefined);
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/sub/);
  });

  it('when the token has an empty-string "sub", then it is 401', async () => {
    const token = await signClaims({ sub: '', iat: now(), exp: now() + 3600 });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/sub/);
  });

  it('when the token\'s "sub" contains a NUL character, then it is 401, not a server error', async () => {
    // PostgreSQL cannot store NUL in text: such an id could never own a row.
    const token = await signClaims({ sub: 'user_\u0000_x', iat: now(), exp: now() + 3600 });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/sub/);
  });

  it('when the token has no "exp", then it is 401', async () => {
    const token = await signToken(`user_${randomUUID()}`, { expiresIn: null });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/exp/);
  });

  it('when "nbf" is 5 minutes in the future, then it is 401', async () => {
    const token = await signToken(`user_${randomUUID()}`, { claims: { nbf: now() + 300 } });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/nbf/);
  });

  it('when "nbf" is only 30 s in the future, then it is accepted (60 s skew)', async () => {
    const token = await signToken(`user_${randomUUID()}`, { claims: { nbf: now() + 30 } });
    const response = await listTasks(ctx.app, token);
    expect(response.statusCode).toBe(200);
  });

  it('when "iat" is 5 minutes in the future, then it is 401', async () => {
    const token = await signClaims({
      sub: `user_${randomUUID()}`,
      iat: now() + 300,
      exp: now() + 3600,
    });
    const response = await listTasks(ctx.app, token);
    expect(expectUnauthorized(response, token)).toMatch(/iat/);
  });

  it.each(['HS384', 'HS512'])(
    'when the token is %s signed with the shared secret, then it is 401 (HS256 is pinned)',
    async (alg) => {
      const token = await signClaims(
        { sub: `user_${randomUUID()}`, iat: now(), exp: now() + 3600 },
        { alg, secret: TEST_SECRET.repeat(2) },
      );
      const sameSecret = await signClaims(
        { sub: `user_${randomUUID()}`, iat: now(), exp: now() + 3600 },
        { alg },
      );
      expect(expectUnauthorized(await listTasks(ctx.app, token), token)).toMatch(/algorithm/i);
      expect(expectUnauthorized(await listTasks(ctx.app, sameSecret), sameSecret)).toMatch(
        /algorithm/i,
      );
    },
  );
});

// ---------------------------------------------------------------------------------------------
// External Better Auth: a key set served over HTTP by a tiny local server.

type KeyAlg = 'EdDSA' | 'ES256' | 'RS256';

interface SigningKey {
  kid: string;
  alg: KeyAlg;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  publicJwk: JWK;
  publicPem: string;
}

async function createSigningKey(alg: KeyAlg): Promise<SigningKey> {
  const { publicKey, privateKey } =
    alg === 'EdDSA'
      ? await generateKeyPair('EdDSA', { crv: 'Ed25519' })
      : await generateKeyPair(alg);
  const kid = `${alg}-${randomUUID()}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return { kid, alg, privateKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

async function signExternal(key: SigningKey, claims: JWTPayload = {}) {
  return new SignJWT({ iss: ISSUER, aud: ISSUER, ...claims })
    .setProtectedHeader({ alg: key.alg, kid: key.kid, typ: 'JWT' })
    .setSubject(`user_${randomUUID()}`)
    .setIssuedAt()
    .setExpirationTime('15m')
    .sign(key.privateKey);
}

/** One key set at its own path, with its own request counter and failure switch. */
interface KeySetEndpoint {
  url: string;
  keys: JWK[];
  requests: number;
  failWith: number | undefined;
}

class JwksServer {
  private readonly server: Server;
  private readonly endpoints = new Map<string, KeySetEndpoint>();
  private origin = '';

  constructor() {
    this.server = createServer((request, response) => {
      const endpoint = this.endpoints.get(request.url ?? '');
      if (endpoint === undefined) {
        response.writeHead(404).end();
        return;
      }
      endpoint.requests += 1;
      if (endpoint.failWith !== undefined) {
        response.writeHead(endpoint.failWith).end();
        return;
      }
      response
        .writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ keys: endpoint.keys }));
    });
  }

  async listen() {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as AddressInfo;
    this.origin = `http://127.0.0.1:${port}`;
  }

  serve(keys: SigningKey[], path = `/jwks/${randomUUID()}`): KeySetEndpoint {
    const endpoint: KeySetEndpoint = {
      url: `${this.origin}${path}`,
      keys: keys.map((key) => key.publicJwk),
      requests: 0,
      failWith: undefined,
    };
    this.endpoints.set(path, endpoint);
    return endpoint;
  }

  close() {
    return new Promise<void>((resolve) => {
      this.server.closeAllConnections();
      this.server.close(() => resolve());
    });
  }
}

describe('external Better Auth tokens (JWKS)', () => {
  const jwks = new JwksServer();
  /** The app of the brief: a key set with AUTH_ISSUER and AUTH_AUDIENCE. */
  let external: FastifyInstance;
  let unchecked: FastifyInstance;
  let endpoint: KeySetEndpoint;
  let edKey: SigningKey;
  let esKey: SigningKey;
  let rsKey: SigningKey;
  const extraApps: FastifyInstance[] = [];

  /** An app on the file's database (no second database to migrate), with its own key-set cache. */
  async function buildExternalApp(env: Record<string, string>) {
    const app = await buildApp(testConfig(env), { database: ctx.database.handle });
    extraApps.push(app);
    await app.ready();
    return app;
  }

  beforeAll(async () => {
    await jwks.listen();
    [edKey, esKey, rsKey] = await Promise.all([
      createSigningKey('EdDSA'),
      createSigningKey('ES256'),
      createSigningKey('RS256'),
    ]);
    endpoint = jwks.serve([edKey, esKey, rsKey], '/jwks');
    external = await buildExternalApp({
      AUTH_JWKS_URL: endpoint.url,
      AUTH_ISSUER: ISSUER,
      AUTH_AUDIENCE: ISSUER,
    });
    unchecked = await buildExternalApp({ AUTH_JWKS_URL: endpoint.url });
  });
  afterAll(async () => {
    vi.useRealTimers();
    for (const app of extraApps) await app.close();
    await jwks.close();
  });

  it('when an EdDSA token from the key set is valid, then the request is 200', async () => {
    const token = await signExternal(edKey);
    const response = await listTasks(external, token);
    expect(response.statusCode).toBe(200);
  });

  it.each(['ES256', 'RS256'] as const)(
    'when a %s token from the key set is valid, then the request is 200',
    async (alg) => {
      const token = await signExternal(alg === 'ES256' ? esKey : rsKey);
      const response = await listTasks(external, token);
      expect(response.statusCode).toBe(200);
    },
  );

  it('when "iss" is not AUTH_ISSUER, then it is 401', async () => {
    const token = await signExternal(edKey, { iss: 'http://evil.test' });
    const response = await listTasks(external, token);
    expect(expectUnauthorized(response, token)).toMatch(/iss/);
  });

  it('when "aud" is not AUTH_AUDIENCE, then it is 401', async () => {
    const token = await signExternal(edKey, { aud: 'http://some-other-api.test' });
    const response = await listTasks(external, token);
    expect(expectUnauthorized(response, token)).toMatch(/aud/);
  });

  it('when AUTH_ISSUER and AUTH_AUDIENCE are unset, then "iss" and "aud" are not checked', async () => {
    const token = await signExternal(edKey, {
      iss: 'http://elsewhere.test',
      aud: 'http://some-other-api.test',
    });
    expect((await listTasks(unchecked, token)).statusCode).toBe(200);
    expectUnauthorized(await listTasks(external, token), token);
  });

  it('when a token is signed by a key not in the set (unknown kid), then it is 401', async () => {
    const stranger = await createSigningKey('EdDSA');
    const token = await signExternal(stranger);
    const response = await listTasks(external, token);
    expectUnauthorized(response, token);
  });

  it('when a token names a known kid but is signed by another key, then it is 401', async () => {
    const stranger = await createSigningKey('EdDSA');
    const token = await signExternal({ ...stranger, kid: edKey.kid });
    const response = await listTasks(external, token);
    expect(expectUnauthorized(response, token)).toMatch(/signature/i);
  });

  it.each([
    ['the SPKI PEM', () => new TextEncoder().encode(edKey.publicPem)],
    ['the raw key bytes', () => base64url.decode(edKey.publicJwk.x ?? '')],
    ['the JWK JSON', () => new TextEncoder().encode(JSON.stringify(edKey.publicJwk))],
  ])(
    'when an HS256 token names a JWKS kid and is signed with %s of its public key, then it is 401',
    async (_, secret) => {
      const token = await new SignJWT({ iss: ISSUER, aud: ISSUER })
        .setProtectedHeader({ alg: 'HS256', kid: edKey.kid, typ: 'JWT' })
        .setSubject(`user_${randomUUID()}`)
        .setIssuedAt()
        .setExpirationTime('15m')
        .sign(secret());
      const response = await listTasks(external, token);
      expectUnauthorized(response, token);
    },
  );

  it('when an external token has no "exp", then it is 401', async () => {
    const token = await new SignJWT({ iss: ISSUER, aud: ISSUER })
      .setProtectedHeader({ alg: 'EdDSA', kid: edKey.kid })
      .setSubject(`user_${randomUUID()}`)
      .setIssuedAt()
      .sign(edKey.privateKey);
    const response = await listTasks(external, token);
    expect(expectUnauthorized(response, token)).toMatch(/exp/);
  });

  it('when many requests use a known kid, then the key set is fetched once', async () => {
    const keySet = jwks.serve([edKey]);
    const app = await buildExternalApp({ AUTH_JWKS_URL: keySet.url });
    expect(keySet.requests).toBe(0);
    for (let i = 0; i < 5; i++) {
      expect((await listTasks(app, await signExternal(edKey))).statusCode).toBe(200);
    }
    const burst = await Promise.all(
      Array.from({ length: 10 }, async () => listTasks(app, await signExternal(edKey))),
    );
    expect(burst.map((response) => response.statusCode)).toEqual(Array(10).fill(200));
    expect(keySet.requests).toBe(1);
  });

  it('when a key is added to the set after the first fetch, then its unknown kid triggers a refetch', async () => {
    const keySet = jwks.serve([edKey]);
    const app = await buildExternalApp({ AUTH_JWKS_URL: keySet.url });
    expect((await listTasks(app, await signExternal(edKey))).statusCode).toBe(200);
    expect(keySet.requests).toBe(1);

    const rotated = await createSigningKey('EdDSA');
    keySet.keys.push(rotated.publicJwk);
    // Refetches are rate limited to one per cooldown; move the clock past it.
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + JWKS_COOLDOWN_MS + 1_000);
      const response = await listTasks(app, await signExternal(rotated));
      expect(response.statusCode).toBe(200);
      expect(keySet.requests).toBe(2);
      // The old key is still in the refreshed set.
      expect((await listTasks(app, await signExternal(edKey))).statusCode).toBe(200);
      expect(keySet.requests).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('when the key-set server answers with an error while a key is needed, then it is 503', async () => {
    const keySet = jwks.serve([edKey]);
    keySet.failWith = 500;
    const app = await buildExternalApp({ AUTH_JWKS_URL: keySet.url });
    const token = await signExternal(edKey);
    const response = await listTasks(app, token);
    expect(response.statusCode).toBe(503);
    expect(typeof response.json<{ detail: unknown }>().detail).toBe('string');
    expect(response.body).not.toContain(token);
    expect(response.headers['retry-after']).toBeDefined();
    expect(keySet.requests).toBe(1);
  });

  it('when the key-set server goes down before a rotated key is fetched, then it is 503', async () => {
    const keySet = jwks.serve([edKey]);
    const app = await buildExternalApp({ AUTH_JWKS_URL: keySet.url });
    expect((await listTasks(app, await signExternal(edKey))).statusCode).toBe(200);

    keySet.failWith = 503;
    const rotated = await createSigningKey('EdDSA');
    vi.useFakeTimers({ toFake: ['Date'] });
    try {
      vi.setSystemTime(Date.now() + JWKS_COOLDOWN_MS + 1_000);
      const response = await listTasks(app, await signExternal(rotated));
      expect(response.statusCode).toBe(503);
      expect(keySet.requests).toBe(2);
      // Tokens of keys already cached keep working during the outage.
      expect((await listTasks(app, await signExternal(edKey))).statusCode).toBe(200);
    } finally {
      vi.useRealTimers();
    }
  });

  it('when nothing listens at AUTH_JWKS_URL, then it is 503', async () => {
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const { port } = gone.address() as AddressInfo;
    await new Promise<void>((resolve) => gone.close(() => resolve()));

    const app = await buildExternalApp({ AUTH_JWKS_URL: `http://127.0.0.1:${port}/jwks` });
    const response = await listTasks(app, await signExternal(edKey));
    expect(response.statusCode).toBe(503);
    expect(typeof response.json<{ detail: unknown }>().detail).toBe('string');
  });

  it('when a shared-secret token is sent to an app with a key set, then it still works', async () => {
    const user = await createUserAndToken();
    expect((await listTasks(external, user.token)).statusCode).toBe(200);
  });
});

// ---------------------------------------------------------------------------------------------
// SPEC §5: /api/{user_id}/tasks only for the token's own user.

describe('the path user id', () => {
  const requests = [
    { method: 'GET', path: '', body: undefined },
    { method: 'POST', path: '', body: { title: 'Not yours' } },
    { method: 'GET', path: '/:id', body: undefined },
    { method: 'PUT', path: '/:id', body: { title: 'Renamed', completed: true } },
    { method: 'DELETE', path: '/:id', body: undefined },
    { method: 'PATCH', path: '/:id/complete', body: undefined },
  ] as const;

  it.each(requests)(
    "when $method $path names another user's id, then it is 403 and nothing changes",
    async ({ method, path, body }) => {
      const owner = await createUserAndToken();
      const intruder = await createUserAndToken();
      const task = await createTask(ctx.app, owner);
      const response = await ctx.app.inject({
        method,
        url: `/api/${owner.id}/tasks${path.replace(':id', String(task.id))}`,
        headers: intruder.headers,
        ...(body === undefined ? {} : { payload: body }),
      });
      expect(response.statusCode).toBe(403);
      expect(typeof response.json<{ detail: unknown }>().detail).toBe('string');

      const list = await ctx.app.inject({ url: '/api/tasks', headers: owner.headers });
      expect(list.json()).toEqual([task]);
    },
  );

  it("when the path names the token's own id, then the same routes answer normally", async () => {
    const owner = await createUserAndToken();
    const task = await createTask(ctx.app, owner);
    const response = await ctx.app.inject({
      url: `/api/${owner.id}/tasks/${task.id}`,
      headers: owner.headers,
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual(task);
  });

  it.each([
    ['POST', '', { title: '' }],
    ['POST', '', { title: 42, extra: true }],
    ['PUT', '/1', { completed: 'yes' }],
    ['PATCH', '/1/complete', { completed: 'maybe' }],
    ['GET', '/not-a-number', undefined],
  ] as const)(
    "when %s to another user's path is also invalid, then it is 403, not 422",
    async (method, path, body) => {
      const owner = await createUserAndToken();
      const intruder = await createUserAndToken();
      const response = await ctx.app.inject({
        method,
        url: `/api/${owner.id}/tasks${path}`,
        headers: intruder.headers,
        ...(body === undefined ? {} : { payload: body }),
      });
      expect(response.statusCode).toBe(403);
    },
  );

  it("when another user's path is requested without a token, then it is 401, not 403", async () => {
    const owner = await createUserAndToken();
    const response = await ctx.app.inject({ url: `/api/${owner.id}/tasks` });
    expectUnauthorized(response);
  });

  it("when another user's path is requested with a bad token, then it is 401, not 403", async () => {
    const owner = await createUserAndToken();
    const token = await signToken(`user_${randomUUID()}`, { expiresIn: -3600 });
    const response = await ctx.app.inject({
      method: 'POST',
      url: `/api/${owner.id}/tasks`,
      headers: { authorization: `Bearer ${token}` },
      payload: { title: '' },
    });
    expectUnauthorized(response, token);
  });
});
