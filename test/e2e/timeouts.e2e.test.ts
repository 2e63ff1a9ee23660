/**
 * Slow clients over a real socket (the app listening in-process on a free port): a client that
 * trickles its headers, one that announces a body it never sends, one that connects and says
 * nothing, and an idle keep-alive connection are all cut off by the server within the bounds
 * that REQUEST_TIMEOUT_MS and KEEP_ALIVE_TIMEOUT_MS configure, instead of being held forever.
 */
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { createUserAndToken, startTestApp, type TestContext, type TestUser } from '../helpers.js';
import { sleep } from '../process.js';

const REQUEST_TIMEOUT_MS = 2_000;
const KEEP_ALIVE_TIMEOUT_MS = 1_000;
/**
 * The most any of these connections may live: the configured timeout, Node's check interval
 * (a quarter of it) and a generous allowance for a busy machine. Held forever would fail.
 */
const HOLD_LIMIT_MS = 20_000;

let ctx: TestContext;
let port: number;
let user: TestUser;

beforeAll(async () => {
  ctx = await startTestApp({
    REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
    KEEP_ALIVE_TIMEOUT_MS: String(KEEP_ALIVE_TIMEOUT_MS),
  });
  await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const address = ctx.app.server.address();
  if (address === null || typeof address === 'string') throw new Error('no port assigned');
  port = address.port;
  user = await createUserAndToken();
}, 120_000);

afterAll(async () => {
  await ctx?.close();
});

interface RawConnection {
  socket: Socket;
  /** Everything the server sent so far. */
  received(): string;
  /** Resolves with the milliseconds from connect until the server closed the connection. */
  closed: Promise<number>;
  isClosed(): boolean;
}

async function openConnection(): Promise<RawConnection> {
  const socket = connect({ host: '127.0.0.1', port });
  await once(socket, 'connect');
  const openedAt = Date.now();
  let data = '';
  let isClosed = false;
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    data += chunk;
  });
  // A reset is a close too; only the fact and the moment matter here.
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => {
    socket.once('close', () => {
      isClosed = true;
      resolve(Date.now() - openedAt);
    });
  });
  return { socket, received: () => data, closed, isClosed: () => isClosed };
}

/** Waits for the server to close the connection, failing the test at HOLD_LIMIT_MS. */
async function expectClosedByServer(connection: RawConnection): Promise<number> {
  const outcome = await Promise.race([
    connection.closed,
    sleep(HOLD_LIMIT_MS).then(() => 'still open' as const),
  ]);
  connection.socket.destroy();
  expect(outcome, `the server held the connection for ${HOLD_LIMIT_MS} ms`).not.toBe('still open');
  return typeof outcome === 'number' ? outcome : HOLD_LIMIT_MS;
}

const firstLine = (text: string) => (text === '' ? 'none' : (text.split('\r\n')[0] ?? ''));

/** The status line and the body of a raw HTTP/1.1 answer. */
function parseAnswer(received: string): { status: number; body: unknown } {
  const status = Number(/^HTTP\/1\.1 (\d{3}) /.exec(received)?.[1] ?? 0);
  const text = received.slice(received.indexOf('\r\n\r\n') + 4);
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // left as text: the assertion shows it
  }
  return { status, body };
}

/** Nothing but a timeout may have been said: no answer at all, or a 408 with a JSON detail. */
function expectNoAnswerOr408(received: string) {
  if (received === '') return;
  expect(parseAnswer(received)).toEqual({ status: 408, body: { detail: expect.any(String) } });
}

describe('slow clients', () => {
  it('when a client sends its headers one byte per second, then the server cuts it off (408 or close) instead of waiting', async () => {
    const connection = await openConnection();
    const request = `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ${'a'.repeat(100)}\r\n\r\n`;
    const trickle = (async () => {
      for (const byte of request) {
        if (connection.isClosed()) return;
        connection.socket.write(byte);
        await sleep(1_000);
      }
    })();
    const heldFor = await expectClosedByServer(connection);
    await trickle;
    expectNoAnswerOr408(connection.received());
    console.log(
      `slow headers: closed after ${heldFor} ms (REQUEST_TIMEOUT_MS=${REQUEST_TIMEOUT_MS}), answer: ${firstLine(connection.received())}`,
    );
  }, 60_000);

  it('when a client announces Content-Length 100 and sends 10 bytes, then the server answers 408 or closes instead of waiting', async () => {
    const connection = await openConnection();
    const head = [
      'POST /api/tasks HTTP/1.1',
      'Host: 127.0.0.1',
      `Authorization: Bearer ${user.token}`,
      'Content-Type: application/json',
      'Content-Length: 100',
      '',
      '',
    ].join('\r\n');
    connection.socket.write(`${head}{"title":"`);
    const heldFor = await expectClosedByServer(connection);
    expectNoAnswerOr408(connection.received());
    console.log(
      `short body: closed after ${heldFor} ms (REQUEST_TIMEOUT_MS=${REQUEST_TIMEOUT_MS}), answer: ${firstLine(connection.received())}`,
    );
  }, 60_000);

  it('when a client connects and sends nothing, then the server closes the connection', async () => {
    const connection = await openConnection();
    await expectClosedByServer(connection);
    expectNoAnswerOr408(connection.received());
  }, 60_000);

  it('when a keep-alive connection stays idle after a response, then the server closes it after the keep-alive timeout', async () => {
    const connection = await openConnection();
    connection.socket.write(
      'GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n',
    );
    const deadline = Date.now() + HOLD_LIMIT_MS;
    while (!connection.received().includes('{"status":"ok"}') && Date.now() < deadline) {
      await sleep(20);
    }
    expect(connection.received()).toMatch(/^HTTP\/1\.1 200 /);
    expect(connection.received().toLowerCase()).toContain(
      `keep-alive: timeout=${KEEP_ALIVE_TIMEOUT_MS / 1000}`,
    );
    await expectClosedByServer(connection);
  }, 60_000);
});

describe('malformed HTTP', () => {
  it('when the request line is not HTTP, then the answer is 400 with a JSON detail and the connection closes', async () => {
    const connection = await openConnection();
    connection.socket.write('THIS IS NOT HTTP\r\n\r\n');
    await expectClosedByServer(connection);
    expect(parseAnswer(connection.received())).toEqual({
      status: 400,
      body: { detail: expect.any(String) },
    });
  }, 60_000);

  it('when the headers exceed 16 KiB, then the answer is 431 with a JSON detail and the connection closes', async () => {
    const connection = await openConnection();
    connection.socket.write(
      `GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(20 * 1024)}\r\n\r\n`,
    );
    await expectClosedByServer(connection);
    expect(parseAnswer(connection.received())).toEqual({
      status: 431,
      body: { detail: expect.any(String) },
    });
  }, 60_000);
});

describe('timeout configuration', () => {
  it('when REQUEST_TIMEOUT_MS is not a whole number, then loading the configuration names it', () => {
    expect(() =>
      loadConfig({
        NODE_ENV: 'test',
        BETTER_AUTH_SECRET: 'x'.repeat(32),
        REQUEST_TIMEOUT_MS: '2s',
      }),
    ).toThrow(/REQUEST_TIMEOUT_MS/);
  });

  it('when the timeouts are not set, then requests get 30 s and idle keep-alive connections 5 s', () => {
    const config = loadConfig({ NODE_ENV: 'test', BETTER_AUTH_SECRET: 'x'.repeat(32) });
    expect(config.http).toEqual({
      requestTimeoutMs: 30_000,
      keepAliveTimeoutMs: 5_000,
      maxActiveRequests: 64,
    });
  });
});
