import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import pg from 'pg';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { Config } from '../config.js';
import { NotFoundError, UnauthorizedError } from '../errors.js';
import { isCredentialPath } from './security-log.js';

export const METRICS_ROUTE = '/metrics';

/** Route label of requests no route matched: raw URLs would make the label set unbounded. */
export const UNMATCHED_ROUTE = 'unmatched';

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Headers a reverse proxy adds: a request carrying one did not come from this host. */
const FORWARDING_HEADERS = ['x-forwarded-for', 'forwarded', 'x-real-ip'];

export interface AppMetrics {
  /** This app's own registry: nothing is kept in prom-client's global one. */
  registry: Registry;
  authFailures: Counter<'reason'>;
  rateLimitRejections: Counter<'limit'>;
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: AppMetrics;
  }
}

interface PoolStats {
  total: number;
  idle: number;
  waiting: number;
  max: number;
}

/**
 * node-postgres reports its pool; PGlite is one in-process connection that queues queries
 * internally, so it reports 1 connection, idle, nobody waiting (0 once closed).
 */
function poolStats(app: FastifyInstance): PoolStats | undefined {
  if (!app.hasDecorator('database')) return undefined;
  const client: unknown = Reflect.get(app.db, '$client');
  if (client instanceof pg.Pool) {
    return {
      total: client.totalCount,
      idle: client.idleCount,
      waiting: client.waitingCount,
      max: client.options.max ?? 10,
    };
  }
  if (app.database.kind === 'pglite') {
    const closed = typeof client === 'object' && client !== null && Reflect.get(client, 'closed');
    const open = closed === true ? 0 : 1;
    return { total: open, idle: open, waiting: 0, max: 1 };
  }
  return undefined;
}

function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function sameSecret(given: string, expected: string): boolean {
  const digest = (value: string) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * With METRICS_TOKEN set, /metrics needs `Authorization: Bearer <METRICS_TOKEN>` (401
 * otherwise). Without it, /metrics is served only to a client on this host that came
 * straight, not through a proxy (no forwarding header); anyone else gets 404.
 */
function authorizeScrape(request: FastifyRequest, token: string | undefined): void {
  if (token !== undefined) {
    const match = /^Bearer +(\S+) *$/i.exec(request.headers.authorization ?? '');
    const given = match?.[1];
    if (given === undefined || !sameSecret(given, token)) {
      throw new UnauthorizedError(
        'Not authenticated: /metrics needs the METRICS_TOKEN bearer token',
        'metrics_token',
      );
    }
    return;
  }
  const forwarded = FORWARDING_HEADERS.some((name) => request.headers[name] !== undefined);
  if (forwarded || !isLoopback(request.socket.remoteAddress)) throw new NotFoundError();
}

/**
 * Prometheus metrics at /metrics, in a registry of this app's own (tests build many apps):
 * requests and their latency by method, route pattern and status; the database pool;
 * authentication failures by reason; rate-limit rejections by limit; Node's process metrics.
 */
async function metricsPlugin(app: FastifyInstance, options: { metrics: Config['metrics'] }) {
  const registry = new Registry();
  const registers = [registry];
  collectDefaultMetrics({ register: registry });

  const labelNames = ['method', 'route', 'status'] as const;
  const requests = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames,
    registers,
  });
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'Time to answer an HTTP request, by method, route pattern and status',
    labelNames,
    buckets: DURATION_BUCKETS,
    registers,
  });
  const authFailures = new Counter({
    name: 'auth_failures_total',
    help: 'Requests refused with 401, by reason (missing, malformed, expired, signature, ...)',
    labelNames: ['reason'] as const,
    registers,
  });
  const rateLimitRejections = new Counter({
    name: 'rate_limit_rejections_total',
    help: 'Requests refused with 429, by limit (user, ip, auth)',
    labelNames: ['limit'] as const,
    registers,
  });

  const poolGauge = (name: string, help: string, pick: (stats: PoolStats) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        const stats = poolStats(app);
        if (stats) this.set(pick(stats));
      },
    });
  poolGauge('db_pool_total_connections', 'Open database connections', (s) => s.total);
  poolGauge('db_pool_idle_connections', 'Open database connections not in use', (s) => s.idle);
  poolGauge('db_pool_waiting_clients', 'Queries waiting for a free connection', (s) => s.waiting);
  poolGauge('db_pool_max_connections', 'Size limit of the connection pool', (s) => s.max);

  app.decorate('metrics', { registry, authFailures, rateLimitRejections });

  app.addHook('onResponse', async (request, reply) => {
    const labels = {
      method: request.method,
      route: request.routeOptions.url ?? UNMATCHED_ROUTE,
      status: String(reply.statusCode),
    };
    requests.inc(labels);
    duration.observe(labels, reply.elapsedTime / 1000);
    // Better Auth answers failed sign-ins itself, without an UnauthorizedError.
    if (reply.statusCode === 401 && isCredentialPath(request.url)) {
      authFailures.inc({ reason: 'credentials' });
    }
  });
  app.addHook('onError', async (_request, _reply, error) => {
    if (error instanceof UnauthorizedError) authFailures.inc({ reason: error.reason });
  });

  app.get(METRICS_ROUTE, { schema: { hide: true } }, async (request, reply) => {
    authorizeScrape(request, options.metrics.token);
    reply.header('content-type', registry.contentType).header('cache-control', 'no-store');
    return registry.metrics();
  });
}

export default fp(metricsPlugin, { name: 'metrics' });
