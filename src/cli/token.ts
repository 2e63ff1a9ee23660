/**
 * Mints a development HS256 token for `npm run token -- <user-id> [email] [name]`, signed
 * with BETTER_AUTH_SECRET (or the generated development secret), valid for one hour.
 */
import { SignJWT } from 'jose';
import { ConfigError, loadConfig } from '../config.js';

const [userId, email, name] = process.argv.slice(2);
if (!userId) {
  process.stderr.write('usage: npm run token -- <user-id> [email] [name]\n');
  process.exit(2);
}
try {
  process.loadEnvFile('.env');
} catch {
  // .env is optional
}
try {
  const { auth } = loadConfig();
  const token = await new SignJWT({ ...(email && { email }), ...(name && { name }) })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime('1h')
    .sign(new TextEncoder().encode(auth.secret));
  process.stdout.write(`${token}\n`);
} catch (error) {
  process.stderr.write(
    `todo-api token: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.exit(error instanceof ConfigError ? 1 : 2);
}
