/** `npm run db:migrate`: applies the committed migrations to the configured database. */
import { ConfigError, loadConfig } from '../config.js';
import { createDatabase } from '../db/client.js';

try {
  process.loadEnvFile('.env');
} catch {
  // .env is optional
}
try {
  const { database } = loadConfig();
  const handle = createDatabase(database, () => undefined);
  try {
    await handle.migrate();
  } finally {
    await handle.close();
  }
  process.stdout.write(`migrations applied (${database.kind})\n`);
} catch (error) {
  process.stderr.write(
    `todo-api migrate: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(error instanceof ConfigError ? 1 : 2);
}
