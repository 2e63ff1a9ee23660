import { randomUUID } from 'node:crypto';
import cors from '@fastify/cors';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { pino } from 'pino';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import authPlugin from './auth/auth.plugin.js';
import { createBetterAuth } from './auth/better-auth.js';
import betterAuthRoutes from './auth/better-auth.routes.js';
import type { Config } from './config.js';
import { createDatabase, type DatabaseHandle } from './db/client.js';
import databasePlugin from './db/database.plugin.js';
import { createPgliteClusterIfMissing } from './db/pglite-cluster.js';
import { limitActiveRequests } from './plugins/active-requests.js';
import docsPlugin from './plugins/docs.js';
import errorHandler, { answerClientError, answerFrameworkError } from './plugins/error-handler.js';
import healthRoutes from './plugins/health.routes.js';
import { serializeError } from './plugins/log-serializers.js';
import metricsPlugin from './plugins/metrics.js';
import rateLimitPlugin from './plugins/rate-limit.js';
import securityHeadersPlugin from './plugins/security-headers.js';
import securityLogPlugin, { loggableUrl } from './plugins/security-log.js';
import webPlugin from './plugins/web.js';
import type { TasksRepositoryOptions } from './tasks/tasks.repository.js';
import tasksRoutes from './tasks/tasks.routes.js';

/** SPEC §6: bodies over 16 KiB are refused with 413. */
export const BODY_LIMIT_BYTES = 16 * 1024;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface AppDependencies {
  /** A database shared by several apps (tests); the app then neither migrates nor closes it. */
  database?: DatabaseHandle;
  /** Where log lines go instead of stdout (tests read them). */
  logStream?: { write(line: string): void };
  /** TESTS ONLY: e.g. `{ unsafeOmitOwnerFilter: true }` to test row-level security alone. */
  tasksRepository?: TasksRepositoryOptions;
}

export async function buildApp(
  config: Config,
  dependencies: AppDependencies = {},
): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: config.logLevel,
      redact: {
        paths: ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'],
        censor: '[redacted]',
      },
      serializers: { err: serializeError },
      // Asynchronous writes to stdout: a line written while the previous write is still in
      // flight joins it, instead of one blocking write(2) per line (3 % of the service's
      // CPU under load was that syscall). pino flushes what is pending when the process
      // exits, so shutdown and crash lines are not lost.
      stream: dependencies.logStream ?? pino.destination({ dest: 1, sync: false }),
    },
    bodyLimit: BODY_LIMIT_BYTES,
    // Start-up migrates the database inside a plugin: PGlite on a busy machine, or a cold
    // serverless PostgreSQL, can take longer than Fastify's default of 10 s per plugin.
    pluginTimeout: 120_000,
    trustProxy: config.trustProxy,
    // One log line per request is written in onResponse, with the user and the route.
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: (request) => {
      const incoming = request.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 512 },
    // A slow client must not hold a connection forever: the whole request (headers included)
    // must arrive within REQUEST_TIMEOUT_MS (else 408 and close), a silent socket is closed
    // after twice that, and an idle keep-alive connection after KEEP_ALIVE_TIMEOUT_MS.
    requestTimeout: config.http.requestTimeoutMs,
    connectionTimeout: 2 * config.http.requestTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    http: {
      requestTimeout: config.http.requestTimeoutMs,
      headersTimeout: config.http.requestTimeoutMs,
      // Node enforces the two timeouts above only when it checks (every 30 s by default),
      // which would let a slow client linger up to 30 s past them.
      connectionsCheckingInterval: Math.min(
        30_000,
        Math.max(100, Math.floor(config.http.requestTimeoutMs / 4)),
      ),
    },
    // Refusals before any route (malformed HTTP, timeouts, bad URLs) in the {"detail"} shape.
    clientErrorHandler: answerClientError,
    frameworkErrors: answerFrameworkError,
  });

  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);

  // An empty body with Content-Type: application/json is "no body" (PATCH .../complete sends
  // that), not a parse error; anything else goes through Fastify's hardened JSON parser.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  // JSON is the only body this API reads: any other media type is 415, not a 422 about
  // a string where an object was expected.
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    return parseJson(request, text, done);
  });

  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  // Once shutdown begins, every response closes its connection: a keep-alive client would
  // otherwise hold the server open for KEEP_ALIVE_TIMEOUT_MS after its last in-flight request
  // (Node closes only the connections idle at the moment the server stops listening).
  let closing = false;
  const activeRequests =
    config.http.maxActiveRequests > 0
      ? limitActiveRequests(app.server, config.http.maxActiveRequests)
      : undefined;
  app.addHook('preClose', async () => {
    closing = true;
    await activeRequests?.releaseAll();
  });
  app.addHook('onSend', async (_request, reply, payload) => {
    if (closing) reply.header('connection', 'close');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      {
        method: request.method,
        route: request.routeOptions.url ?? null,
        url: loggableUrl(request.url),
        status: reply.statusCode,
        userId: request.user?.id ?? null,
        ip: request.ip,
        durationMs: Math.round(reply.elapsedTime * 100) / 100,
      },
      'request',
    );
  });

  await app.register(errorHandler);
  await app.register(securityHeadersPlugin);
  const allowAnyOrigin = config.corsOrigins.includes('*');
  await app.register(cors, {
    // Resolving to false (instead of listing origins) sends no CORS header at all to
    // other origins, and leaves their preflights unanswered (404).
    origin: (origin, callback) => {
      const allowed =
        origin !== undefined && (allowAnyOrigin || config.corsOrigins.includes(origin));
      callback(null, allowed ? origin : false);
    },
    credentials: true,
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['Authorization', 'Content-Type', 'X-Request-Id', 'Idempotency-Key'],
    exposedHeaders: [
      'Location',
      'X-Total-Count',
      'X-Request-Id',
      'Retry-After',
      'Idempotent-Replayed',
      'X-RateLimit-Limit',
      'X-RateLimit-Remaining',
      'X-RateLimit-Reset',
    ],
    maxAge: 600,
    // Strict mode answers an OPTIONS without Access-Control-Request-Method with a text/plain
    // 400, outside the {"detail"} error shape; lenient, it is answered like a preflight.
    strictPreflight: false,
  });
  // After the security headers and CORS (a 429 carries them), before every route (their hooks
  // must reach all of them and the 404 handler).
  await app.register(metricsPlugin, { metrics: config.metrics });
  await app.register(rateLimitPlugin, { config });
  await app.register(securityLogPlugin);
  await app.register(docsPlugin);

  const ownsDatabase = dependencies.database === undefined;
  if (ownsDatabase && config.database.kind === 'pglite') {
    const started = performance.now();
    if (await createPgliteClusterIfMissing(config.database.dir)) {
      app.log.info(
        { dir: config.database.dir, durationMs: Math.round(performance.now() - started) },
        'created a new PGlite database',
      );
    }
  }
  const database =
    dependencies.database ??
    createDatabase(config.database, (error) =>
      app.log.error({ err: error }, 'database pool error'),
    );
  await app.register(databasePlugin, {
    handle: database,
    owned: ownsDatabase,
    migrate: ownsDatabase,
  });
  const betterAuth = createBetterAuth(config, database.db, app.log);
  await app.register(authPlugin, { auth: config.auth, betterAuth });
  await app.register(betterAuthRoutes, { betterAuth, baseUrl: config.auth.baseUrl });

  await app.register(healthRoutes);
  await app.register(tasksRoutes, { repository: dependencies.tasksRepository ?? {} });
  await app.register(webPlugin);

  return app;
}
