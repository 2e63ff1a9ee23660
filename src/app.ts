import { randomUUID } from 'node:crypto';
import cors from '@fastify/cors';
import helmet from '@fastify/helmet';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import authPlugin from './auth/auth.plugin.js';
import type { Config } from './config.js';
import { createDatabase, type DatabaseHandle } from './db/client.js';
import databasePlugin from './db/database.plugin.js';
import docsPlugin from './plugins/docs.js';
import errorHandler from './plugins/error-handler.js';
import healthRoutes from './plugins/health.routes.js';
import tasksRoutes from './tasks/tasks.routes.js';

/** SPEC §6: bodies over 16 KiB are refused with 413. */
export const BODY_LIMIT_BYTES = 16 * 1024;

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

export interface AppDependencies {
  /** A database shared by several apps (tests); the app then neither migrates nor closes it. */
  database?: DatabaseHandle;
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
    },
    bodyLimit: BODY_LIMIT_BYTES,
    // Migrations run while the database plugin loads; on a cold or busy database they can
    // take longer than Fastify's default 10 s per plugin.
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
    // A slow client must not hold a connection forever.
    requestTimeout: 30_000,
    connectionTimeout: 60_000,
    keepAliveTimeout: 5_000,
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
  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      {
        method: request.method,
        route: request.routeOptions.url ?? null,
        url: request.url,
        status: reply.statusCode,
        userId: request.user?.id ?? null,
        ip: request.ip,
        durationMs: Math.round(reply.elapsedTime * 100) / 100,
      },
      'request',
    );
  });

  await app.register(errorHandler);
  await app.register(helmet, { global: true });
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
    allowedHeaders: ['Authorization', 'Content-Type', 'X-Request-Id'],
    exposedHeaders: ['Location', 'X-Total-Count', 'X-Request-Id', 'Retry-After'],
    maxAge: 600,
  });
  await app.register(docsPlugin);

  const ownsDatabase = dependencies.database === undefined;
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
  await app.register(authPlugin, { auth: config.auth });

  await app.register(healthRoutes);
  await app.register(tasksRoutes);

  return app;
}
