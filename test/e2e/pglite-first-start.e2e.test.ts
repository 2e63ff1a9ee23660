/**
 * `npm start` on a new machine: the first start creates the PGlite database in PGLITE_DIR.
 * initdb grows PGlite's WebAssembly memory to about 600 MB, which is never given back, so the
 * server creates the database in a child process (src/db/pglite-cluster.ts); before, the first
 * start held about 730 MB of RSS until restarted, every later one about 260 MB.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createUserAndToken, type TestUser } from '../helpers.js';
import { killLeftovers, type LogLine, type ServerProcess, startServer } from '../process.js';

interface Start {
  rssBytes: number;
  created: LogLine[];
}

const CREATED = 'created a new PGlite database';

let dir: string;
let user: TestUser;
let first: Start;
let second: Start;
let listed: { id: number; title: string }[];

/** Resident memory of the server process, from /proc (Linux, as CI and production run). */
async function rssOf(server: ServerProcess): Promise<number> {
  const status = await readFile(`/proc/${String(server.child.pid)}/status`, 'utf8');
  const kilobytes = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
  if (kilobytes === undefined) throw new Error('no VmRSS in /proc/<pid>/status');
  return Number(kilobytes) * 1024;
}

async function startOn(
  directory: string,
  whileRunning: (server: ServerProcess) => Promise<void>,
): Promise<Start> {
  const server = await startServer({ env: { PGLITE_DIR: directory }, startupLimitMs: 120_000 });
  try {
    const ready = await fetch(`${server.baseUrl}/ready`);
    expect(ready.status).toBe(200);
    const rssBytes = await rssOf(server);
    await whileRunning(server);
    return { rssBytes, created: server.logLines().filter((line) => line.msg === CREATED) };
  } finally {
    await server.stop();
  }
}

beforeAll(async () => {
  dir = join(await mkdtemp(join(tmpdir(), 'todo-first-start-')), 'data');
  user = await createUserAndToken();
  first = await startOn(dir, async (server) => {
    const created = await fetch(`${server.baseUrl}/api/${user.id}/tasks`, {
      method: 'POST',
      headers: { ...user.headers, 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'made on the first start' }),
    });
    expect(created.status).toBe(201);
  });
  second = await startOn(dir, async (server) => {
    const response = await fetch(`${server.baseUrl}/api/${user.id}/tasks`, {
      headers: user.headers,
    });
    expect(response.status).toBe(200);
    listed = (await response.json()) as { id: number; title: string }[];
  });
}, 300_000);

afterAll(async () => {
  killLeftovers();
  if (dir !== undefined) await rm(join(dir, '..'), { recursive: true, force: true });
}, 60_000);

describe('the first start on a new PGlite directory', () => {
  it('when PGLITE_DIR does not exist yet, then the server creates the database there and says so once', () => {
    expect(first.created).toHaveLength(1);
    expect(first.created[0]?.dir).toBe(dir);
    expect(second.created).toEqual([]);
  });

  it('when the server restarts, then what the first start stored is still there', () => {
    expect(listed.map((task) => task.title)).toEqual(['made on the first start']);
  });

  it('when the database was just created, then the server holds no more memory than on a later start', () => {
    // initdb's 600 MB in the server's own process made the first start about 2.8 × a later one.
    expect(first.rssBytes).toBeLessThan(1.5 * second.rssBytes);
  });
});
