import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { Config } from '../config.js';
import { createTokenVerifier, type TokenIdentity } from './token-verifier.js';
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
  }
  interface FastifyRequest {
    user: AuthUser | null;
  }
}

async function authPlugin(app: FastifyInstance, options: { auth: Config['auth'] }) {
  const verify = createTokenVerifier(options.auth);
  const users = new UserRegistry(app.db);

  app.decorate('users', users);
  app.decorateRequest('user', null);
  app.decorate('authenticate', async (request: FastifyRequest) => {
    const identity: TokenIdentity = await verify(request.headers.authorization);
    await users.ensure(identity);
    request.user = { id: identity.sub, email: identity.email, name: identity.name };
  });
}

export default fp(authPlugin, { name: 'auth', dependencies: ['database'] });
