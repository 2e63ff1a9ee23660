/**
 * The service's production build (dist/) with row-level security off, for `npm run bench`
 * to measure what the second wall costs: the same app, configured from the same environment,
 * whose task statements run as the connection user without the role and user settings
 * (TasksRepositoryOptions.unsafeSkipRowLevelSecurity). No configuration of the service can
 * do this; only this bench entry, never shipped, passes the option. Started by
 * bench/servers.ts with the service's environment:
 *
 *   node --import tsx bench/no-rls-server.ts
 */
import type * as App from '../src/app.js';
import type * as Configuration from '../src/config.js';

// The compiled build users run (npm run build), typed by the sources it is compiled from.
const { buildApp } = (await import(new URL('../dist/app.js', import.meta.url).href)) as typeof App;
const { loadConfig } = (await import(
  new URL('../dist/config.js', import.meta.url).href
)) as typeof Configuration;

const config = loadConfig();
const app = await buildApp(config, { tasksRepository: { unsafeSkipRowLevelSecurity: true } });
const shutdown = () => {
  app.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
await app.listen({ host: config.host, port: config.port });
