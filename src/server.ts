import cluster from 'node:cluster';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { buildApp } from './app.js';
import { runPrimary } from './cluster.js';
import { type Config, ConfigError, loadConfig } from './config.js';
import { isDatabaseUnavailable } from './db/errors.js';

const SHUTDOWN_GRACE_MS = 10_000;

/** One line on stderr and exit 1: bad start-up never shows a stack trace. */
function fail(message: string): never {
  process.stderr.write(`todo-api: ${message}\n`);
  process.exit(1);
}

function loadEnvFile() {
  try {
    process.loadEnvFile('.env');
  } catch (error) {
    const code = typeof error === 'object' && error !== null && 'code' in error ? error.code : '';
    if (code !== 'ENOENT') fail(`cannot read .env: ${String(error)}`);
  }
}

function describeStartupError(error: unknown, config: Config): string {
  const code = typeof error === 'object' && error !== null && 'code' in error ? error.code : '';
  if (code === 'EADDRINUSE')
    return `port ${config.port} on ${config.host} is already in use (PORT)`;
  if (code === 'EACCES')
    return `not allowed to listen on ${config.host}:${config.port} (PORT/HOST)`;
  if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND')
    return `cannot listen on HOST=${config.host}`;
  if (isDatabaseUnavailable(error) || config.database.kind === 'postgres') {
    const reason = error instanceof Error ? error.message : String(error);
    return `cannot start on the database (DATABASE_URL): ${reason}`;
  }
  return `start-up failed: ${error instanceof Error ? error.message : String(error)}`;
}

function shutDownOnSignals(app: FastifyInstance) {
  let closing = false;
  const shutdown = (signal: NodeJS.Signals) => {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down: no new connections, finishing in-flight requests');
    const forced = setTimeout(() => {
      app.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_GRACE_MS);
    forced.unref();
    app.close().then(
      () => {
        app.log.info('shut down cleanly');
        process.exit(0);
      },
      (error: unknown) => {
        app.log.error({ err: error }, 'error while shutting down');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

async function main() {
  loadEnvFile();
  let config: Config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) fail(error.message);
    throw error;
  }

  if (config.workers > 1 && cluster.isPrimary) {
    startPrimary(config);
    return;
  }
  await serve(config, cluster.isWorker);
}

const GENERATED_SECRET_WARNING =
  '!!! BETTER_AUTH_SECRET is not set: using a generated development secret kept in .data/dev-secret. Set BETTER_AUTH_SECRET before deploying. !!!';

function readyMessage(config: Config): string {
  const where =
    config.database.kind === 'pglite' ? `PGlite in ${config.database.dir}` : 'PostgreSQL';
  const workers = config.workers > 1 ? `${config.workers} workers; ` : '';
  return `Todo API ready on http://${config.host}:${config.port} (${workers}database: ${where}; docs at /docs)`;
}

/** WEB_CONCURRENCY > 1: this process only supervises the workers (src/cluster.ts). */
function startPrimary(config: Config) {
  const logger = pino({ level: config.logLevel });
  if (config.auth.secretSource === 'generated') logger.warn(GENERATED_SECRET_WARNING);
  runPrimary({ workers: config.workers, logger, readyMessage: readyMessage(config) });
}

/** The server itself: the whole process, or one worker of a cluster (then the primary says "ready"). */
async function serve(config: Config, isWorker: boolean) {
  let app: FastifyInstance;
  try {
    // Workers share the primary's stdout: a line must reach it in one write(2) (atomic on a
    // pipe up to 4 KiB), so they log synchronously; asynchronous writes batch lines and a
    // batch from one worker could interleave with another's.
    const logStream = isWorker ? pino.destination({ dest: 1, sync: true }) : undefined;
    app = await buildApp(config, logStream ? { logStream } : {});
  } catch (error) {
    fail(describeStartupError(error, config));
  }
  if (config.auth.secretSource === 'generated' && !isWorker) app.log.warn(GENERATED_SECRET_WARNING);
  shutDownOnSignals(app);
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (error) {
    await app.close().catch(() => undefined);
    fail(describeStartupError(error, config));
  }
  if (isWorker) app.log.info({ worker: cluster.worker?.id }, 'worker ready');
  else app.log.info(readyMessage(config));
}

main().catch((error: unknown) => {
  fail(error instanceof Error ? error.message : String(error));
});
