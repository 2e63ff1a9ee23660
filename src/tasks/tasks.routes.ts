import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { AuthUser } from '../auth/auth.plugin.js';
import { IDEMPOTENCY_KEY_MAX_LENGTH } from '../db/schema.js';
import { ForbiddenError, NotFoundError, ValidationError } from '../errors.js';
import {
  type CreatedTaskJson,
  createTasksRepository,
  IDEMPOTENCY_TTL_HOURS,
  type NewTask,
  type StoredResponse,
  type TasksRepositoryOptions,
} from './tasks.repository.js';
import {
  completeTaskBody,
  createTaskBody,
  errorResponse,
  listTasksQuery,
  taskParams,
  taskResponse,
  updateTaskBody,
  userTaskParams,
  userTasksParams,
} from './tasks.schemas.js';

/**
 * Sends JSON text the repository wrote (taskJson): Fastify passes a string with a JSON
 * content type through as it is, without the route's serializer. The response schemas still
 * document it in OpenAPI, and the tests hold every field to them.
 */
function sendJson(reply: FastifyReply, json: string): FastifyReply {
  return reply.type('application/json; charset=utf-8').send(json);
}

function currentUser(request: FastifyRequest): AuthUser {
  if (request.user === null) throw new Error('tasks route reached without authentication');
  return request.user;
}

/** Ids that cannot name a row (0, negative, beyond 2^53) are simply not found. */
function existingTaskId(id: number): number {
  if (!Number.isSafeInteger(id) || id < 1) throw new NotFoundError('Task not found');
  return id;
}

function pathUserId(request: FastifyRequest): string | undefined {
  const { params } = request;
  if (typeof params === 'object' && params !== null && 'user_id' in params) {
    return typeof params.user_id === 'string' ? params.user_id : undefined;
  }
  return undefined;
}

/** RFC draft "The Idempotency-Key HTTP Header Field": 1–255 printable ASCII characters. */
const IDEMPOTENCY_KEY = new RegExp(`^[\\x20-\\x7e]{1,${IDEMPOTENCY_KEY_MAX_LENGTH}}$`);

// Loose: Fastify replaces request.headers with the parsed value, and every other header
// (Authorization, Origin ...) must stay.
const createTaskHeaders = z.looseObject({
  'idempotency-key': z
    .string()
    .regex(
      IDEMPOTENCY_KEY,
      `Idempotency-Key must be 1–${IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters`,
    )
    .optional()
    .meta({
      description:
        `Optional. Retrying with the same key and the same body within ${IDEMPOTENCY_TTL_HOURS} h ` +
        'returns the first response (same status, body and Location, header ' +
        '`Idempotent-Replayed: true`) instead of creating another task; the same key with a ' +
        'different body is 422. Keys are per user.',
      example: '3f1b8c2e-6d7a-4b7e-9a55-0c1d2e3f4a5b',
    }),
});

/** What "the same body" means for a replay: the validated input (trimmed, unknown fields dropped). */
function requestHash(input: NewTask): string {
  return createHash('sha256')
    .update(JSON.stringify([input.title, input.description ?? null]))
    .digest('hex');
}

const errors = {
  401: errorResponse.describe('Missing or invalid bearer token'),
  403: errorResponse.describe("Path user_id is not the token's subject"),
  422: errorResponse.describe('Validation failed'),
  503: errorResponse.describe('Database unavailable'),
};
const notFound = { 404: errorResponse.describe('Task not found (or not yours)') };
const bodyErrors = {
  413: errorResponse.describe('Body over 16 KiB'),
  415: errorResponse.describe('Body is not JSON'),
};

/** The two URL shapes of SPEC §5: the front end's `/api/{user_id}/tasks` and `/api/tasks`. */
const SHAPES = [
  {
    base: '/api/:user_id/tasks',
    tag: 'tasks (user path)',
    collectionParams: userTasksParams,
    itemParams: userTaskParams,
    location: (userId: string, id: number) => `/api/${encodeURIComponent(userId)}/tasks/${id}`,
  },
  {
    base: '/api/tasks',
    tag: 'tasks',
    collectionParams: z.object({}),
    itemParams: taskParams,
    location: (_userId: string, id: number) => `/api/tasks/${id}`,
  },
] as const;

export interface TasksRoutesOptions {
  /** Only tests pass anything here (see TasksRepositoryOptions). */
  repository?: TasksRepositoryOptions;
}

export default async function tasksRoutes(
  fastify: FastifyInstance,
  options: TasksRoutesOptions = {},
) {
  const app = fastify.withTypeProvider<ZodTypeProvider>();
  const tasks = createTasksRepository(app.database, options.repository);

  app.addHook('onRequest', async (request, reply) => {
    await app.authenticate(request);
    const user = currentUser(request);
    const pathUser = pathUserId(request);
    if (pathUser !== undefined && pathUser !== user.id) {
      throw new ForbiddenError("Forbidden: the user id in the path is not the token's user");
    }
    // Task lists are private: no shared cache may keep them.
    reply.header('cache-control', 'no-store');
  });

  for (const shape of SHAPES) {
    const security = [{ bearerAuth: [] }];
    const tags = [shape.tag];

    app.get(
      shape.base,
      {
        schema: {
          summary: 'List your tasks',
          tags,
          security,
          params: shape.collectionParams,
          querystring: listTasksQuery,
          response: {
            200: z.array(taskResponse).describe('Tasks; the X-Total-Count header has the total'),
            ...errors,
          },
        },
      },
      async (request, reply) => {
        const page = await tasks.list(currentUser(request).id, request.query);
        reply.header('x-total-count', String(page.total));
        return sendJson(reply, `[${page.tasks.join(',')}]`);
      },
    );

    app.post(
      shape.base,
      {
        schema: {
          summary: 'Create a task',
          tags,
          security,
          params: shape.collectionParams,
          headers: createTaskHeaders,
          body: createTaskBody,
          response: {
            201: taskResponse.describe('Created (or, with an Idempotency-Key, replayed)'),
            ...errors,
            ...bodyErrors,
          },
        },
      },
      async (request, reply) => {
        const user = currentUser(request);
        const key = request.headers['idempotency-key'];
        if (key === undefined) {
          const created = await tasks.create(user.id, request.body);
          reply.code(201).header('location', shape.location(user.id, created.id));
          return sendJson(reply, created.body);
        }

        // Stored as JSON (jsonb) with the key, and replayed as it was first sent.
        const respond = (created: CreatedTaskJson): StoredResponse => {
          const body: unknown = JSON.parse(created.body);
          return {
            status: 201,
            body: taskResponse.parse(body),
            location: shape.location(user.id, created.id),
          };
        };
        const result = await tasks.createIdempotent(
          user.id,
          request.body,
          { key, requestHash: requestHash(request.body) },
          respond,
        );
        if (result.outcome === 'key-reused-with-other-body') {
          throw new ValidationError([
            {
              loc: ['header', 'idempotency-key'],
              msg: 'This Idempotency-Key was already used with a different request body',
              type: 'idempotency_key_reused',
            },
          ]);
        }
        const { response } = result;
        reply.code(response.status);
        if (response.location !== null) reply.header('location', response.location);
        if (result.outcome === 'replayed') reply.header('idempotent-replayed', 'true');
        return taskResponse.parse(response.body);
      },
    );

    const item = `${shape.base}/:id`;

    app.get(
      item,
      {
        schema: {
          summary: 'Get one task',
          tags,
          security,
          params: shape.itemParams,
          response: { 200: taskResponse, ...errors, ...notFound },
        },
      },
      async (request, reply) => {
        const body = await tasks.get(currentUser(request).id, existingTaskId(request.params.id));
        if (body === null) throw new NotFoundError('Task not found');
        return sendJson(reply, body);
      },
    );

    app.put(
      item,
      {
        schema: {
          summary: 'Update a task (only the fields given)',
          tags,
          security,
          params: shape.itemParams,
          body: updateTaskBody,
          response: { 200: taskResponse, ...errors, ...notFound, ...bodyErrors },
        },
      },
      async (request, reply) => {
        const id = existingTaskId(request.params.id);
        const body = await tasks.update(currentUser(request).id, id, request.body);
        if (body === null) throw new NotFoundError('Task not found');
        return sendJson(reply, body);
      },
    );

    app.delete(
      item,
      {
        schema: {
          summary: 'Delete a task',
          tags,
          security,
          params: shape.itemParams,
          response: { 204: z.undefined().describe('Deleted'), ...errors, ...notFound },
        },
      },
      async (request, reply) => {
        const id = existingTaskId(request.params.id);
        const deleted = await tasks.delete(currentUser(request).id, id);
        if (!deleted) throw new NotFoundError('Task not found');
        return reply.code(204).send();
      },
    );

    app.patch(
      `${item}/complete`,
      {
        schema: {
          summary: 'Toggle completion, or set it with {"completed": bool}',
          tags,
          security,
          params: shape.itemParams,
          body: completeTaskBody,
          response: { 200: taskResponse, ...errors, ...notFound, ...bodyErrors },
        },
      },
      async (request, reply) => {
        const id = existingTaskId(request.params.id);
        const body = await tasks.setCompleted(currentUser(request).id, id, request.body?.completed);
        if (body === null) throw new NotFoundError('Task not found');
        return sendJson(reply, body);
      },
    );
  }
}
