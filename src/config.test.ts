import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from './config.js';

const SECRET = 'config-test-secret-that-must-never-be-printed-0123456789';

const scratch = mkdtempSync(join(tmpdir(), 'todo-config-test-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

let fileCounter = 0;
/** A dev secret file path nobody else uses, in a folder that does not exist yet. */
function freshSecretFile(): string {
  fileCounter += 1;
  return join(scratch, `case-${fileCounter}`, 'dev-secret');
}

/** The ConfigError loadConfig throws for `env`; fails the test when it throws nothing else. */
function configErrorFor(env: Record<string, string>, devSecretFile = freshSecretFile()) {
  try {
    loadConfig(env, { devSecretFile });
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

describe('loadConfig defaults', () => {
  it('when nothing but the secret is set, then every documented default applies', () => {
    const config = loadConfig({ BETTER_AUTH_SECRET: SECRET }, { devSecretFile: freshSecretFile() });
    expect(config.port).toBe(8000);
    expect(config.host).toBe('127.0.0.1');
    expect(config.database).toEqual({
      kind: 'pglite',
      dir: './.data/pglite',
      sharedBuffers: '16MB',
    });
    expect(config.corsOrigins).toEqual(['http://localhost:3000']);
    expect(config.auth.baseUrl).toBe('http://localhost:8000');
    expect(config.logLevel).toBe('info');
  });

  it('when DATABASE_URL is set, then the database is PostgreSQL at that URL', () => {
    const url = 'postgres://todo:pw@db.example.com:5432/todo?sslmode=require';
    const config = loadConfig(
      { BETTER_AUTH_SECRET: SECRET, DATABASE_URL: url },
      { devSecretFile: freshSecretFile() },
    );
    expect(config.database).toMatchObject({
      kind: 'postgres',
      url,
      preparedStatements: true,
      connectTimeoutMs: 5_000,
    });
  });

  it('when DATABASE_CONNECT_TIMEOUT_MS is set, then the pool waits that long for a connection', () => {
    const config = loadConfig(
      {
        BETTER_AUTH_SECRET: SECRET,
        DATABASE_URL: 'postgres://todo@db.example.com/todo',
        DATABASE_CONNECT_TIMEOUT_MS: '15000',
      },
      { devSecretFile: freshSecretFile() },
    );
    expect(config.database).toMatchObject({ kind: 'postgres', connectTimeoutMs: 15_000 });
  });

  it('when DATABASE_PREPARED_STATEMENTS=false, then the create sends scripts only', () => {
    const config = loadConfig(
      {
        BETTER_AUTH_SECRET: SECRET,
        DATABASE_URL: 'postgres://todo@db.example.com/todo',
        DATABASE_PREPARED_STATEMENTS: 'false',
      },
      { devSecretFile: freshSecretFile() },
    );
    expect(config.database).toMatchObject({ kind: 'postgres', preparedStatements: false });
  });

  it('when variables are given, then they override the defaults', () => {
    const config = loadConfig(
      {
        BETTER_AUTH_SECRET: SECRET,
        PORT: '9123',
        HOST: '0.0.0.0',
        PGLITE_DIR: 'memory://',
        PGLITE_SHARED_BUFFERS: '64MB',
        CORS_ORIGINS: 'https://app.example.com, http://localhost:3001',
        BETTER_AUTH_URL: 'https://api.example.com/',
        LOG_LEVEL: 'warn',
      },
      { devSecretFile: freshSecretFile() },
    );
    expect(config.port).toBe(9123);
    expect(config.host).toBe('0.0.0.0');
    expect(config.database).toEqual({ kind: 'pglite', dir: 'memory://', sharedBuffers: '64MB' });
    expect(config.corsOrigins).toEqual(['https://app.example.com', 'http://localhost:3001']);
    expect(config.auth.baseUrl).toBe('https://api.example.com');
    expect(config.logLevel).toBe('warn');
  });
});

describe('loadConfig bad values', () => {
  const cases = [
    ['PORT', 'abc'],
    ['PORT', '70000'],
    ['DATABASE_URL', 'mysql://x'],
    ['AUTH_JWKS_URL', 'not-a-url'],
    ['LOG_LEVEL', 'loud'],
    ['CORS_ORIGINS', 'not an origin'],
    ['DATABASE_PREPARED_STATEMENTS', 'yes'],
    ['DATABASE_CONNECT_TIMEOUT_MS', '0'],
    ['DATABASE_CONNECT_TIMEOUT_MS', '5s'],
    ['PGLITE_SHARED_BUFFERS', '16'],
    ['PGLITE_SHARED_BUFFERS', '16MB -c fsync=off'],
  ].map(([variable = '', value = '']) => ({ variable, value, env: { [variable]: value } }));

  it.each(cases)(
    'when $variable=$value, then a one-line ConfigError names $variable',
    ({ variable, env }) => {
      const error = configErrorFor({ BETTER_AUTH_SECRET: SECRET, ...env });
      expect(error.message).toContain(variable);
      expect(error.message.trim()).not.toBe('');
      expect(error.message).not.toMatch(/[\r\n]/);
    },
  );

  it.each(cases)(
    'when $variable=$value, then the error message does not contain the secret',
    ({ env }) => {
      const error = configErrorFor({ BETTER_AUTH_SECRET: SECRET, ...env });
      expect(error.message).not.toContain(SECRET);
    },
  );

  it('when DATABASE_URL is not PostgreSQL, then its password is not echoed', () => {
    const error = configErrorFor({
      BETTER_AUTH_SECRET: SECRET,
      DATABASE_URL: 'mysql://todo:hunter2-db-password@db.example.com/todo',
    });
    expect(error.message).toContain('DATABASE_URL');
    expect(error.message).not.toContain('hunter2-db-password');
  });

  it('when NODE_ENV=production has no BETTER_AUTH_SECRET, then a one-line ConfigError names it', () => {
    const error = configErrorFor({ NODE_ENV: 'production' });
    expect(error.message).toContain('BETTER_AUTH_SECRET');
    expect(error.message).not.toMatch(/[\r\n]/);
  });

  it('when NODE_ENV=production has no BETTER_AUTH_SECRET, then no development secret is written', () => {
    const devSecretFile = freshSecretFile();
    configErrorFor({ NODE_ENV: 'production' }, devSecretFile);
    expect(existsSync(devSecretFile)).toBe(false);
  });

  it('when the development secret cannot be stored, then a one-line ConfigError names BETTER_AUTH_SECRET', () => {
    const blocker = join(scratch, 'a-file-not-a-folder');
    writeFileSync(blocker, 'x');
    const error = configErrorFor({}, join(blocker, 'dev-secret'));
    expect(error.message).toContain('BETTER_AUTH_SECRET');
    expect(error.message).not.toMatch(/[\r\n]/);
  });
});

describe('loadConfig secret', () => {
  it('when BETTER_AUTH_SECRET is set, then it is used with source "env" and nothing is written', () => {
    const devSecretFile = freshSecretFile();
    const config = loadConfig({ BETTER_AUTH_SECRET: SECRET }, { devSecretFile });
    expect(config.auth.secret).toBe(SECRET);
    expect(config.auth.secretSource).toBe('env');
    expect(existsSync(devSecretFile)).toBe(false);
  });

  it('when BETTER_AUTH_SECRET is unset outside production, then a secret is generated into the dev secret file', () => {
    const devSecretFile = freshSecretFile();
    const config = loadConfig({ NODE_ENV: 'development' }, { devSecretFile });
    expect(config.auth.secretSource).toBe('generated');
    expect(config.auth.secret.length).toBeGreaterThanOrEqual(32);
    expect(readFileSync(devSecretFile, 'utf8').trim()).toBe(config.auth.secret);
  });

  it('when a secret is generated, then its file is readable by the owner only (0600)', () => {
    const devSecretFile = freshSecretFile();
    loadConfig({}, { devSecretFile });
    expect(statSync(devSecretFile).mode & 0o777).toBe(0o600);
  });

  it('when the process starts again without BETTER_AUTH_SECRET, then the same generated secret is read back', () => {
    const devSecretFile = freshSecretFile();
    const first = loadConfig({}, { devSecretFile });
    const second = loadConfig({}, { devSecretFile });
    expect(second.auth.secretSource).toBe('generated');
    expect(second.auth.secret).toBe(first.auth.secret);
  });

  it('when two dev secret files are used, then each gets its own random secret', () => {
    const first = loadConfig({}, { devSecretFile: freshSecretFile() });
    const second = loadConfig({}, { devSecretFile: freshSecretFile() });
    expect(second.auth.secret).not.toBe(first.auth.secret);
  });
});

describe('loadConfig WEB_CONCURRENCY', () => {
  const postgresAndRedis = {
    BETTER_AUTH_SECRET: SECRET,
    DATABASE_URL: 'postgres://todo@db.example.com:5432/todo',
    REDIS_URL: 'redis://redis.example.com:6379',
  };

  it('when WEB_CONCURRENCY is unset, then one process serves (no workers)', () => {
    const config = loadConfig({ BETTER_AUTH_SECRET: SECRET }, { devSecretFile: freshSecretFile() });
    expect(config.workers).toBe(1);
  });

  it('when WEB_CONCURRENCY=4 with DATABASE_URL and REDIS_URL, then four workers are configured', () => {
    const config = loadConfig(
      { ...postgresAndRedis, WEB_CONCURRENCY: '4' },
      { devSecretFile: freshSecretFile() },
    );
    expect(config.workers).toBe(4);
  });

  it('when WEB_CONCURRENCY=1 on PGlite without Redis, then it is accepted', () => {
    const config = loadConfig(
      { BETTER_AUTH_SECRET: SECRET, WEB_CONCURRENCY: '1' },
      { devSecretFile: freshSecretFile() },
    );
    expect(config.workers).toBe(1);
  });

  it.each(['0', '65', '2.5', 'two', '-1'])(
    'when WEB_CONCURRENCY=%s, then a one-line ConfigError names WEB_CONCURRENCY',
    (value) => {
      const error = configErrorFor({ ...postgresAndRedis, WEB_CONCURRENCY: value });
      expect(error.message).toMatch(/^Invalid WEB_CONCURRENCY: /);
      expect(error.message).not.toMatch(/[\r\n]/);
    },
  );

  it('when WEB_CONCURRENCY=2 without DATABASE_URL, then a one-line ConfigError says PGlite allows one process', () => {
    const error = configErrorFor({
      BETTER_AUTH_SECRET: SECRET,
      REDIS_URL: 'redis://redis.example.com:6379',
      WEB_CONCURRENCY: '2',
    });
    expect(error.message).toMatch(/^Invalid WEB_CONCURRENCY: .*DATABASE_URL/);
    expect(error.message).toContain('PGlite');
    expect(error.message).not.toMatch(/[\r\n]/);
  });

  it('when WEB_CONCURRENCY=2 without REDIS_URL, then a one-line ConfigError says to set REDIS_URL', () => {
    const error = configErrorFor({
      BETTER_AUTH_SECRET: SECRET,
      DATABASE_URL: 'postgres://todo@db.example.com:5432/todo',
      WEB_CONCURRENCY: '2',
    });
    expect(error.message).toMatch(/^Invalid WEB_CONCURRENCY: /);
    expect(error.message).toContain('set REDIS_URL');
    expect(error.message).not.toMatch(/[\r\n]/);
  });

  it('when WEB_CONCURRENCY is refused, then the message does not echo the database password', () => {
    const error = configErrorFor({
      BETTER_AUTH_SECRET: SECRET,
      DATABASE_URL: 'postgres://todo:hunter2-db-password@db.example.com/todo',
      WEB_CONCURRENCY: '3',
    });
    expect(error.message).not.toContain('hunter2-db-password');
  });
});
