/**
 * A private PgBouncer in transaction pooling mode, as Neon's pooled (`-pooler`) endpoint runs
 * it: each transaction (or statement outside one) may run on a different server connection,
 * and a few server connections serve many clients. Used by test/e2e/pgbouncer.e2e.test.ts and
 * bench/pgbouncer.ts.
 *
 * Self-contained on purpose (Node built-ins and `pg` only): the benchmark imports it without
 * loading the test helpers and the app behind them.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, chmodSync, chownSync, constants, mkdtempSync, readFileSync } from 'node:fs';
import { rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import pg from 'pg';
import { atLocalPort, freePort } from './free-port.js';

/** How long PgBouncer may take to accept a query after it was spawned. */
const READY_LIMIT_MS = 15_000;
/** After SIGTERM (immediate shutdown), SIGKILL if it is still running this much later. */
const STOP_GRACE_MS = 5_000;

export interface PgBouncer {
  /** The port it listens on, on 127.0.0.1. */
  readonly port: number;
  /** `databaseUrl` (a database on the server given to startPgBouncer) reached through the bouncer. */
  urlFor(databaseUrl: string): string;
  /** Its log (stderr) so far: the reason when something went wrong. */
  log(): string;
  /** Stops it (SIGTERM, then SIGKILL) and removes its directory; safe to call twice. */
  stop(): Promise<void>;
}

/** Where `pgbouncer` is: PATH first, then /usr/sbin (Debian's place, often not on a user's PATH). */
function findPgBouncer(): string {
  const directories = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/bin'];
  for (const directory of directories) {
    if (directory === '') continue;
    const candidate = join(directory, 'pgbouncer');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  // Loud on purpose: a missing bouncer must fail the suite, never skip it.
  throw new Error(
    'pgbouncer is not installed: `apt-get install pgbouncer` (.ci/run installs it when missing)',
  );
}

/** uid and gid of a local user from /etc/passwd, or undefined when there is no such user. */
function localUser(name: string): { uid: number; gid: number } | undefined {
  for (const line of readFileSync('/etc/passwd', 'utf8').split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid !== undefined && gid !== undefined) {
      return { uid: Number(uid), gid: Number(gid) };
    }
  }
  return undefined;
}

/** A value for pgbouncer.ini / the auth file: double quotes doubled, as PgBouncer reads them. */
const quoted = (value: string) => `"${value.replaceAll('"', '""')}"`;

/**
 * Starts PgBouncer on a free port of 127.0.0.1 in front of the PostgreSQL server of `adminUrl`,
 * every database of that server reachable by name, at most `poolSize` server connections per
 * database and user. Resolves once a query through it succeeds; throws (with its log) otherwise.
 */
export async function startPgBouncer(adminUrl: string, poolSize = 3): Promise<PgBouncer> {
  const binary = findPgBouncer();
  const admin = new URL(adminUrl);
  const sslmode = admin.searchParams.get('sslmode');
  if (sslmode !== null && sslmode !== 'disable') {
    // The bouncer would need server-side TLS settings this helper does not write.
    throw new Error(`startPgBouncer: TLS to the server (sslmode=${sslmode}) is not supported`);
  }
  const user = decodeURIComponent(admin.username) || 'postgres';
  const password = decodeURIComponent(admin.password);
  const serverHost = admin.hostname || '127.0.0.1';
  const serverPort = admin.port || '5432';

  const dir = mkdtempSync(join(tmpdir(), 'todo-pgbouncer-'));
  const port = await freePort();
  const authFile = join(dir, 'userlist.txt');
  const configFile = join(dir, 'pgbouncer.ini');
  // trust: PgBouncer checks no password from its clients, but only names in the auth file may
  // connect; it logs in to the server with the password given there (none on a trust server).
  writeFileSync(authFile, `${quoted(user)} ${quoted(password)}\n`, { mode: 0o600 });
  writeFileSync(
    configFile,
    [
      '[databases]',
      // Wildcard: a client's database name is the server database it reaches, as with Neon.
      `* = host=${serverHost} port=${serverPort}`,
      '',
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${port}`,
      // No Unix socket: /tmp/.s.PGSQL.<port> could collide with another bouncer's.
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${authFile}`,
      'pool_mode = transaction',
      // Few server connections for many clients, so that interleaving bugs show.
      `default_pool_size = ${poolSize}`,
      'min_pool_size = 0',
      'reserve_pool_size = 0',
      'max_client_conn = 500',
      // Parameters some clients send at start-up that transaction pooling cannot carry over.
      'ignore_startup_parameters = extra_float_digits,options',
      'log_connections = 0',
      'log_disconnections = 0',
      '',
    ].join('\n'),
    { mode: 0o600 },
  );

  // PgBouncer refuses to run as root; it then switches to this user (-u), who must read its files.
  const args: string[] = [];
  if (process.getuid?.() === 0) {
    const name = localUser('postgres') ? 'postgres' : 'nobody';
    const owner = localUser(name);
    if (!owner) throw new Error('startPgBouncer: running as root, and no postgres/nobody user');
    for (const path of [dir, authFile, configFile]) chownSync(path, owner.uid, owner.gid);
    chmodSync(dir, 0o700);
    args.push('-u', name);
  }
  args.push(configFile);

  let log = '';
  const child: ChildProcess = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8').on('data', (chunk: string) => {
      log = (log + chunk).slice(-20_000);
    });
  }
  let exited = false;
  const exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  // A test runner that dies must not leave the bouncer behind.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', killOnExit);
    if (!exited) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
      await exit;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const urlFor = (databaseUrl: string) => atLocalPort(databaseUrl, port);

  const deadline = Date.now() + READY_LIMIT_MS;
  for (;;) {
    if (exited) {
      await stop();
      throw new Error(`pgbouncer exited at start-up (${String(child.exitCode)}):\n${log}`);
    }
    const client = new pg.Client({ connectionString: urlFor(adminUrl) });
    // A refused or dropped connection also emits here; the query's rejection reports it.
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('select 1');
      break;
    } catch (error) {
      if (Date.now() > deadline) {
        await stop();
        throw new Error(`pgbouncer not answering in time (${String(error)}):\n${log}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  return { port, urlFor, log: () => log, stop };
}
