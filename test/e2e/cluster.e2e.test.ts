/**
 * WEB_CONCURRENCY=2 on the real process (the compiled service, started as `npm start` starts it): a
 * node:cluster primary and two workers on one port, PostgreSQL and the shared Redis. Which worker
 * answered a request is read from its log line (pino writes the `pid` of every line's process),
 * matched by the request's X-Request-Id; the primary logs each worker's pid as it starts and exits.
 *
 * Needs PostgreSQL whichever way the suite runs (PGlite is one process only): the admin URL is
 * DATABASE_URL when set, else the local server; each suite gets its own database, and its own
 * RATE_LIMIT_NAMESPACE in Redis.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPostgresDatabase,
  POSTGRES_ADMIN_URL,
  createUserAndToken,
  TEST_SECRET,
  type TaskBody,
  type TestUser,
} from '../helpers.js';
import {
  freePort,
  killLeftovers,
  type LogLine,
  type RunResult,
  runProgram,
  type ServerProcess,
  sleep,
  startServer,
} from '../process.js';

const REDIS_URL = 'redis://127.0.0.1:6379';
const WORKERS = 2;
const USER_LIMIT = 5;
/** Two workers each loading the service and migrating, on a busy 2-core machine. */
const STARTUP_LIMIT_MS = 120_000;
const REQUEST_LIMIT_MS = 10_000;

type Database = Awaited<ReturnType<typeof createPostgresDatabase>>;

/** Every worker pid any primary of this file logged: the afterAll safety net kills leftovers. */
const workerPidsSeen = new Set<number>();

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

afterAll(() => {
  killLeftovers();
  for (const pid of workerPidsSeen) {
    if (isAlive(pid)) process.kill(pid, 'SIGKILL');
  }
});

/** The primary's lines about its workers, e.g. "worker started", with their pids. */
function workerEvents(server: ServerProcess, message: string): number[] {
  const pids = server
    .logLines()
    .filter((line) => line.event === 'worker' && line.msg === message)
    .map((line) => line.workerPid)
    .filter((pid): pid is number => typeof pid === 'number');
  for (const pid of pids) workerPidsSeen.add(pid);
  return pids;
}

/** Workers started and not exited (the primary's own account). */
function liveWorkers(server: ServerProcess): number[] {
  const exited = new Set([
    ...workerEvents(server, 'worker exited'),
    ...server
      .logLines()
      .filter((line) => line.event === 'worker' && typeof line.restartInMs === 'number')
      .map((line) => line.workerPid),
  ]);
  return workerEvents(server, 'worker started').filter((pid) => !exited.has(pid));
}

const isReadyLine = (line: LogLine) =>
  typeof line.msg === 'string' && line.msg.startsWith('Todo API ready');

async function startCluster(database: Database, env: Record<string, string> = {}) {
  const server = await startServer({
    startupLimitMs: STARTUP_LIMIT_MS,
    env: {
      WEB_CONCURRENCY: String(WORKERS),
      DATABASE_URL: database.url,
      REDIS_URL,
      RATE_LIMIT_NAMESPACE: `test:e2e:cluster:${randomUUID()}:`,
      ...env,
    },
  });
  // /health answers once the first worker listens; the primary says when all of them do.
  await server.waitForLogLine(isReadyLine, STARTUP_LIMIT_MS);
  workerEvents(server, 'worker started');
  return server;
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
  /** The pid of the process that logged this request. */
  pid: number;
}

/** One request on a connection of its own (so the cluster may hand it to any worker). */
async function request(
  server: ServerProcess,
  path: string,
  options: { method?: string; user?: TestUser; body?: unknown } = {},
): Promise<Answer> {
  const requestId = randomUUID();
  const payload = options.body === undefined ? undefined : JSON.stringify(options.body);
  const answer = await new Promise<Omit<Answer, 'pid'>>((resolve, reject) => {
    const outgoing = http.request(`${server.baseUrl}${path}`, {
      method: options.method ?? 'GET',
      agent: false,
      signal: AbortSignal.timeout(REQUEST_LIMIT_MS),
      headers: {
        'x-request-id': requestId,
        connection: 'close',
        ...(options.user ? { authorization: `Bearer ${options.user.token}` } : {}),
        ...(payload === undefined
          ? {}
          : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) }),
      },
    });
    outgoing.on('error', reject);
    outgoing.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        body += chunk;
      });
      response.on('end', () =>
        resolve({ status: response.statusCode ?? 0, headers: response.headers, body }),
      );
      response.on('error', reject);
    });
    outgoing.end(payload);
  });
  const line = await server.waitForLogLine(
    (candidate) => candidate.msg === 'request' && candidate.reqId === requestId,
  );
  if (typeof line.pid !== 'number') throw new Error(`no pid in ${JSON.stringify(line)}`);
  return { ...answer, pid: line.pid };
}

describe('WEB_CONCURRENCY=2 with Redis', () => {
  let database: Database | undefined;
  let server: ServerProcess | undefined;

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES_ADMIN_URL);
    server = await startCluster(database, {
      RATE_LIMIT_USER_PER_MINUTE: String(USER_LIMIT),
    });
  }, 180_000);

  afterAll(async () => {
    await server?.stop();
    await database?.drop();
  }, 60_000);

  function running(): ServerProcess {
    if (!server) throw new Error('server not started');
    return server;
  }

  it('when requests arrive on new connections, then two distinct worker processes answer them, neither the primary', async () => {
    const cluster = running();
    const workers = liveWorkers(cluster);
    expect(workers).toHaveLength(WORKERS);
    expect(cluster.logLines().filter(isReadyLine)).toEqual([
      expect.objectContaining({ msg: expect.stringContaining(`${WORKERS} workers`) }),
    ]);

    const answers: Answer[] = [];
    for (let i = 0; i < 10; i++) answers.push(await request(cluster, '/health'));
    expect(answers.map((answer) => answer.status)).toEqual(Array(10).fill(200));
    const pids = new Set(answers.map((answer) => answer.pid));
    expect([...pids].sort()).toEqual([...workers].sort());
    expect(pids.has(cluster.child.pid ?? -1)).toBe(false);
  }, 60_000);

  it("when a user's requests are spread over both workers, then they share one budget: exactly 5 succeed, then 429 with Retry-After from each worker", async () => {
    const cluster = running();
    const user = await createUserAndToken();
    const answers: Answer[] = [];
    for (let i = 0; i < USER_LIMIT + 5; i++) {
      answers.push(await request(cluster, '/api/tasks', { user }));
    }
    expect(answers.map((answer) => answer.status)).toEqual([
      ...Array(USER_LIMIT).fill(200),
      ...Array(5).fill(429),
    ]);
    const refused = answers.slice(USER_LIMIT);
    for (const answer of refused) {
      expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(answer.headers['x-ratelimit-limit']).toBe(String(USER_LIMIT));
    }
    expect(new Set(answers.slice(0, USER_LIMIT).map((answer) => answer.pid)).size).toBe(WORKERS);
    expect(new Set(refused.map((answer) => answer.pid)).size).toBe(WORKERS);
  }, 60_000);

  it(
    'when a worker is killed (SIGKILL), then the others keep answering and the primary starts a replacement that answers too',
    async () => {
      const cluster = running();
      const [victim, survivor] = liveWorkers(cluster);
      if (victim === undefined || survivor === undefined) throw new Error('two workers expected');

      process.kill(victim, 'SIGKILL');
      const exit = await cluster.waitForLogLine(
        (line) => line.workerPid === victim && typeof line.restartInMs === 'number',
      );
      expect(exit).toMatchObject({ level: 50, signal: 'SIGKILL' });

      // Until the replacement listens, the survivor answers everything.
      const meanwhile = await request(cluster, '/health');
      expect(meanwhile.status).toBe(200);

      const replacementLine = await cluster.waitForLogLine(
        (line) =>
          line.msg === 'worker listening' &&
          typeof line.workerPid === 'number' &&
          line.workerPid !== survivor &&
          line.workerPid !== victim,
        STARTUP_LIMIT_MS,
      );
      const replacement = Number(replacementLine.workerPid);
      expect(liveWorkers(cluster).sort()).toEqual([survivor, replacement].sort());
      expect(cluster.exitResult()).toBeUndefined();
      expect(isAlive(victim)).toBe(false);

      const answers: Answer[] = [];
      for (let i = 0; i < 6; i++) answers.push(await request(cluster, '/health'));
      expect(answers.map((answer) => answer.status)).toEqual(Array(6).fill(200));
      expect(new Set(answers.map((answer) => answer.pid))).toEqual(
        new Set([survivor, replacement]),
      );
    },
    STARTUP_LIMIT_MS + 30_000,
  );
});

type Outcome = { kind: 'created'; id: number } | { kind: 'other'; status: number } | 'gone';

/** A create on a keep-alive connection; a refused or reset connection is 'gone'. */
function create(agent: http.Agent, server: ServerProcess, user: TestUser, title: string) {
  const payload = JSON.stringify({ title });
  return new Promise<Outcome>((resolve, reject) => {
    const outgoing = http.request(`${server.baseUrl}/api/tasks`, {
      method: 'POST',
      agent,
      signal: AbortSignal.timeout(REQUEST_LIMIT_MS),
      headers: {
        authorization: `Bearer ${user.token}`,
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(payload),
      },
    });
    outgoing.on('error', (error) => {
      if (error.name === 'AbortError') reject(new Error(`no answer in ${REQUEST_LIMIT_MS} ms`));
      else resolve('gone');
    });
    outgoing.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk: string) => {
        body += chunk;
      });
      response.on('end', () => {
        const status = response.statusCode ?? 0;
        resolve(
          status === 201
            ? { kind: 'created', id: (JSON.parse(body) as TaskBody).id }
            : { kind: 'other', status },
        );
      });
      response.on('error', () => resolve('gone'));
    });
    outgoing.end(payload);
  });
}

describe('WEB_CONCURRENCY=2, SIGTERM under load', () => {
  const CLIENTS = 4;
  const ACKNOWLEDGED_BEFORE_SIGTERM = 30;
  const EXIT_LIMIT_MS = 20_000;

  let database: Database | undefined;
  let outcome:
    | {
        acknowledged: number[];
        others: number[];
        exit: Awaited<ServerProcess['exited']> | 'still running';
        workers: number[];
        answeringPids: Set<number>;
        rows: Set<number>;
        stdout: string;
      }
    | undefined;

  beforeAll(async () => {
    database = await createPostgresDatabase(POSTGRES_ADMIN_URL);
    const server = await startCluster(database, {
      RATE_LIMIT_USER_PER_MINUTE: '0',
      RATE_LIMIT_IP_PER_MINUTE: '0',
    });
    try {
      const workers = liveWorkers(server);
      const user = await createUserAndToken();
      const agent = new http.Agent({ keepAlive: true, maxSockets: CLIENTS });
      const acknowledged: number[] = [];
      const others: number[] = [];
      let signalled = false;
      let failure: string | undefined;
      const client = async (index: number) => {
        // Keeps creating until the service is gone (connection refused or reset after SIGTERM).
        for (let round = 0; failure === undefined; round++) {
          const result = await create(agent, server, user, `c${index}-r${round}`).catch(
            (error: unknown) => String(error),
          );
          if (typeof result === 'string' && result !== 'gone') failure = result;
          else if (result === 'gone') {
            if (!signalled) failure = 'a connection failed before SIGTERM';
            return;
          } else if (result.kind === 'created') acknowledged.push(result.id);
          else others.push(result.status);
        }
      };
      const load = Promise.all(Array.from({ length: CLIENTS }, (_, index) => client(index)));
      const deadline = Date.now() + 60_000;
      while (acknowledged.length < ACKNOWLEDGED_BEFORE_SIGTERM && failure === undefined) {
        if (Date.now() > deadline) failure = `load too slow: ${acknowledged.length} acknowledged`;
        await sleep(20);
      }
      if (failure !== undefined) throw new Error(failure);
      signalled = true;
      server.child.kill('SIGTERM');
      const exit = await Promise.race([
        server.exited,
        sleep(EXIT_LIMIT_MS).then(() => 'still running' as const),
      ]);
      // Past the limit the clients would wait for a refusal that never comes.
      if (exit === 'still running') await server.kill();
      await load;
      agent.destroy();
      if (failure !== undefined) throw new Error(failure);

      const answeringPids = new Set(
        server
          .logLines()
          .filter((line) => line.msg === 'request' && line.status === 201)
          .map((line) => line.pid)
          .filter((pid): pid is number => typeof pid === 'number'),
      );
      const reader = new pg.Client({ connectionString: database.url });
      await reader.connect();
      let rows: Set<number>;
      try {
        const result = await reader.query<{ id: string }>('select id from task');
        rows = new Set(result.rows.map((row) => Number(row.id)));
      } finally {
        await reader.end();
      }
      console.log(
        `cluster shutdown: ${acknowledged.length} creates acknowledged, other answers ${JSON.stringify(others)}, ` +
          `${rows.size} rows, exit ${JSON.stringify(exit)}`,
      );
      outcome = {
        acknowledged,
        others,
        exit,
        workers,
        answeringPids,
        rows,
        stdout: server.stdout(),
      };
    } finally {
      await server.kill();
    }
  }, 240_000);

  afterAll(async () => {
    await database?.drop();
  }, 60_000);

  function result() {
    if (!outcome) throw new Error('scenario did not run');
    return outcome;
  }

  it('when SIGTERM reaches the primary while both workers create tasks, then it exits 0', () => {
    const { exit, workers, answeringPids, stdout } = result();
    expect(exit, stdout.slice(-4000)).toEqual({ code: 0, signal: null });
    expect([...answeringPids].sort()).toEqual([...workers].sort());
  });

  it('when SIGTERM reaches the primary under load, then every create answered 201 is in the database', () => {
    const { acknowledged, rows } = result();
    expect(acknowledged.length).toBeGreaterThanOrEqual(ACKNOWLEDGED_BEFORE_SIGTERM);
    expect(acknowledged.filter((id) => !rows.has(id))).toEqual([]);
  });

  it('when SIGTERM reaches the primary under load, then no create is refused other than with 503', () => {
    expect(result().others.filter((status) => status !== 503)).toEqual([]);
  });

  it('when the primary has exited, then no worker process is left running', () => {
    const { workers } = result();
    expect(workers.filter(isAlive)).toEqual([]);
  });
});

describe('WEB_CONCURRENCY=2 that cannot start', () => {
  const runServer = (env: Record<string, string>) =>
    runProgram('server', [], {
      BETTER_AUTH_SECRET: TEST_SECRET,
      HOST: '127.0.0.1',
      PORT: '0',
      PGLITE_DIR: 'memory://',
      WEB_CONCURRENCY: '2',
      ...env,
    });

  function expectOneLineNaming(run: RunResult, ...names: string[]) {
    expect(run.code, `signal ${run.signal}: ${run.stderr}`).toBe(1);
    const lines = run.stderr.split('\n').filter((line) => line.trim() !== '');
    expect(lines, run.stderr).toHaveLength(1);
    for (const name of names) expect(lines[0]).toContain(name);
    expect(run.stderr + run.stdout).not.toContain('    at ');
  }

  it('when DATABASE_URL is unset (PGlite), then the process exits 1 with one stderr line naming WEB_CONCURRENCY', async () => {
    const run = await runServer({ REDIS_URL });
    expectOneLineNaming(run, 'WEB_CONCURRENCY', 'DATABASE_URL');
    // Refused before any worker was forked.
    expect(run.stdout).not.toContain('worker started');
  }, 60_000);

  it('when REDIS_URL is unset, then the process exits 1 with one stderr line saying to set REDIS_URL', async () => {
    // Refused before anything connects: nothing has to listen there.
    const run = await runServer({ DATABASE_URL: 'postgres://todo@127.0.0.1:1/todo' });
    expectOneLineNaming(run, 'WEB_CONCURRENCY', 'set REDIS_URL');
  }, 60_000);

  it('when the workers cannot reach the database, then the primary exits 1 with one stderr line naming DATABASE_URL, without forking again', async () => {
    const closedPort = await freePort();
    const run = await runServer({
      REDIS_URL,
      RATE_LIMIT_NAMESPACE: `test:e2e:cluster:${randomUUID()}:`,
      DATABASE_URL: `postgres://todo:e2e-db-password@127.0.0.1:${closedPort}/todo`,
    });
    expectOneLineNaming(run, 'DATABASE_URL');
    expect(run.stderr + run.stdout).not.toContain('e2e-db-password');
    const started = run.stdout.split('\n').filter((line) => line.includes('"worker started"'));
    expect(started).toHaveLength(WORKERS);
  }, 60_000);
});
