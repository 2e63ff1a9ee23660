/**
 * Two real server processes (`node --import tsx src/server.ts`) sharing one Redis: instance A
 * talks to Redis directly, instance B through a TCP proxy this test owns, so the test can cut
 * B's link to Redis (the real Redis keeps running) and bring it back.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createPostgresDatabase,
  createUserAndToken,
  TEST_SECRET,
  type TestUser,
} from '../helpers.js';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const REDIS_PORT = 6379;
const USER_LIMIT = 4;
const STARTUP_LIMIT_MS = 90_000;
/** Generous bound on one request while Redis is away: it must not wait for Redis. */
const OUTAGE_ANSWER_BOUND_MS = 3_000;
/** How long the test waits for the limits to apply again once the link is back. */
const RECOVERY_BOUND_MS = 15_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  server.close();
  await once(server, 'close');
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  return address.port;
}

/** A TCP proxy to the real Redis that the test can cut (close) and restore (open). */
class RedisLink {
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();

  constructor(readonly port: number) {}

  async open(): Promise<void> {
    const server = createServer((client) => {
      const upstream = createConnection(REDIS_PORT, '127.0.0.1');
      for (const socket of [client, upstream]) {
        this.sockets.add(socket);
        socket.on('close', () => this.sockets.delete(socket));
        socket.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream).pipe(client);
    });
    server.listen(this.port, '127.0.0.1');
    await once(server, 'listening');
    this.server = server;
  }

  /** Refuses new connections and drops the open ones, as a Redis outage would. */
  async cut(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = once(server, 'close');
    server.close();
    for (const socket of this.sockets) socket.destroy();
    await closed;
  }
}

interface Instance {
  name: string;
  baseUrl: string;
  child: ChildProcess;
  stdout: string;
  exited: boolean;
}

function logLines(instance: Instance): Record<string, unknown>[] {
  const complete = instance.stdout.slice(0, instance.stdout.lastIndexOf('\n') + 1);
  return complete
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return { unparsed: line };
      }
    });
}

function storeEvents(instance: Instance) {
  return logLines(instance).filter((line) => line.event === 'rate_limit_store');
}

async function startInstance(
  name: string,
  redisPort: number,
  env: Record<string, string>,
): Promise<Instance> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      BETTER_AUTH_SECRET: TEST_SECRET,
      LOG_LEVEL: 'info',
      PORT: String(port),
      HOST: '127.0.0.1',
      REDIS_URL: `redis://127.0.0.1:${redisPort}`,
      ...env,
    },
  });
  const instance: Instance = {
    name,
    baseUrl: `http://127.0.0.1:${port}`,
    child,
    stdout: '',
    exited: false,
  };
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    instance.stdout += chunk;
  });
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
    stderr += chunk;
  });
  child.once('exit', () => {
    instance.exited = true;
  });

  const deadline = Date.now() + STARTUP_LIMIT_MS;
  for (;;) {
    if (instance.exited) throw new Error(`${name} exited early: ${stderr}${instance.stdout}`);
    try {
      if ((await fetch(`${instance.baseUrl}/health`)).ok) return instance;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${name} not healthy in time: ${stderr}`);
    await sleep(250);
  }
}

async function stopInstance(instance: Instance | undefined) {
  if (!instance || instance.exited) return;
  const exited = once(instance.child, 'exit');
  instance.child.kill('SIGTERM');
  const stopped = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
  if (!stopped) {
    instance.child.kill('SIGKILL');
    await exited;
  }
}

let link: RedisLink;
let direct: Instance | undefined;
let proxied: Instance | undefined;
let dropDatabase: (() => Promise<void>) | undefined;

function instances(): [Instance, Instance] {
  if (!direct || !proxied) throw new Error('instances not started');
  return [direct, proxied];
}

beforeAll(async () => {
  link = new RedisLink(await freePort());
  await link.open();
  // Both instances count in one namespace no other run uses.
  const env: Record<string, string> = {
    RATE_LIMIT_NAMESPACE: `test:e2e:${randomUUID()}:`,
    RATE_LIMIT_USER_PER_MINUTE: String(USER_LIMIT),
    PGLITE_DIR: 'memory://',
  };
  const adminUrl = process.env.DATABASE_URL;
  if (adminUrl) {
    const database = await createPostgresDatabase(adminUrl);
    dropDatabase = database.drop;
    env.DATABASE_URL = database.url;
  }
  // One after the other: two PGlite start-ups at once can starve a 2-core machine.
  direct = await startInstance('A (direct)', REDIS_PORT, env);
  proxied = await startInstance('B (through the proxy)', link.port, env);
}, 120_000);

afterAll(async () => {
  await Promise.all([stopInstance(direct), stopInstance(proxied)]);
  await link?.cut();
  await dropDatabase?.();
}, 60_000);

async function listTasks(instance: Instance, user: TestUser) {
  const response = await fetch(`${instance.baseUrl}/api/tasks`, {
    headers: { authorization: `Bearer ${user.token}` },
  });
  await response.arrayBuffer();
  return response;
}

describe('two instances sharing Redis, over HTTP', () => {
  it("when a user's requests alternate between two server processes, then they share one budget and both answer 429 past it", async () => {
    const [a, b] = instances();
    const user = await createUserAndToken();
    const codes: number[] = [];
    for (let i = 0; i < USER_LIMIT; i++) {
      codes.push((await listTasks(i % 2 === 0 ? a : b, user)).status);
    }
    expect(codes).toEqual(Array(USER_LIMIT).fill(200));

    for (const instance of [a, b]) {
      const refused = await fetch(`${instance.baseUrl}/api/tasks`, {
        headers: { authorization: `Bearer ${user.token}` },
      });
      expect(refused.status).toBe(429);
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(refused.headers.get('x-ratelimit-limit')).toBe(String(USER_LIMIT));
      expect(await refused.json()).toEqual({
        detail: expect.stringMatching(/^Too many requests: /),
      });
    }
  }, 60_000);

  it('when the link to Redis is cut, then requests are served (fail open) and the outage is logged once; when it returns, limits apply again', async () => {
    const [a, b] = instances();
    const user = await createUserAndToken();
    // Use the whole budget through A, which keeps its own link to Redis.
    for (let i = 0; i < USER_LIMIT; i++) expect((await listTasks(a, user)).status).toBe(200);
    expect((await listTasks(b, user)).status).toBe(429);
    expect(storeEvents(b)).toEqual([]);

    await link.cut();
    const during: number[] = [];
    for (let i = 0; i < 5; i++) {
      const started = Date.now();
      during.push((await listTasks(b, user)).status);
      expect(Date.now() - started).toBeLessThan(OUTAGE_ANSWER_BOUND_MS);
    }
    expect(during).toEqual([200, 200, 200, 200, 200]);
    // A still reaches Redis and still refuses the over-budget user.
    expect((await listTasks(a, user)).status).toBe(429);
    expect(storeEvents(b)).toEqual([expect.objectContaining({ up: false, level: 50 })]);

    await link.open();
    const deadline = Date.now() + RECOVERY_BOUND_MS;
    let status = 0;
    while (Date.now() < deadline) {
      status = (await listTasks(b, user)).status;
      if (status === 429) break;
      await sleep(200);
    }
    expect(status).toBe(429);
    expect(storeEvents(b)).toEqual([
      expect.objectContaining({ up: false }),
      expect.objectContaining({ up: true }),
    ]);
  }, 60_000);
});
