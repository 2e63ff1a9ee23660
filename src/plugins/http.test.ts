import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTask,
  createUserAndToken,
  startTestApp,
  type TestContext,
  testConfig,
} from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { securityHeaders } from './security-headers.js';

const ALLOWED_ORIGIN = 'http://localhost:3000';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let ctx: TestContext;
/** A second app on the same database, configured with two allowed origins. */
let twoOrigins: FastifyInstance;
beforeAll(async () => {
  ctx = await startTestApp();
  twoOrigins = await buildApp(testConfig({ CORS_ORIGINS: 'http://a.test,http://b.test' }), {
    database: ctx.database.handle,
  });
  await twoOrigins.ready();
});
afterAll(async () => {
  await twoOrigins.close();
  await ctx.close();
});

/** Nothing internal may reach a client on an error path: no stack, file path or SQL. */
const INTERNALS =
  /stack|at \/|\/work\/|node_modules|\.ts:\d|\b(select|insert|update|delete from|where|returning|drizzle|relation|constraint|sqlstate)\b/i;

function expectNoInternals(response: LightMyRequestResponse) {
  expect(response.body).not.toMatch(INTERNALS);
}

async function inject(options: InjectOptions | string) {
  return ctx.app.inject(options);
}

function expectSecurityHeaders(response: LightMyRequestResponse) {
  expect(response.headers['x-content-type-options']).toBe('nosniff');
  expect(response.headers['content-security-policy']).toEqual(expect.any(String));
  expect(String(response.headers['content-security-policy'])).not.toBe('');
  expect(response.headers['x-frame-options']).toEqual(expect.any(String));
  expect(response.headers['referrer-policy']).toEqual(expect.any(String));
}

function headerList(value: string | string[] | number | undefined): string[] {
  return String(value ?? '')
    .split(',')
    .map((item) => item.trim().toLowerCase())
    .filter((item) => item !== '');
}

describe('not found', () => {
  it('when a route does not exist, then it is 404 JSON with a detail', async () => {
    const response = await inject('/no/such/route');
    expect(response.statusCode).toBe(404);
    expect(response.headers['content-type']).toMatch(/^application\/json/);
    expect(response.json()).toEqual({ detail: expect.any(String) });
    expectNoInternals(response);
  });

  it('when a method is not served on a path, then it is 404 JSON with a detail', async () => {
    const response = await inject({ method: 'POST', url: '/health' });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toEqual({ detail: expect.any(String) });
  });
});

describe('CORS', () => {
  it('when a request comes from an allowed origin, then the origin is echoed with credentials', async () => {
    const response = await inject({ url: '/health', headers: { origin: ALLOWED_ORIGIN } });
    expect(response.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
    expect(response.headers['access-control-allow-credentials']).toBe('true');
    expect(headerList(response.headers.vary)).toContain('origin');
  });

  it('when an API call from an allowed origin fails with 401, then it still carries CORS headers', async () => {
    const response = await inject({ url: '/api/tasks', headers: { origin: ALLOWED_ORIGIN } });
    expect(response.statusCode).toBe(401);
    expect(response.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
  });

  it('when an allowed origin reads a list, then X-Total-Count and Location are exposed', async () => {
    const user = await createUserAndToken();
    const response = await inject({
      url: '/api/tasks',
      headers: { ...user.headers, origin: ALLOWED_ORIGIN },
    });
    const exposed = headerList(response.headers['access-control-expose-headers']);
    expect(exposed).toContain('x-total-count');
    expect(exposed).toContain('location');
  });

  for (const method of ['PUT', 'PATCH', 'DELETE', 'POST']) {
    it(`when an allowed origin preflights ${method}, then it is 204 allowing the method and headers`, async () => {
      const response = await inject({
        method: 'OPTIONS',
        url: '/api/tasks/1',
        headers: {
          origin: ALLOWED_ORIGIN,
          'access-control-request-method': method,
          'access-control-request-headers': 'authorization,content-type',
        },
      });
      expect(response.statusCode).toBe(204);
      expect(response.headers['access-control-allow-origin']).toBe(ALLOWED_ORIGIN);
      expect(response.headers['access-control-allow-credentials']).toBe('true');
      expect(headerList(response.headers['access-control-allow-methods'])).toContain(
        method.toLowerCase(),
      );
      const allowedHeaders = headerList(response.headers['access-control-allow-headers']);
      expect(allowedHeaders).toContain('authorization');
      expect(allowedHeaders).toContain('content-type');
    });
  }

  it('when another origin sends a request, then no CORS headers come back', async () => {
    const response = await inject({ url: '/health', headers: { origin: 'http://evil.test' } });
    expect(response.statusCode).toBe(200);
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
    expect(response.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it('when another origin preflights, then it is not allowed', async () => {
    const response = await inject({
      method: 'OPTIONS',
      url: '/api/tasks/1',
      headers: {
        origin: 'http://evil.test',
        'access-control-request-method': 'DELETE',
        'access-control-request-headers': 'authorization,content-type',
      },
    });
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
    expect(response.headers['access-control-allow-methods']).toBeUndefined();
    expect(response.headers['access-control-allow-credentials']).toBeUndefined();
  });

  it('when an origin differs from an allowed one only by port, then it is not allowed', async () => {
    const response = await inject({
      url: '/health',
      headers: { origin: 'http://localhost:3001' },
    });
    expect(response.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('when CORS_ORIGINS lists two origins, then each is allowed and the default one is not', async () => {
    for (const origin of ['http://a.test', 'http://b.test']) {
      const simple = await twoOrigins.inject({ url: '/health', headers: { origin } });
      expect(simple.headers['access-control-allow-origin']).toBe(origin);
      const preflight = await twoOrigins.inject({
        method: 'OPTIONS',
        url: '/api/tasks',
        headers: { origin, 'access-control-request-method': 'POST' },
      });
      expect(preflight.statusCode).toBe(204);
      expect(preflight.headers['access-control-allow-origin']).toBe(origin);
    }
    const other = await twoOrigins.inject({ url: '/health', headers: { origin: ALLOWED_ORIGIN } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
  });
});

describe('security headers', () => {
  it('when a JSON response is sent, then it carries the security headers', async () => {
    const user = await createUserAndToken();
    const response = await inject({ url: '/api/tasks', headers: user.headers });
    expect(response.statusCode).toBe(200);
    expectSecurityHeaders(response);
  });

  it('when a request is unauthenticated, then the 401 carries the security headers', async () => {
    const response = await inject('/api/tasks');
    expect(response.statusCode).toBe(401);
    expectSecurityHeaders(response);
    expectNoInternals(response);
  });

  it('when a route is unknown, then the 404 carries the security headers', async () => {
    const response = await inject('/nothing-here');
    expect(response.statusCode).toBe(404);
    expectSecurityHeaders(response);
  });

  it('when a task is missing, then the 404 carries the security headers', async () => {
    const user = await createUserAndToken();
    const response = await inject({ url: '/api/tasks/999999999', headers: user.headers });
    expect(response.statusCode).toBe(404);
    expectSecurityHeaders(response);
  });

  it("when any response is sent, then it carries every header of helmet's defaults, exactly", async () => {
    const expected = securityHeaders();
    // helmet 8's defaults, spelled out so that a change of them is a visible change here.
    expect(expected).toMatchObject({
      'strict-transport-security': 'max-age=31536000; includeSubDomains',
      'x-frame-options': 'SAMEORIGIN',
      'cross-origin-opener-policy': 'same-origin',
      'cross-origin-resource-policy': 'same-origin',
    });
    expect(expected['content-security-policy']).toMatch(/^default-src 'self';/);
    const user = await createUserAndToken();
    for (const response of [
      await inject({ url: '/api/tasks', headers: user.headers }),
      await inject('/api/tasks'),
      await inject('/nothing-here'),
      await inject({ method: 'POST', url: '/api/tasks', headers: user.headers, payload: {} }),
      await inject('/health'),
    ]) {
      for (const [name, value] of Object.entries(expected)) {
        expect(response.headers[name], `${response.statusCode} ${name}`).toBe(value);
      }
    }
  });

  it('when a task list is served, then it is marked not to be cached', async () => {
    const user = await createUserAndToken();
    const response = await inject({ url: '/api/tasks', headers: user.headers });
    expect(response.headers['cache-control']).toContain('no-store');
  });
});

describe('request id', () => {
  it('when a safe x-request-id is sent, then it is echoed', async () => {
    const response = await inject({
      url: '/health',
      headers: { 'x-request-id': 'abc-123.DEF_4:5' },
    });
    expect(response.headers['x-request-id']).toBe('abc-123.DEF_4:5');
  });

  it('when no x-request-id is sent, then one is generated', async () => {
    const first = await inject('/health');
    const second = await inject('/health');
    expect(first.headers['x-request-id']).toMatch(UUID);
    expect(second.headers['x-request-id']).toMatch(UUID);
    expect(first.headers['x-request-id']).not.toBe(second.headers['x-request-id']);
  });

  for (const [name, unsafe] of [
    ['contains spaces', 'id with spaces'],
    ['is 500 characters long', 'a'.repeat(500)],
    ['contains markup', '<script>alert(1)</script>'],
  ] as const) {
    it(`when the x-request-id ${name}, then a generated id replaces it`, async () => {
      const response = await inject({ url: '/health', headers: { 'x-request-id': unsafe } });
      expect(response.headers['x-request-id']).toMatch(UUID);
      expect(response.headers['x-request-id']).not.toBe(unsafe);
    });
  }

  it('when an error response is sent, then it carries the request id too', async () => {
    const response = await inject({ url: '/api/tasks', headers: { 'x-request-id': 'trace-401' } });
    expect(response.statusCode).toBe(401);
    expect(response.headers['x-request-id']).toBe('trace-401');
  });
});

describe('health and readiness', () => {
  it('when /health is called, then it is 200 {"status":"ok"}', async () => {
    const response = await inject('/health');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({ status: 'ok' });
  });

  it('when /ready is called with the database up, then it is 200', async () => {
    const response = await inject('/ready');
    expect(response.statusCode).toBe(200);
    expect(response.json()).toMatchObject({ status: 'ready' });
  });
});

describe('OpenAPI and docs', () => {
  interface OpenApiDocument {
    openapi: string;
    paths: Record<string, unknown>;
    components?: { securitySchemes?: Record<string, { type?: string; scheme?: string }> };
  }

  it('when /openapi.json is fetched, then it is an OpenAPI 3.1 document of both route shapes', async () => {
    const response = await inject('/openapi.json');
    expect(response.statusCode).toBe(200);
    const document = response.json<OpenApiDocument>();
    expect(document.openapi.startsWith('3.1')).toBe(true);
    expect(Object.keys(document.paths)).toEqual(
      expect.arrayContaining([
        '/api/{user_id}/tasks',
        '/api/{user_id}/tasks/{id}',
        '/api/{user_id}/tasks/{id}/complete',
        '/api/tasks',
        '/api/tasks/{id}',
        '/api/tasks/{id}/complete',
      ]),
    );
  });

  it('when /openapi.json is fetched, then it declares a bearer security scheme', async () => {
    const document = (await inject('/openapi.json')).json<OpenApiDocument>();
    const schemes = Object.values(document.components?.securitySchemes ?? {});
    expect(schemes).toContainEqual(expect.objectContaining({ type: 'http', scheme: 'bearer' }));
  });

  it('when /docs is fetched, then it serves an HTML page', async () => {
    let response = await inject('/docs');
    for (
      let hops = 0;
      hops < 3 && response.statusCode >= 300 && response.statusCode < 400;
      hops++
    ) {
      const location = new URL(String(response.headers.location), 'http://localhost/');
      response = await inject(`${location.pathname}${location.search}`);
    }
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/html/);
    expect(response.body.toLowerCase()).toContain('<html');
  });
});

describe('error bodies', () => {
  it('when many kinds of request fail, then no body reveals a stack, a file path or SQL', async () => {
    const user = await createUserAndToken();
    const task = await createTask(ctx.app, user);
    const json = { ...user.headers, 'content-type': 'application/json' };
    const failures: InjectOptions[] = [
      { url: '/api/tasks', headers: { authorization: 'Bearer not.a.jwt' } },
      { url: '/api/tasks', headers: { authorization: 'Basic abc' } },
      { url: `/api/someone-else/tasks/${task.id}`, headers: user.headers },
      { url: '/api/tasks/abc', headers: user.headers },
      { url: '/api/tasks/99999999999999999999', headers: user.headers },
      { url: '/api/tasks?status=nope&limit=-4', headers: user.headers },
      { method: 'POST', url: '/api/tasks', headers: json, payload: '{"title":' },
      { method: 'POST', url: '/api/tasks', headers: json, payload: '{"title":"\\u0000"}' },
      { method: 'POST', url: '/api/tasks', headers: json, payload: '{"title":"x".repeat}' },
      { method: 'POST', url: '/api/tasks', headers: json, payload: '{"__proto__":{"a":1}}' },
      { method: 'POST', url: '/api/tasks', headers: json, payload: '[]' },
      {
        method: 'POST',
        url: '/api/tasks',
        headers: { ...user.headers, 'content-type': 'text/plain' },
        payload: 'x',
      },
      {
        method: 'POST',
        url: '/api/tasks',
        headers: json,
        payload: JSON.stringify({ title: 'x'.repeat(20_000) }),
      },
      { method: 'PUT', url: `/api/tasks/${task.id}`, headers: json, payload: '{}' },
      { method: 'PUT', url: '/api/tasks/0', headers: json, payload: '{"title":"x"}' },
      { method: 'DELETE', url: '/api/tasks/-1', headers: user.headers },
    ];
    for (const request of failures) {
      const response = await inject(request);
      expect(response.statusCode).toBeGreaterThanOrEqual(400);
      expect(response.statusCode).toBeLessThan(500);
      expect(response.json()).toHaveProperty('detail');
      expectNoInternals(response);
    }
  });
});
