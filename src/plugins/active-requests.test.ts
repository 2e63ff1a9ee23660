import { createServer, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase, testConfig } from '../../test/helpers.js';
import { buildApp } from '../app.js';
import { loadConfig } from '../config.js';
import { type ActiveRequestLimit, limitActiveRequests } from './active-requests.js';

/** A keep-alive client on a raw socket: it sends when told and counts the answers it got. */
class RawClient {
  readonly socket: Socket;
  private received = '';
  closed = false;

  constructor(port: number) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => {
      this.received += chunk;
    });
    this.socket.on('close', () => {
      this.closed = true;
    });
  }

  send(path: string) {
    this.socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
  }

  /** Status codes of the responses received so far. */
  statuses(): number[] {
    return [...this.received.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((match) => Number(match[1]));
  }
}

async function until(condition: () => boolean, what: string, timeoutMs = 5_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A server whose handler answers only when the test finishes a request by its path. */
async function startControlledServer(limit: number, keepAliveTimeoutMs = 5_000) {
  const seen: string[] = [];
  const open = new Map<string, ServerResponse>();
  const server = createServer((request, response) => {
    const path = request.url ?? '';
    seen.push(path);
    open.set(path, response);
  });
  server.keepAliveTimeout = keepAliveTimeoutMs;
  const limiter = limitActiveRequests(server, limit);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  const clients: RawClient[] = [];
  return {
    seen,
    limiter,
    client() {
      const client = new RawClient(address.port);
      clients.push(client);
      return client;
    },
    finish(path: string) {
      const response = open.get(path);
      if (response === undefined) throw new Error(`${path} is not in progress`);
      open.delete(path);
      response.end('ok');
    },
    async close() {
      for (const client of clients) client.socket.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

type ControlledServer = Awaited<ReturnType<typeof startControlledServer>>;
let running: ControlledServer | undefined;
afterEach(async () => {
  await running?.close();
  running = undefined;
});

/**
 * Client `held` gets an answer while `busy` is still in progress with limit 1, so `held`'s
 * connection is paused; `held` then sends its next request, `/held-2`.
 */
async function holdOneConnection(server: ControlledServer) {
  const held = server.client();
  held.send('/held-1');
  await until(() => server.seen.includes('/held-1'), '/held-1');
  const busy = server.client();
  busy.send('/busy');
  await until(() => server.seen.includes('/busy'), '/busy');
  server.finish('/held-1');
  await until(() => held.statuses().length === 1, 'the answer to /held-1');
  held.send('/held-2');
  return { held, busy };
}

describe('the limit on requests in progress', () => {
  it('when the limit is reached, then a keep-alive connection that got its answer is not read until another request finishes', async () => {
    running = await startControlledServer(1);
    const { held } = await holdOneConnection(running);

    await sleep(200);
    expect(running.seen).not.toContain('/held-2');
    expect(running.limiter.held).toBe(1);
    expect(running.limiter.active).toBe(1);

    running.finish('/busy');
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    running.finish('/held-2');
    await until(() => held.statuses().length === 2, 'the answer to /held-2');
    expect(held.statuses()).toEqual([200, 200]);
  });

  it('when a connection gets its answer while others wait, then it queues behind them', async () => {
    running = await startControlledServer(1);
    const { busy } = await holdOneConnection(running);
    running.finish('/busy');
    await until(() => busy.statuses().length === 1, 'the answer to /busy');
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    busy.send('/busy-2');

    await sleep(200);
    // Resumed in turn: /busy-2 waits for /held-2, whose connection was paused first.
    expect(running.seen).not.toContain('/busy-2');
    running.finish('/held-2');
    await until(() => running?.seen.includes('/busy-2') === true, '/busy-2 to be read');
    running.finish('/busy-2');
    await until(() => busy.statuses().length === 2, 'the answer to /busy-2');
  });

  it('when a resumed connection has nothing to send, then the next one waiting gets its place', async () => {
    running = await startControlledServer(1);
    const first = running.client();
    first.send('/first-1');
    await until(() => running?.seen.includes('/first-1') === true, '/first-1');
    const second = running.client();
    second.send('/second-1');
    await until(() => running?.seen.includes('/second-1') === true, '/second-1');
    running.finish('/first-1');
    await until(() => first.statuses().length === 1, 'the answer to /first-1');
    // first is held; second queues behind it, so first is resumed, with nothing to send.
    running.finish('/second-1');
    await until(() => second.statuses().length === 1, 'the answer to /second-1');
    second.send('/second-2');

    await until(() => running?.seen.includes('/second-2') === true, '/second-2 to be read');
    expect(first.closed).toBe(false);
    expect(running.limiter.held).toBe(0);
    // first, idle again, is read as soon as its client sends.
    running.finish('/second-2');
    first.send('/first-2');
    await until(() => running?.seen.includes('/first-2') === true, '/first-2 to be read');
  });

  it('when several held connections have a request waiting, then one free place reads one of them', async () => {
    running = await startControlledServer(1);
    const { held: a, busy: b } = await holdOneConnection(running);
    const c = running.client();
    c.send('/c-1');
    await until(() => running?.seen.includes('/c-1') === true, '/c-1');
    running.finish('/busy');
    await until(() => b.statuses().length === 1, 'the answer to /busy');
    b.send('/busy-2');
    await sleep(50);
    expect(running.limiter.held).toBe(2);

    // The place /c-1 frees goes to the connection held first, and to no other.
    running.finish('/c-1');
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    await sleep(200);
    expect(running.seen).not.toContain('/busy-2');
    running.finish('/held-2');
    await until(() => running?.seen.includes('/busy-2') === true, '/busy-2 to be read');
    expect(a.statuses()).toEqual([200, 200]);
  });

  it('when below the limit, then the next request on a connection is read at once', async () => {
    running = await startControlledServer(2);
    const { held } = await holdOneConnection(running);
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    expect(running.limiter.held).toBe(0);
    running.finish('/held-2');
    await until(() => held.statuses().length === 2, 'the answer to /held-2');
  });

  it('when a connection is held longer than the keep-alive timeout, then it stays open and its request is answered', async () => {
    running = await startControlledServer(1, 100);
    const { held } = await holdOneConnection(running);

    // Node closes an idle keep-alive connection up to a second after keepAliveTimeout.
    await sleep(1_500);
    expect(held.closed).toBe(false);
    running.finish('/busy');
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    running.finish('/held-2');
    await until(() => held.statuses().length === 2, 'the answer to /held-2');
    expect(held.closed).toBe(false);
  });

  it('when a released connection then stays idle, then the keep-alive timeout still closes it', async () => {
    running = await startControlledServer(1, 100);
    const { held } = await holdOneConnection(running);
    running.finish('/busy');
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    running.finish('/held-2');
    await until(() => held.statuses().length === 2, 'the answer to /held-2');
    await until(() => held.closed, 'the idle connection to be closed', 3_000);
  });

  it('when connections are held, then releaseAll resumes them and their requests are read before it resolves', async () => {
    running = await startControlledServer(1);
    await holdOneConnection(running);
    await sleep(50);
    expect(running.seen).not.toContain('/held-2');

    await running.limiter.releaseAll();
    expect(running.seen).toContain('/held-2');
  });

  it('when releaseAll was called, then no connection is held any more', async () => {
    running = await startControlledServer(1);
    const limiter: ActiveRequestLimit = running.limiter;
    await limiter.releaseAll();
    const { held } = await holdOneConnection(running);
    await until(() => running?.seen.includes('/held-2') === true, '/held-2 to be read');
    expect(limiter.held).toBe(0);
    expect(held.statuses()).toEqual([200]);
  });
});

describe('the service with HTTP_MAX_ACTIVE_REQUESTS', () => {
  let database: TestDatabase | undefined;
  afterEach(async () => {
    await database?.drop();
    database = undefined;
  });

  it('when the service shuts down while a connection is held, then the request it holds is answered, not dropped', async () => {
    database = await createTestDatabase();
    const app = await buildApp(testConfig({ HTTP_MAX_ACTIVE_REQUESTS: '1' }), {
      database: database.handle,
    });
    let finishSlow: (() => void) | undefined;
    app.get('/test/slow', async () => {
      await new Promise<void>((resolve) => {
        finishSlow = resolve;
      });
      return { slow: true };
    });
    await app.listen({ host: '127.0.0.1', port: 0 });
    const address = app.server.address();
    if (address === null || typeof address === 'string') throw new Error('no port');
    const slow = new RawClient(address.port);
    const held = new RawClient(address.port);
    try {
      slow.send('/test/slow');
      await until(() => finishSlow !== undefined, 'the slow request to start');
      held.send('/health');
      await until(() => held.statuses().length === 1, 'the first /health');
      held.send('/health');
      await sleep(200);
      // Held: the second /health is unread while /test/slow is in progress.
      expect(held.statuses()).toEqual([200]);

      const closed = app.close();
      await until(() => held.statuses().length === 2, 'an answer to the held /health');
      expect([200, 503]).toContain(held.statuses()[1]);
      finishSlow?.();
      await closed;
      await until(() => slow.statuses().length === 1, 'the slow answer');
    } finally {
      finishSlow?.();
      slow.socket.destroy();
      held.socket.destroy();
      await app.close();
    }
  });
});

describe('HTTP_MAX_ACTIVE_REQUESTS', () => {
  const load = (value?: string) =>
    loadConfig({
      NODE_ENV: 'test',
      BETTER_AUTH_SECRET: 'x'.repeat(32),
      ...(value === undefined ? {} : { HTTP_MAX_ACTIVE_REQUESTS: value }),
    }).http.maxActiveRequests;

  it('when it is not set, then 64 requests are handled at once', () => {
    expect(load()).toBe(64);
  });

  it('when it is 0, then there is no limit', () => {
    expect(load('0')).toBe(0);
  });

  it('when it is not a whole number of at least 0, then loading the configuration names it', () => {
    for (const value of ['-1', '1.5', 'many']) {
      expect(() => load(value), value).toThrow(/HTTP_MAX_ACTIVE_REQUESTS/);
    }
  });
});
