import type { Socket } from 'node:net';
import { STATUS_CODES } from 'node:http';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { isDatabaseUnavailable, isPoolWaitTimeout, sqlState } from '../db/errors.js';
import { HttpError, UnauthorizedError, ValidationError, type ValidationIssue } from '../errors.js';
import { TooManyRequestsError } from './rate-limit.js';
import { logSecurityEvent } from './security-log.js';

/** When a client may try again after a 503 for the database (outage or busy pool). */
const DATABASE_RETRY_AFTER_SECONDS = '5';

/** SQLSTATE 42501: a row-level security policy refused the row, or a privilege is missing. */
const INSUFFICIENT_PRIVILEGE = '42501';

/** Fastify's name for each request part, as FastAPI spells it in `loc`. */
const LOCATION_NAMES: Record<string, string> = {
  body: 'body',
  querystring: 'query',
  params: 'path',
  headers: 'header',
};

interface ZodValidationEntry {
  keyword: string;
  instancePath: string;
  message: string;
  params: Record<string, unknown>;
}

function issueType(entry: ZodValidationEntry): string {
  const { keyword, params, message } = entry;
  switch (keyword) {
    case 'invalid_type':
      // Our schemas word a missing field "Field required" (FastAPI's words); Zod's default
      // message says "received undefined".
      return message === 'Field required' || message.includes('received undefined')
        ? 'missing'
        : `${String(params.expected)}_type`;
    case 'too_big':
      return params.origin === 'string' ? 'string_too_long' : 'less_than_equal';
    case 'too_small':
      return params.origin === 'string' ? 'string_too_short' : 'greater_than_equal';
    case 'invalid_value':
      return 'enum';
    case 'invalid_format':
      return 'string_pattern_mismatch';
    case 'unrecognized_keys':
      return 'extra_forbidden';
    default:
      return 'value_error';
  }
}

function toValidationIssues(error: FastifyError): ValidationIssue[] {
  const location = LOCATION_NAMES[error.validationContext ?? 'body'] ?? 'body';
  const entries = (error.validation ?? []) as unknown as ZodValidationEntry[];
  return entries.map((entry) => ({
    loc: [location, ...entry.instancePath.split('/').filter((segment) => segment !== '')],
    msg: entry.message,
    type: issueType(entry),
  }));
}

const INVALID_JSON: ValidationIssue = {
  loc: ['body'],
  msg: 'Body is not valid JSON',
  type: 'json_invalid',
};

/** Body parser failures, answered in the 422 shape so clients need one error parser. */
const BODY_ERRORS: Record<string, ValidationIssue> = {
  FST_ERR_CTP_INVALID_JSON_BODY: INVALID_JSON,
  FST_ERR_CTP_EMPTY_JSON_BODY: { loc: ['body'], msg: 'Body is empty', type: 'missing' },
};

function sendValidation(reply: FastifyReply, issues: ValidationIssue[]) {
  return reply.code(422).send({ detail: issues });
}

/**
 * The one place errors become responses: every body is `{"detail": ...}`, 5xx bodies say
 * nothing internal, and the log line carries everything (with the request id).
 */
async function errorHandlerPlugin(app: FastifyInstance) {
  app.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    if (error instanceof HttpError) {
      if (error instanceof UnauthorizedError) {
        logSecurityEvent(request, error.reason, { status: 401 }, error.detail);
      } else if (error.statusCode === 403) {
        logSecurityEvent(request, 'forbidden', { status: 403 }, error.detail);
      } else if (error instanceof TooManyRequestsError) {
        logSecurityEvent(
          request,
          'rate_limited',
          { status: 429, limit: error.limit },
          error.detail,
        );
      }
      return reply.code(error.statusCode).headers(error.headers).send({ detail: error.detail });
    }
    if (error instanceof ValidationError) return sendValidation(reply, error.issues);
    if (hasZodFastifySchemaValidationErrors(error)) {
      return sendValidation(reply, toValidationIssues(error));
    }

    const bodyError = error.code ? BODY_ERRORS[error.code] : undefined;
    if (bodyError || error instanceof SyntaxError) {
      return sendValidation(reply, [bodyError ?? INVALID_JSON]);
    }

    if (isPoolWaitTimeout(error) && request.server.database.allConnectionsInUse()) {
      // Load, not an outage: every connection is open and busy. Saying "cannot be reached"
      // here sent operators looking for a database problem during a traffic peak.
      request.log.warn({ err: error }, 'database busy: no pool connection came free in time');
      return reply
        .code(503)
        .header('retry-after', DATABASE_RETRY_AFTER_SECONDS)
        .send({ detail: 'Service busy: every database connection is in use; retry shortly' });
    }
    if (isDatabaseUnavailable(error)) {
      request.log.error({ err: error }, 'database unavailable');
      return reply
        .code(503)
        .header('retry-after', DATABASE_RETRY_AFTER_SECONDS)
        .send({ detail: 'Service temporarily unavailable: the database cannot be reached' });
    }

    const state = sqlState(error);
    if (state === INSUFFICIENT_PRIVILEGE) {
      // Row-level security refused a write (or the app role lacks a GRANT): never a 500, and
      // 403 rather than 404 because it is a refused write, not a missing task. Nothing about
      // the row is revealed; the log line says which policy or table (in `err`).
      logSecurityEvent(request, 'rls_denied', { status: 403, err: error }, 'database refused');
      return reply.code(403).send({ detail: 'Forbidden' });
    }
    if (state?.startsWith('22') || state === '23514') {
      // Input the validators let through but PostgreSQL refused: still the client's input.
      request.log.warn({ err: error }, 'database rejected a value');
      return reply.code(422).send({
        detail: [
          { loc: ['body'], msg: 'A value was rejected by the database', type: 'value_error' },
        ],
      });
    }

    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // Fastify's own client errors (413, 415, 400 ...) have messages written for clients.
      return reply.code(status).send({ detail: error.message });
    }

    request.log.error({ err: error }, 'unhandled error');
    return reply.code(500).send({ detail: 'Internal Server Error' });
  });

  app.setNotFoundHandler((request, reply) => {
    request.log.info({ event: 'not_found' }, 'no route');
    return reply.code(404).send({ detail: 'Not Found' });
  });
}

export default fp(errorHandlerPlugin, { name: 'error-handler' });

/**
 * What Node's HTTP parser refuses (malformed requests, headers over 16 KiB) and the request
 * timeouts, answered before any route exists: in the {"detail"} shape, then closed.
 */
export function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, detail] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request Timeout: the request did not arrive in time']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large']
        : [400, 'Bad Request: malformed HTTP'];
  if (socket.writable) {
    const body = JSON.stringify({ detail });
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/**
 * The router's own refusals (a malformed %-escape, a path segment over maxParamLength), in
 * the one error shape and without echoing the URL back.
 */
export function answerFrameworkError(
  error: FastifyError,
  _request: FastifyRequest,
  reply: FastifyReply,
): void {
  const status = error.statusCode ?? 400;
  const detail =
    status === 414 ? 'URI Too Long' : status < 500 ? 'Bad Request: malformed URL' : 'Error';
  reply.code(status).send({ detail });
}
