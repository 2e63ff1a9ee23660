import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { Database, DatabaseHandle } from './client.js';

declare module 'fastify' {
  interface FastifyInstance {
    db: Database;
    database: DatabaseHandle;
  }
}

export interface DatabasePluginOptions {
  handle: DatabaseHandle;
  /** Close the handle with the app; false when the caller shares it between apps. */
  owned: boolean;
  /** Apply migrations before the app is ready. */
  migrate: boolean;
}

async function databasePlugin(app: FastifyInstance, options: DatabasePluginOptions) {
  const { handle } = options;
  if (options.migrate) {
    try {
      await handle.migrate();
    } catch (error) {
      if (options.owned) await handle.close().catch(() => undefined);
      throw error;
    }
  }
  app.decorate('database', handle);
  app.decorate('db', handle.db);
  if (options.owned) {
    // Runs after the server stopped accepting and in-flight requests finished.
    app.addHook('onClose', async () => {
      await handle.close();
    });
  }
}

export default fp(databasePlugin, { name: 'database' });
