import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import helmet, { type HelmetOptions } from 'helmet';

/**
 * The headers helmet sets with these options, worked out once by running its middleware on a
 * response nobody sends. Without CSP nonces (which this API does not use) every one of them
 * is the same on every response. @fastify/helmet, used before, rebuilt the middleware (and
 * parsed the CSP directives) for each request: 5 % of the service's JavaScript time under
 * create load (npm run bench -- --profile).
 */
export function securityHeaders(options: Readonly<HelmetOptions> = {}): Record<string, string> {
  const response = new ServerResponse(new IncomingMessage(new Socket()));
  let finished = false;
  let failure: unknown;
  helmet(options)(response.req, response, (error?: unknown) => {
    finished = true;
    failure = error;
  });
  if (!finished) throw new Error('helmet did not finish synchronously');
  if (failure !== undefined) throw failure;
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(response.getHeaders())) {
    if (value !== undefined)
      headers[name] = Array.isArray(value) ? value.join(', ') : String(value);
  }
  return headers;
}

/** SPEC §7: security headers on every response (helmet's defaults, suited to a JSON API). */
async function securityHeadersPlugin(app: FastifyInstance) {
  const headers = securityHeaders();
  app.addHook('onRequest', (_request, reply, done) => {
    reply.headers(headers);
    done();
  });
}

export default fp(securityHeadersPlugin, { name: 'security-headers' });
