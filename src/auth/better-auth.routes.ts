import { STATUS_CODES } from 'node:http';
import { fromNodeHeaders } from 'better-auth/node';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { BetterAuthInstance } from './better-auth.js';
import { BETTER_AUTH_BASE_PATH } from './better-auth.js';

export interface BetterAuthRoutesOptions {
  betterAuth: BetterAuthInstance;
  /** BETTER_AUTH_URL: the URL Better Auth believes it is served at. */
  baseUrl: string;
}

/** Headers about this hop's connection, which Fastify sets itself. */
const HOP_BY_HOP = new Set([
  'connection',
  'content-length',
  'keep-alive',
  'transfer-encoding',
  'upgrade',
]);

const EXPOSE_HEADERS = 'access-control-expose-headers';

/** Turns the Fastify request into the Fetch `Request` Better Auth's handler takes. */
function toFetchRequest(request: FastifyRequest, baseUrl: string): Request {
  const headers = fromNodeHeaders(request.headers);
  // The address Fastify trusts (TRUST_PROXY), never what the client claims: Better Auth keys
  // sessions and its rate limiter on it.
  headers.set('x-forwarded-for', request.ip);
  // HEAD is served by the GET endpoint; Fastify drops the body.
  const method = request.method === 'HEAD' ? 'GET' : request.method;
  const body =
    Buffer.isBuffer(request.body) && request.body.length > 0 && method !== 'GET'
      ? new Uint8Array(request.body)
      : undefined;
  // BETTER_AUTH_URL is the origin (and any path prefix) Better Auth routes by; the client's
  // Host header plays no part.
  return new Request(`${baseUrl}${request.url}`, { method, headers, body });
}

/** Merges Better Auth's exposed headers with the ones @fastify/cors already set. */
function mergeExposedHeaders(reply: FastifyReply, value: string): string {
  const existing = reply.getHeader(EXPOSE_HEADERS);
  const names = [typeof existing === 'string' ? existing : '', value]
    .flatMap((list) => list.split(','))
    .map((name) => name.trim())
    .filter((name) => name !== '');
  const seen = new Set<string>();
  return names
    .filter((name) => {
      const key = name.toLowerCase();
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    })
    .join(', ');
}

/** A JSON error object from Better Auth with `detail` added, or undefined to send it as it is. */
function withErrorDetail(body: Buffer): Record<string, unknown> | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  if ('detail' in parsed) return undefined;
  const message = 'message' in parsed ? parsed.message : undefined;
  return { detail: typeof message === 'string' && message !== '' ? message : 'Error', ...parsed };
}

async function sendFetchResponse(reply: FastifyReply, response: Response) {
  reply.code(response.status);
  response.headers.forEach((value, name) => {
    if (name === 'set-cookie' || HOP_BY_HOP.has(name)) return;
    reply.header(name, name === EXPOSE_HEADERS ? mergeExposedHeaders(reply, value) : value);
  });
  // One header per cookie: joined with commas they would not parse (Expires has a comma).
  const cookies = response.headers.getSetCookie();
  if (cookies.length > 0) reply.header('set-cookie', cookies);

  const body = Buffer.from(await response.arrayBuffer());
  if (body.length === 0 && response.status >= 400) {
    // Better Auth answers unknown paths with an empty 404: give it our error shape.
    return reply
      .type('application/json; charset=utf-8')
      .send({ detail: STATUS_CODES[response.status] ?? 'Error' });
  }
  if (response.status >= 400) {
    // Better Auth's JSON errors are {"message", "code"}: add the `detail` every error of this
    // API carries (SPEC §6), keeping its own fields for its client.
    const withDetail = withErrorDetail(body);
    if (withDetail !== undefined) return reply.send(withDetail);
  }
  return reply.send(body.length === 0 ? null : body);
}

/**
 * Serves Better Auth at /api/auth/*: one catch-all route hands the request to its Fetch
 * handler and copies status, headers (every Set-Cookie) and body back. Preflights (OPTIONS)
 * stay with @fastify/cors. Better Auth's own JSON errors keep their fields, plus `detail`.
 */
export default async function betterAuthRoutes(
  app: FastifyInstance,
  options: BetterAuthRoutesOptions,
) {
  const { betterAuth, baseUrl } = options;

  // Better Auth reads the body itself (JSON, with its own 400 for malformed JSON and 415 for
  // other types), so this context hands it the raw bytes; the 16 KiB body limit still applies.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => {
    done(null, body);
  });

  app.route({
    method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    url: `${BETTER_AUTH_BASE_PATH}/*`,
    schema: { hide: true },
    handler: async (request, reply) => {
      const response = await betterAuth.handler(toFetchRequest(request, baseUrl));
      return sendFetchResponse(reply, response);
    },
  });
}
