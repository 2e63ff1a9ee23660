/**
 * The ceiling PGlite itself sets on list 20: the service's own list (the production build's
 * repository, row-level security on) called in a process of its own, one at a time, on the
 * run's seeded PGlite directory, with no HTTP, authentication or logging around it. PGlite runs
 * one query at a time in the thread that calls it, so this is the most list requests per second
 * any server on PGlite could answer on this machine; `npm run bench -- --pglite` prints it
 * beside the service's figure. The process gets the node options of `npm start`, as the
 * service does (they decide how V8 compiles PGlite's WebAssembly).
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import type * as Client from '../src/db/client.js';
import type * as Repository from '../src/tasks/tasks.repository.js';
import { READERS, readerId, TASKS_PER_USER } from './fixtures.js';
import { startScriptNodeOptions } from '../test/start-script.js';

const pgliteAloneResult = z.object({
  seconds: z.number(),
  lists: z.number(),
  listsPerSecond: z.number(),
  /** CPU time of the measuring process (user + system) per list. */
  cpuUsPerList: z.number(),
});

export type PgliteAloneResult = z.infer<typeof pgliteAloneResult>;

async function measureHere(dir: string, seconds: number): Promise<PgliteAloneResult> {
  // The compiled build users run (npm run build), typed by the sources it is compiled from.
  const { createDatabase } = (await import(
    new URL('../dist/db/client.js', import.meta.url).href
  )) as typeof Client;
  const { createTasksRepository } = (await import(
    new URL('../dist/tasks/tasks.repository.js', import.meta.url).href
  )) as typeof Repository;

  const database = createDatabase({ kind: 'pglite', dir }, (error) => {
    throw error;
  });
  try {
    const repository = createTasksRepository(database);
    const query = { status: 'all', sort: 'created', offset: 0 } as const;
    const listOf = async (n: number) => {
      const page = await repository.list(readerId((n % READERS) + 1), query);
      if (page.tasks.length !== TASKS_PER_USER) {
        throw new Error(`PGlite alone: a reader's list had ${page.tasks.length} tasks`);
      }
    };
    // Warm-up: the JIT, and PGlite's caches of the tables and plans.
    for (let n = 0; n < 500; n++) await listOf(n);

    let lists = 0;
    const cpuBefore = process.cpuUsage();
    const started = performance.now();
    const until = started + seconds * 1000;
    while (performance.now() < until) await listOf(lists++);
    const elapsedSeconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpuBefore);
    return {
      seconds: elapsedSeconds,
      lists,
      listsPerSecond: lists / elapsedSeconds,
      cpuUsPerList: (cpu.user + cpu.system) / lists,
    };
  } finally {
    await database.close();
  }
}

export function describePgliteAlone(result: PgliteAloneResult): string {
  return `${result.listsPerSecond.toFixed(0)} lists/s, CPU ${result.cpuUsPerList.toFixed(0)} µs/list`;
}

const THIS_FILE = fileURLToPath(import.meta.url);

/** Runs the measurement in a child process started as the service is (see above). */
export async function measurePgliteAlone(dir: string, seconds: number): Promise<PgliteAloneResult> {
  const child = spawn(
    process.execPath,
    [
      ...startScriptNodeOptions(),
      '--import',
      import.meta.resolve('tsx'),
      THIS_FILE,
      dir,
      String(seconds),
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let output = '';
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    output += chunk;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  });
  if (code !== 0) throw new Error(`PGlite alone: the measuring process exited with ${code}`);
  return pgliteAloneResult.parse(JSON.parse(output));
}

if (process.argv[1] === THIS_FILE) {
  const [dir, seconds] = process.argv.slice(2);
  if (dir === undefined || seconds === undefined)
    throw new Error('usage: pglite-alone <dir> <seconds>');
  process.stdout.write(`${JSON.stringify(await measureHere(dir, Number(seconds)))}\n`);
}
