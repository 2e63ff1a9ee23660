import fastifyRateLimit, { normalizeIP } from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Redis } from 'ioredis';
import { Gauge } from 'prom-client';
import type { Config } from '../config.js';
import { ForbiddenError, HttpError, UnauthorizedError } from '../errors.js';
import { METRICS_ROUTE } from './metrics.js';
import { isCredentialPath } from './security-log.js';

/** Every limit counts requests in fixed one-minute windows. */
const WINDOW_MS = 60_000;

/** Probes of the orchestrator and load balancer: never limited, so no healthy instance is killed. */
const PROBE_ROUTES = new Set(['/health', '/ready']);

/** How long start-up waits for Redis before serving without it (failing open). */
const REDIS_STARTUP_WAIT_MS = 2_000;

export type RateLimitName = 'user' | 'ip' | 'auth';

interface LimitState {
  max: number;
  remaining: number;
  ttlInSeconds: number;
  isExceeded: boolean;
}

export class TooManyRequestsError extends HttpError {
  constructor(
    readonly limit: RateLimitName,
    state: Pick<LimitState, 'max' | 'ttlInSeconds'>,
  ) {
    const retryAfter = Math.max(1, state.ttlInSeconds);
    super(429, `Too many requests: retry in ${retryAfter} s`, {
      'retry-after': String(retryAfter),
      'x-ratelimit-limit': String(state.max),
      'x-ratelimit-remaining': '0',
      'x-ratelimit-reset': String(retryAfter),
    });
  }
}

/**
 * Options that keep a missing Redis from slowing requests down: with no offline queue a
 * command fails at once while disconnected, and a command to a Redis that stopped answering
 * gives up after a short timeout. ioredis keeps reconnecting in the background.
 */
async function createRedisClient(url: string): Promise<Redis> {
  // Loaded only when REDIS_URL is set: a single instance never needs it, and the module costs
  // about 2 MB of heap that would otherwise stay resident.
  const { Redis } = await import('ioredis');
  const redis = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: 1_000,
    commandTimeout: 250,
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
  });
  // ioredis emits an error on every failed reconnect; the limiter reports the outage once.
  redis.on('error', () => undefined);
  return redis;
}

/** Start-up waits until Redis is ready, refuses (then it fails open), or a short time passed. */
async function waitForRedis(redis: Redis): Promise<void> {
  if (redis.status === 'ready') return;
  await new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      redis.off('ready', done);
      redis.off('error', done);
      resolve();
    };
    const timer = setTimeout(done, REDIS_STARTUP_WAIT_MS);
    redis.once('ready', done);
    redis.once('error', done);
  });
}

function setLimitHeaders(reply: FastifyReply, state: LimitState): void {
  reply.header('x-ratelimit-limit', String(state.max));
  reply.header('x-ratelimit-remaining', String(state.remaining));
  reply.header('x-ratelimit-reset', String(state.ttlInSeconds));
}

/** Routes whose requests carry a credential we verify: the tasks API and a guarded /metrics. */
function checksCredentials(route: string | undefined): boolean {
  if (route === undefined) return false;
  if (route === METRICS_ROUTE) return true;
  return route.startsWith('/api/') && !route.startsWith('/api/auth/');
}

/**
 * Three limits, each a fixed one-minute window, kept in Redis when REDIS_URL is set (so all
 * instances share one budget) and in memory otherwise:
 *
 * - `user`: requests per token subject on the tasks API, counted once the token verified.
 * - `ip`: requests per client IP that no valid token vouches for. Requests to routes that
 *   need a token are counted only when refused (401, 403), and checked before the token is
 *   verified, so a flood of guessed tokens meets 429 rather than the verifier.
 * - `auth`: stricter, per IP, on /api/auth/sign-in/* and /api/auth/sign-up/*.
 *
 * If Redis fails, requests are served without limits (fail open) and the outage is logged
 * once; the first command that succeeds again logs the recovery.
 */
async function rateLimitPlugin(app: FastifyInstance, options: { config: Config }) {
  const { rateLimit, redisUrl } = options.config;
  const redis = redisUrl ? await createRedisClient(redisUrl) : undefined;
  if (redis) {
    app.addHook('onClose', async () => {
      redis.disconnect();
    });
    await waitForRedis(redis);
  }

  await app.register(fastifyRateLimit, {
    global: false,
    timeWindow: WINDOW_MS,
    nameSpace: rateLimit.namespace,
    // Errors reach us, so the outage is logged once and the request still served.
    skipOnError: false,
    ...(redis ? { redis } : {}),
  });

  let storeUp = true;
  new Gauge({
    name: 'rate_limit_store_up',
    help: '1 while the rate-limit store (Redis, or memory) answers; 0 while limits fail open',
    registers: [app.metrics.registry],
    collect() {
      this.set(storeUp ? 1 : 0);
    },
  });

  const ipKey = (request: FastifyRequest) => normalizeIP(request.ip);
  const limiters = {
    user: limiter(rateLimit.userPerMinute, (request) => `user:${request.user?.id ?? ''}`),
    ip: limiter(rateLimit.ipPerMinute, (request) => `ip:${ipKey(request)}`),
    auth: limiter(rateLimit.authPerMinute, (request) => `auth:${ipKey(request)}`),
  };

  function limiter(max: number, keyGenerator: (request: FastifyRequest) => string) {
    return max === 0
      ? undefined
      : app.createRateLimit({ max, timeWindow: WINDOW_MS, keyGenerator });
  }

  /** Counts (or only reads) one limit; undefined when it is off or the store failed. */
  async function check(
    name: RateLimitName,
    request: FastifyRequest,
    increment: boolean,
  ): Promise<LimitState | undefined> {
    const apply = limiters[name];
    if (apply === undefined) return undefined;
    try {
      const result = await apply(request, { increment });
      if (!storeUp) {
        storeUp = true;
        app.log.warn(
          { event: 'rate_limit_store', up: true },
          'rate-limit store is back: limits apply again',
        );
      }
      return result.isAllowed ? undefined : result;
    } catch (error) {
      if (storeUp) {
        storeUp = false;
        app.log.error(
          {
            event: 'rate_limit_store',
            up: false,
            error: error instanceof Error ? error.message : String(error),
          },
          'rate-limit store unavailable: serving without rate limits until it returns',
        );
      }
      return undefined;
    }
  }

  function reject(name: RateLimitName, state: LimitState): never {
    app.metrics.rateLimitRejections.inc({ limit: name });
    throw new TooManyRequestsError(name, state);
  }

  /** Requests already counted against their IP, so a refusal is not counted twice. */
  const countedByIp = new WeakSet<FastifyRequest>();

  app.addHook('onRequest', async (request, reply) => {
    const route = request.routeOptions.url;
    if (route !== undefined && PROBE_ROUTES.has(route)) return;

    if (checksCredentials(route)) {
      // Only refusals count here (in onError); a blocked IP is stopped before verification.
      const state = await check('ip', request, false);
      if (state && state.remaining === 0) reject('ip', state);
    } else {
      const state = await check('ip', request, true);
      countedByIp.add(request);
      if (state) {
        if (state.isExceeded) reject('ip', state);
        setLimitHeaders(reply, state);
      }
    }

    if (isCredentialPath(request.url)) {
      const state = await check('auth', request, true);
      if (state) {
        if (state.isExceeded) reject('auth', state);
        setLimitHeaders(reply, state);
      }
    }
  });

  // preParsing runs right after the routes' onRequest hooks, where the token is verified,
  // and before the body is read.
  app.addHook('preParsing', async (request, reply, payload) => {
    if (request.user === null) return payload;
    const state = await check('user', request, true);
    if (state) {
      if (state.isExceeded) reject('user', state);
      setLimitHeaders(reply, state);
    }
    return payload;
  });

  app.addHook('onError', async (request, _reply, error) => {
    const refused = error instanceof UnauthorizedError || error instanceof ForbiddenError;
    if (refused && !countedByIp.has(request)) {
      countedByIp.add(request);
      await check('ip', request, true);
    }
  });
}

export default fp(rateLimitPlugin, { name: 'rate-limit', dependencies: ['metrics'] });
