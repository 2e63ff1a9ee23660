import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';

/** Better Auth's credential endpoints: stricter rate limit, failures logged as security events. */
const CREDENTIAL_PATH = /^\/api\/auth\/sign-(in|up)(\/|$)/;

/** The path of a request URL without its query string, which may carry a one-time token. */
export function pathOf(url: string): string {
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

/** Query parameters whose values are secrets: Better Auth's e-mail links carry `token`. */
const SECRET_PARAM = /token|code|secret|password|signature|key|state/i;

/** Better Auth's reset-password link has its one-time token as the last path segment. */
const TOKEN_IN_PATH = /^(\/api\/auth\/reset-password\/)[^/?]+/i;

/**
 * A request URL fit for a log line: secret-looking query values and the token segment of a
 * reset-password link are replaced by `[redacted]`; everything else is kept for debugging.
 */
export function loggableUrl(url: string): string {
  const path = pathOf(url).replace(TOKEN_IN_PATH, '$1[redacted]');
  const queryStart = url.indexOf('?');
  if (queryStart === -1) return path;
  const query = url
    .slice(queryStart + 1)
    .split('&')
    .map((pair) => {
      const name = pair.split('=', 1)[0] ?? '';
      let decoded = name;
      try {
        decoded = decodeURIComponent(name);
      } catch {
        // keep the raw name
      }
      return SECRET_PARAM.test(decoded) ? `${name}=[redacted]` : pair;
    })
    .join('&');
  return `${path}?${query}`;
}

/**
 * Whether a request URL is a sign-in or sign-up, judged the way an attacker cannot dodge:
 * case, repeated slashes and percent-encoding do not change the answer.
 */
export function isCredentialPath(url: string): boolean {
  let path = pathOf(url);
  try {
    path = decodeURIComponent(path);
  } catch {
    // Not valid percent-encoding: judge the raw path.
  }
  return CREDENTIAL_PATH.test(path.toLowerCase().replace(/\/{2,}/g, '/'));
}

export interface SecurityEventFields {
  status: number;
  [field: string]: unknown;
}

/**
 * One structured line per security event: who (user id when a token verified), from where
 * (IP), which request (`reqId`, from the request logger) and what was refused. Never a
 * header, a body or a query string, so never a token, cookie or password.
 */
export function logSecurityEvent(
  request: FastifyRequest,
  reason: string,
  fields: SecurityEventFields,
  message: string,
): void {
  request.log.warn(
    {
      event: 'security',
      reason,
      userId: request.user?.id ?? null,
      ip: request.ip,
      method: request.method,
      route: request.routeOptions.url ?? null,
      path: loggableUrl(pathOf(request.url)),
      ...fields,
    },
    message,
  );
}

/**
 * Better Auth answers a failed sign-in itself (its 401 does not pass through our error
 * handler): log those here, so credential stuffing shows up like any other 401.
 */
async function securityLogPlugin(app: FastifyInstance) {
  app.addHook('onResponse', async (request, reply) => {
    if (reply.statusCode === 401 && isCredentialPath(request.url)) {
      logSecurityEvent(
        request,
        'credentials',
        { status: reply.statusCode },
        'sign-in or sign-up refused',
      );
    }
  });
}

export default fp(securityLogPlugin, { name: 'security-log' });
