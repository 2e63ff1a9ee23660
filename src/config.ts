import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';

/** Raised for any bad environment; its message is the one line start-up prints. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

const optionalString = z
  .string()
  .optional()
  .transform((value) => (value === undefined || value.trim() === '' ? undefined : value.trim()));

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http(s) URL' });

const optionalHttpUrl = optionalString.pipe(httpUrl.optional());

const port = z
  .string()
  .regex(/^\d+$/, 'must be a whole number')
  .transform(Number)
  .pipe(z.number().int().min(0).max(65535, 'must be at most 65535'));

/**
 * A whole number from `min` to `max`, `fallback` when unset. With `min` 0, zero turns the
 * feature off, and the error says so.
 */
const wholeNumber = (min: 0 | 1, fallback: number, max: number) =>
  optionalString.pipe(
    z
      .string()
      .regex(/^\d+$/, min === 0 ? 'must be a whole number (0 disables)' : 'must be a whole number')
      .transform(Number)
      .pipe(z.number().int().min(min).max(max, `must be at most ${max}`))
      .default(fallback),
  );

const positiveInt = (fallback: number, max: number) => wholeNumber(1, fallback, max);
const nonNegativeInt = (fallback: number, max: number) => wholeNumber(0, fallback, max);

/**
 * PGlite's page cache. PGlite writes every page of it when it starts, so all of it is resident
 * from the first request: at PostgreSQL's own 128MB the service on PGlite peaked at 481–505 MB
 * RSS under load. Pages beyond it are read from PGLITE_DIR through the operating system's cache.
 */
export const PGLITE_SHARED_BUFFERS_DEFAULT = '16MB';

/**
 * How long a request waits for a database connection, opened or freed, before its 503: short
 * enough that an unreachable database is a quick answer, long enough for a Neon compute that
 * was scaled to zero to wake (usually well under a second).
 */
export const DATABASE_CONNECT_TIMEOUT_MS_DEFAULT = 5_000;

/** WEB_CONCURRENCY's ceiling: far more processes than cores only adds contention. */
const MAX_WORKERS = 64;

const envSchema = z.object({
  NODE_ENV: optionalString.pipe(
    z.enum(['development', 'production', 'test']).default('development'),
  ),
  DATABASE_URL: optionalString.pipe(
    z
      .string()
      .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// or postgresql:// connection string')
      .optional(),
  ),
  DATABASE_POOL_MAX: positiveInt(10, 1000),
  DATABASE_CONNECT_TIMEOUT_MS: positiveInt(DATABASE_CONNECT_TIMEOUT_MS_DEFAULT, 600_000),
  DATABASE_PREPARED_STATEMENTS: optionalString.pipe(z.enum(['true', 'false']).default('true')),
  PGLITE_DIR: optionalString.pipe(z.string().default('./.data/pglite')),
  PGLITE_SHARED_BUFFERS: optionalString.pipe(
    z
      .string()
      .regex(/^[1-9]\d*(kB|MB|GB)$/, 'must be a size in kB, MB or GB, such as 16MB')
      .default(PGLITE_SHARED_BUFFERS_DEFAULT),
  ),
  BETTER_AUTH_SECRET: optionalString,
  BETTER_AUTH_URL: optionalString.pipe(httpUrl.default('http://localhost:8000')),
  AUTH_JWKS_URL: optionalHttpUrl,
  AUTH_ISSUER: optionalString,
  AUTH_AUDIENCE: optionalString,
  CORS_ORIGINS: optionalString.pipe(z.string().default('http://localhost:3000')),
  PORT: optionalString.pipe(port.default(8000)),
  HOST: optionalString.pipe(z.string().default('127.0.0.1')),
  REDIS_URL: optionalString.pipe(
    z
      .string()
      .regex(/^rediss?:\/\//, 'must be a redis:// or rediss:// URL')
      .optional(),
  ),
  RATE_LIMIT_USER_PER_MINUTE: nonNegativeInt(1200, 1_000_000),
  RATE_LIMIT_IP_PER_MINUTE: nonNegativeInt(600, 1_000_000),
  RATE_LIMIT_AUTH_PER_MINUTE: nonNegativeInt(20, 1_000_000),
  RATE_LIMIT_NAMESPACE: optionalString.pipe(
    z
      .string()
      .regex(/^[A-Za-z0-9:._-]{1,100}$/, 'must be 1-100 letters, digits or : . _ -')
      .default('todo-api:rate-limit:'),
  ),
  METRICS_TOKEN: optionalString.pipe(
    z.string().min(16, 'must be at least 16 characters').optional(),
  ),
  LOG_LEVEL: optionalString.pipe(z.enum(LOG_LEVELS).default('info')),
  TRUST_PROXY: optionalString.pipe(z.enum(['true', 'false']).default('false')),
  REQUEST_TIMEOUT_MS: positiveInt(30_000, 3_600_000),
  KEEP_ALIVE_TIMEOUT_MS: positiveInt(5_000, 3_600_000),
  HTTP_MAX_ACTIVE_REQUESTS: nonNegativeInt(64, 1_000_000),
  WEB_CONCURRENCY: positiveInt(1, MAX_WORKERS),
});

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  env: 'development' | 'production' | 'test';
  database:
    | {
        kind: 'postgres';
        url: string;
        poolMax: number;
        /** The pool's wait for a connection, opened or freed (DATABASE_CONNECT_TIMEOUT_MS). */
        connectTimeoutMs?: number;
        /**
         * Named prepared statements for the create (DatabaseHandle.runPrepared); unset: on.
         * Off behind a pooler that cannot keep them (PgBouncer before 1.21, or with
         * max_prepared_statements = 0); the service also turns them off by itself there.
         */
        preparedStatements?: boolean;
      }
    | {
        kind: 'pglite';
        dir: string;
        /** PostgreSQL's `shared_buffers` inside PGlite; unset: PGLITE_SHARED_BUFFERS_DEFAULT. */
        sharedBuffers?: string;
      };
  auth: {
    secret: string;
    /** Where the secret came from: a generated one is only fit for development. */
    secretSource: 'env' | 'generated';
    baseUrl: string;
    jwksUrl: string | undefined;
    issuer: string | undefined;
    audience: string | undefined;
  };
  corsOrigins: string[];
  host: string;
  port: number;
  redisUrl: string | undefined;
  /** Requests per minute; 0 turns that limit off. */
  rateLimit: {
    /** Per token subject, on the tasks API. */
    userPerMinute: number;
    /** Per client IP, for every request not authenticated by a valid token. */
    ipPerMinute: number;
    /** Per client IP, on /api/auth/sign-in/* and /api/auth/sign-up/*. */
    authPerMinute: number;
    /** Prefix of the Redis keys, so several deployments (or tests) can share one Redis. */
    namespace: string;
  };
  metrics: {
    /** When set, /metrics needs `Authorization: Bearer <token>`; unset, loopback only. */
    token: string | undefined;
  };
  logLevel: LogLevel;
  trustProxy: boolean;
  /** How long a slow client may hold a connection (SPEC §7: it must not hold one forever). */
  http: {
    /** Headers and body must arrive within this; otherwise 408 and the connection closes. */
    requestTimeoutMs: number;
    /** An idle keep-alive connection is closed after this. */
    keepAliveTimeoutMs: number;
    /**
     * Requests handled at once before a keep-alive connection's next request is left unread
     * until one finishes (src/plugins/active-requests.ts); 0: no limit.
     */
    maxActiveRequests: number;
  };
  /**
   * WEB_CONCURRENCY: server processes on the one PORT. 1 is the plain process; more makes it
   * a node:cluster primary that forks this many workers (src/cluster.ts).
   */
  workers: number;
}

export interface LoadConfigOptions {
  /** Where a generated development secret is kept so that tokens survive restarts. */
  devSecretFile?: string;
}

const DEFAULT_DEV_SECRET_FILE = './.data/dev-secret';

/**
 * Parses the environment once. Every problem becomes a ConfigError whose message names
 * the variable, so start-up can print one line instead of a stack trace.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  options: LoadConfigOptions = {},
): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const variable = issue?.path.join('.') ?? 'environment';
    throw new ConfigError(`Invalid ${variable}: ${issue?.message ?? 'invalid value'}`);
  }
  const vars = parsed.data;

  const corsOrigins = vars.CORS_ORIGINS.split(',')
    .map((origin) => origin.trim().replace(/\/+$/, ''))
    .filter((origin) => origin !== '');
  for (const origin of corsOrigins) {
    if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
      throw new ConfigError(
        `Invalid CORS_ORIGINS: "${origin}" is not an origin like https://app.example.com`,
      );
    }
  }

  if (vars.WEB_CONCURRENCY > 1 && vars.DATABASE_URL === undefined) {
    throw new ConfigError(
      `Invalid WEB_CONCURRENCY: ${vars.WEB_CONCURRENCY} workers need DATABASE_URL (the embedded PGlite database can be opened by one process only); set WEB_CONCURRENCY=1 or use PostgreSQL`,
    );
  }
  if (vars.WEB_CONCURRENCY > 1 && vars.REDIS_URL === undefined) {
    throw new ConfigError(
      `Invalid WEB_CONCURRENCY: ${vars.WEB_CONCURRENCY} workers need REDIS_URL (in memory each worker would count its own rate limits, allowing ${vars.WEB_CONCURRENCY} times too many); set REDIS_URL or WEB_CONCURRENCY=1`,
    );
  }

  let secret = vars.BETTER_AUTH_SECRET;
  let secretSource: Config['auth']['secretSource'] = 'env';
  if (secret === undefined) {
    if (vars.NODE_ENV === 'production') {
      throw new ConfigError('Missing BETTER_AUTH_SECRET: it is required when NODE_ENV=production');
    }
    secret = readOrCreateDevSecret(options.devSecretFile ?? DEFAULT_DEV_SECRET_FILE);
    secretSource = 'generated';
  }

  return {
    env: vars.NODE_ENV,
    database: vars.DATABASE_URL
      ? {
          kind: 'postgres',
          url: vars.DATABASE_URL,
          poolMax: vars.DATABASE_POOL_MAX,
          connectTimeoutMs: vars.DATABASE_CONNECT_TIMEOUT_MS,
          preparedStatements: vars.DATABASE_PREPARED_STATEMENTS === 'true',
        }
      : { kind: 'pglite', dir: vars.PGLITE_DIR, sharedBuffers: vars.PGLITE_SHARED_BUFFERS },
    auth: {
      secret,
      secretSource,
      baseUrl: vars.BETTER_AUTH_URL.replace(/\/+$/, ''),
      jwksUrl: vars.AUTH_JWKS_URL,
      issuer: vars.AUTH_ISSUER,
      audience: vars.AUTH_AUDIENCE,
    },
    corsOrigins,
    host: vars.HOST,
    port: vars.PORT,
    redisUrl: vars.REDIS_URL,
    rateLimit: {
      userPerMinute: vars.RATE_LIMIT_USER_PER_MINUTE,
      ipPerMinute: vars.RATE_LIMIT_IP_PER_MINUTE,
      authPerMinute: vars.RATE_LIMIT_AUTH_PER_MINUTE,
      namespace: vars.RATE_LIMIT_NAMESPACE,
    },
    metrics: { token: vars.METRICS_TOKEN },
    logLevel: vars.LOG_LEVEL,
    trustProxy: vars.TRUST_PROXY === 'true',
    http: {
      requestTimeoutMs: vars.REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: vars.KEEP_ALIVE_TIMEOUT_MS,
      maxActiveRequests: vars.HTTP_MAX_ACTIVE_REQUESTS,
    },
    workers: vars.WEB_CONCURRENCY,
  };
}

function readOrCreateDevSecret(file: string): string {
  try {
    if (existsSync(file)) {
      const stored = readFileSync(file, 'utf8').trim();
      if (stored !== '') return stored;
    }
    const generated = randomBytes(32).toString('base64url');
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, `${generated}\n`, { mode: 0o600 });
    return generated;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new ConfigError(
      `Missing BETTER_AUTH_SECRET: could not keep a generated one in ${file} (${reason})`,
    );
  }
}
