import { randomUUID } from 'node:crypto';
import type { FastifyInstance, InjectOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createTestDatabase,
  createUserAndToken,
  DATABASE_KIND,
  signToken,
  type TestDatabase,
  testConfig,
} from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { ConfigError } from '../config.js';

const METRICS_TOKEN = `metrics-${randomUUID()}`;
const USER_LIMIT = 3;
const CLIENT = '203.0.113.7';

type LogLine = Record<string, unknown>;

let database: TestDatabase;
let app: FastifyInstance;
let guarded: FastifyInstance;
/** Everything `app` logged, as written (lines of JSON). */
let output = '';

beforeAll(async () => {
  database = await createTestDatabase();
  app = await buildApp(
    testConfig({ LOG_LEVEL: 'info', RATE_LIMIT_USER_PER_MINUTE: String(USER_LIMIT) }),
    {
      database: database.handle,
      logStream: {
        write: (line) => {
          output += line;
        },
      },
    },
  );
  await app.ready();
  guarded = await buildApp(testConfig({ METRICS_TOKEN }), { database: database.handle });
  await guarded.ready();
});
afterAll(async () => {
  await app?.close();
  await guarded?.close();
  await database?.drop();
});

function logLines(): LogLine[] {
  return output
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as LogLine);
}

function securityLines(requestId: string): LogLine[] {
  return logLines().filter((line) => line.event === 'security' && line.reqId === requestId);
}

async function scrape(target: FastifyInstance = app, options: Partial<InjectOptions> = {}) {
  const response = await target.inject({ url: '/metrics', ...options });
  expect(response.statusCode).toBe(200);
  return response.body;
}

/** The value of the sample whose name and labels are all given, or 0 when there is none. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelText = line.slice(name.length).split(' ')[0] ?? '';
    if (wanted.every((pair) => labelText.includes(pair))) return Number(line.split(' ').pop());
  }
  return 0;
}

describe('/metrics content', () => {
  it('when scraped from this host, then it is Prometheus text that no shared cache keeps', async () => {
    const response = await app.inject({ url: '/metrics' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.body).toContain('# TYPE http_requests_total counter');
    expect(response.body).toContain('# TYPE http_request_duration_seconds histogram');
    expect(response.body).toContain('# TYPE process_cpu_seconds_total counter');
  });

  it('when a task route is requested, then requests are counted by method, route pattern and status, never the raw URL', async () => {
    const user = await createUserAndToken();
    const labels = { method: 'GET', route: '/api/:user_id/tasks', status: '200' };
    const before = sample(await scrape(), 'http_requests_total', labels);
    const response = await app.inject({ url: `/api/${user.id}/tasks`, headers: user.headers });
    expect(response.statusCode).toBe(200);
    const text = await scrape();
    expect(sample(text, 'http_requests_total', labels)).toBe(before + 1);
    expect(text).not.toContain(user.id);
  });

  it('when a request is answered, then its latency lands in the histogram with the same labels', async () => {
    const user = await createUserAndToken();
    const labels = { method: 'POST', route: '/api/tasks', status: '201' };
    const before = await scrape();
    await app.inject({
      method: 'POST',
      url: '/api/tasks',
      headers: user.headers,
      payload: { title: 'timed' },
    });
    const after = await scrape();
    const count = (text: string) => sample(text, 'http_request_duration_seconds_count', labels);
    const inf = (text: string) =>
      sample(text, 'http_request_duration_seconds_bucket', { ...labels, le: '+Inf' });
    expect(count(after)).toBe(count(before) + 1);
    expect(inf(after)).toBe(inf(before) + 1);
    expect(sample(after, 'http_request_duration_seconds_sum', labels)).toBeGreaterThan(0);
  });

  it('when no route matches, then the request is counted as route "unmatched" and the path is not exposed', async () => {
    const path = `/no-such-route-${randomUUID()}`;
    const labels = { method: 'GET', route: 'unmatched', status: '404' };
    const before = sample(await scrape(), 'http_requests_total', labels);
    expect((await app.inject({ url: path })).statusCode).toBe(404);
    const text = await scrape();
    expect(sample(text, 'http_requests_total', labels)).toBe(before + 1);
    expect(text).not.toContain(path);
  });

  it('when tokens are refused, then auth_failures_total counts each by its reason', async () => {
    const before = await scrape();
    const expired = await signToken(`user_${randomUUID()}`, { expiresIn: -3600 });
    const forged = await signToken(`user_${randomUUID()}`, { secret: 'x'.repeat(48) });
    await app.inject({ url: '/api/tasks', headers: { authorization: `Bearer ${expired}` } });
    await app.inject({ url: '/api/tasks', headers: { authorization: `Bearer ${forged}` } });
    await app.inject({ url: '/api/tasks', headers: { authorization: `Bearer ${forged}` } });
    await app.inject({ url: '/api/tasks' });
    const after = await scrape();
    const failures = (text: string, reason: string) =>
      sample(text, 'auth_failures_total', { reason });
    expect(failures(after, 'expired')).toBe(failures(before, 'expired') + 1);
    expect(failures(after, 'signature')).toBe(failures(before, 'signature') + 2);
    expect(failures(after, 'missing')).toBe(failures(before, 'missing') + 1);
  });

  it('when a request is rate limited, then rate_limit_rejections_total counts it by limit', async () => {
    const user = await createUserAndToken();
    const before = sample(await scrape(), 'rate_limit_rejections_total', { limit: 'user' });
    for (let i = 0; i <= USER_LIMIT; i++) {
      await app.inject({ url: '/api/tasks', headers: user.headers });
    }
    const after = sample(await scrape(), 'rate_limit_rejections_total', { limit: 'user' });
    expect(after).toBe(before + 1);
  });

  it('when scraped, then the database pool gauges show the connections', async () => {
    const user = await createUserAndToken();
    await app.inject({ url: '/api/tasks', headers: user.headers });
    const text = await scrape();
    const total = sample(text, 'db_pool_total_connections');
    // The test database: a pool of 5 on PostgreSQL, PGlite's single in-process connection.
    expect(sample(text, 'db_pool_max_connections')).toBe(DATABASE_KIND === 'postgres' ? 5 : 1);
    expect(total).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'db_pool_idle_connections')).toBeLessThanOrEqual(total);
    expect(text).toMatch(/^db_pool_waiting_clients \d+$/m);
  });

  it('when two apps run in one process, then each has its own registry', async () => {
    const labels = { method: 'GET', route: '/health', status: '200' };
    const mine = sample(await scrape(guarded, tokenHeader()), 'http_requests_total', labels);
    const theirs = sample(await scrape(), 'http_requests_total', labels);
    await app.inject({ url: '/health' });
    await app.inject({ url: '/health' });
    expect(sample(await scrape(), 'http_requests_total', labels)).toBe(theirs + 2);
    expect(sample(await scrape(guarded, tokenHeader()), 'http_requests_total', labels)).toBe(mine);
  });

  it('when the OpenAPI document is read, then /metrics is not in it', async () => {
    const response = await app.inject({ url: '/openapi.json' });
    expect(response.statusCode).toBe(200);
    expect(Object.keys(response.json<{ paths: object }>().paths)).not.toContain('/metrics');
  });
});

function tokenHeader(token = METRICS_TOKEN): Partial<InjectOptions> {
  return { headers: { authorization: `Bearer ${token}` }, remoteAddress: CLIENT };
}

describe('/metrics protection', () => {
  it('when METRICS_TOKEN is unset and the client is on another host, then /metrics is 404', async () => {
    const response = await app.inject({ url: '/metrics', remoteAddress: CLIENT });
    expect(response.statusCode).toBe(404);
    expect(response.json()).toEqual({ detail: 'Not Found' });
  });

  it('when METRICS_TOKEN is unset and the request came through a proxy on this host, then /metrics is 404', async () => {
    for (const header of ['x-forwarded-for', 'forwarded', 'x-real-ip']) {
      const response = await app.inject({
        url: '/metrics',
        headers: { [header]: header === 'forwarded' ? `for=${CLIENT}` : CLIENT },
      });
      expect(response.statusCode).toBe(404);
    }
  });

  it('when METRICS_TOKEN is set, then /metrics without it or with a wrong one is 401 with a Bearer challenge', async () => {
    for (const options of [
      { remoteAddress: '127.0.0.1' },
      tokenHeader('wrong-token-0123456789'),
      tokenHeader(`${METRICS_TOKEN}x`),
    ]) {
      const response = await guarded.inject({ url: '/metrics', ...options });
      expect(response.statusCode).toBe(401);
      expect(response.headers['www-authenticate']).toBe('Bearer');
      expect(response.json<{ detail: string }>().detail).toContain('METRICS_TOKEN');
    }
  });

  it('when METRICS_TOKEN is set, then /metrics with it is served to any address', async () => {
    const text = await scrape(guarded, tokenHeader());
    expect(text).toContain('# TYPE http_requests_total counter');
  });

  it('when METRICS_TOKEN is shorter than 16 characters, then loading the config fails naming it', () => {
    const load = () => testConfig({ METRICS_TOKEN: 'short' });
    expect(load).toThrow(ConfigError);
    expect(load).toThrow('Invalid METRICS_TOKEN: must be at least 16 characters');
  });
});

describe('security events in the log', () => {
  it('when a token is refused, then one security line names the reason, IP and request id, and the token is nowhere in the log', async () => {
    const expired = await signToken(`user_${randomUUID()}`, { expiresIn: -60 });
    const requestId = `req-${randomUUID()}`;
    const response = await app.inject({
      url: '/api/tasks',
      headers: { authorization: `Bearer ${expired}`, 'x-request-id': requestId },
      remoteAddress: CLIENT,
    });
    expect(response.statusCode).toBe(401);
    const lines = securityLines(requestId);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      event: 'security',
      reason: 'expired',
      status: 401,
      ip: CLIENT,
      userId: null,
      reqId: requestId,
    });
    expect(output).not.toContain(expired);
    expect(output).not.toContain(expired.split('.')[2]);
  });

  it("when a user asks for another user's path, then the 403 line carries the user id, IP and request id", async () => {
    const user = await createUserAndToken();
    const other = await createUserAndToken();
    const requestId = `req-${randomUUID()}`;
    const response = await app.inject({
      url: `/api/${other.id}/tasks`,
      headers: { ...user.headers, 'x-request-id': requestId },
      remoteAddress: CLIENT,
    });
    expect(response.statusCode).toBe(403);
    expect(securityLines(requestId)).toEqual([
      expect.objectContaining({
        reason: 'forbidden',
        status: 403,
        userId: user.id,
        ip: CLIENT,
        reqId: requestId,
      }),
    ]);
    expect(output).not.toContain(user.token);
  });

  it('when a user is rate limited, then the 429 line carries reason rate_limited, the limit, user id, IP and request id', async () => {
    const user = await createUserAndToken();
    for (let i = 0; i < USER_LIMIT; i++) {
      await app.inject({ url: '/api/tasks', headers: user.headers, remoteAddress: CLIENT });
    }
    const requestId = `req-${randomUUID()}`;
    const response = await app.inject({
      url: '/api/tasks',
      headers: { ...user.headers, 'x-request-id': requestId },
      remoteAddress: CLIENT,
    });
    expect(response.statusCode).toBe(429);
    expect(securityLines(requestId)).toEqual([
      expect.objectContaining({
        reason: 'rate_limited',
        limit: 'user',
        status: 429,
        userId: user.id,
        ip: CLIENT,
        reqId: requestId,
      }),
    ]);
    expect(output).not.toContain(user.token);
  });

  it('when a sign-in fails, then a credentials line is logged and counted, and the password is nowhere in the log', async () => {
    const password = `pw-${randomUUID()}`;
    const requestId = `req-${randomUUID()}`;
    const before = sample(await scrape(), 'auth_failures_total', { reason: 'credentials' });
    const response = await app.inject({
      method: 'POST',
      url: '/api/auth/sign-in/email',
      remoteAddress: CLIENT,
      headers: { origin: 'http://localhost:3000', 'x-request-id': requestId, cookie: 'a=b' },
      payload: { email: `nobody-${randomUUID()}@example.com`, password },
    });
    expect(response.statusCode).toBe(401);
    expect(securityLines(requestId)).toEqual([
      expect.objectContaining({ reason: 'credentials', status: 401, ip: CLIENT }),
    ]);
    const after = sample(await scrape(), 'auth_failures_total', { reason: 'credentials' });
    expect(after).toBe(before + 1);
    expect(output).not.toContain(password);
    expect(output).not.toContain('a=b');
  });

  it('when a URL carries a token in its query, then the request line shows it redacted', async () => {
    const secret = `secret${randomUUID().replaceAll('-', '')}`;
    const requestId = `req-${randomUUID()}`;
    await app.inject({
      url: `/api/auth/verify-email?token=${secret}&callbackURL=%2F`,
      headers: { 'x-request-id': requestId },
    });
    const line = logLines().find((entry) => entry.reqId === requestId && entry.msg === 'request');
    expect(line?.url).toBe('/api/auth/verify-email?token=[redacted]&callbackURL=%2F');
    expect(output).not.toContain(secret);
  });
});
