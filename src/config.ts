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

const positiveInt = (fallback: number, max: number) =>
  optionalString.pipe(
    z
      .string()
      .regex(/^\d+$/, 'must be a whole number')
      .transform(Number)
      .pipe(z.number().int().min(1).max(max, `must be at most ${max}`))
      .default(fallback),
  );

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
  PGLITE_DIR: optionalString.pipe(z.string().default('./.data/pglite')),
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
  LOG_LEVEL: optionalString.pipe(z.enum(LOG_LEVELS).default('info')),
  TRUST_PROXY: optionalString.pipe(z.enum(['true', 'false']).default('false')),
});

export type LogLevel = (typeof LOG_LEVELS)[number];

export interface Config {
  env: 'development' | 'production' | 'test';
  database: { kind: 'postgres'; url: string; poolMax: number } | { kind: 'pglite'; dir: string };
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
  logLevel: LogLevel;
  trustProxy: boolean;
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
      ? { kind: 'postgres', url: vars.DATABASE_URL, poolMax: vars.DATABASE_POOL_MAX }
      : { kind: 'pglite', dir: vars.PGLITE_DIR },
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
    logLevel: vars.LOG_LEVEL,
    trustProxy: vars.TRUST_PROXY === 'true',
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
