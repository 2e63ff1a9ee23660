import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import type { BetterAuthInstance } from './better-auth.js';
import {
  type BuiltInKeysLoader,
  createTokenVerifier,
  type TokenIdentity,
} from './token-verifier.js';
import { UserRegistry } from './users.repository.js';

export interface AuthUser {
  id: string;
  email: string | undefined;
  name: string | undefined;
}

declare module 'fastify' {
  interface FastifyInstance {
    /** onRequest hook: verifies the bearer token and sets `request.user`, or answers 401. */
    authenticate(request: FastifyRequest): Promise<void>;
    users: UserRegistry;
    /** The Better Auth hosted at /api/auth/* (its server-side `api`, e.g. in tests). */
    betterAuth: BetterAuthInstance;
  }
  interface FastifyRequest {
    user: AuthUser | null;
  }
}

export interface AuthPluginOptions {
  auth: Config['auth'];
  betterAuth: BetterAuthInstance;
}

/** The built-in key set, read in-process: the same keys GET /api/auth/jwks publishes. */
function builtInKeysOf(betterAuth: BetterAuthInstance): BuiltInKeysLoader {
  return async () => {
    const { keys } = await betterAuth.api.getJwks();
    return { keys };
  };
}

async function authPlugin(app: FastifyInstance, options: AuthPluginOptions) {
  // Better Auth initialises in the background; a broken set-up fails start-up here, once.
  await options.betterAuth.$context;
  const verify = createTokenVerifier(options.auth, builtInKeysOf(options.betterAuth));
  const users = new UserRegistry(app.db);

  app.decorate('users', users);
  app.decorate('betterAuth', options.betterAuth);
  app.decorateRequest('user', null);
  app.decorate('authenticate', async (request: FastifyRequest) => {
    const identity: TokenIdentity = await verify(request.headers.authorization);
    await users.ensure(identity);
    request.user = { id: identity.sub, email: identity.email, name: identity.name };
  });
}

export default fp(authPlugin, { name: 'auth', dependencies: ['database'] });
