import { createHmac } from 'node:crypto';
import type autocannon from 'autocannon';

/**
 * The seeded population and the requests made of it. Readers are only read, writers only
 * written, so "list 20" keeps returning 20 tasks however many creates ran before it.
 */
export const READERS = 500;
export const WRITERS = 500;
export const TASKS_PER_USER = 20;
export const BIG_USER_TASKS = 100_000;

export const readerId = (n: number) => `bench_r_${n}`;
export const writerId = (n: number) => `bench_w_${n}`;
export const BIG_USER_ID = 'bench_big';

/** Requests each connection cycles through; connections start at different users. */
const REQUESTS_PER_CONNECTION = 20;

function base64url(value: string | Buffer): string {
  return Buffer.from(value).toString('base64url');
}

/** An HS256 token as a front end holding BETTER_AUTH_SECRET mints it (SPEC §4, mode 3). */
export function signToken(secret: string, sub: string, lifetimeSeconds: number): string {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const payload = base64url(JSON.stringify({ sub, iat: now, exp: now + lifetimeSeconds }));
  const signature = createHmac('sha256', secret).update(`${header}.${payload}`).digest('base64url');
  return `${header}.${payload}.${signature}`;
}

export interface Population {
  readerTokens: string[];
  writerTokens: string[];
  bigUserToken: string;
  /** Seeded tasks of the writers, with the index of their owner in writerTokens. */
  writerTasks: { id: number; writer: number }[];
}

export function createPopulation(
  secret: string,
  lifetimeSeconds: number,
  writerTasks: Population['writerTasks'],
): Population {
  const tokens = (count: number, id: (n: number) => string) =>
    Array.from({ length: count }, (_, i) => signToken(secret, id(i + 1), lifetimeSeconds));
  return {
    readerTokens: tokens(READERS, readerId),
    writerTokens: tokens(WRITERS, writerId),
    bigUserToken: signToken(secret, BIG_USER_ID, lifetimeSeconds),
    writerTasks,
  };
}

/** The seed, as plain SQL run by the connection user (a superuser: no row-level security). */
export const SEED_STATEMENTS = [
  `insert into "user" (id, name, email)
   select 'bench_r_' || n, 'Bench reader ' || n, 'bench_r_' || n || '@bench.invalid'
   from generate_series(1, ${READERS}) as n`,
  `insert into "user" (id, name, email)
   select 'bench_w_' || n, 'Bench writer ' || n, 'bench_w_' || n || '@bench.invalid'
   from generate_series(1, ${WRITERS}) as n`,
  `insert into "user" (id, name, email) values ('${BIG_USER_ID}', 'Bench big user', 'bench_big@bench.invalid')`,
  `insert into task (user_id, title, description, completed, created_at, updated_at)
   select who.id, 'Task ' || t || ' of ' || who.id,
          case when t % 2 = 0 then 'Description of task ' || t end,
          t % 3 = 0, now() - (t * 3600 + who.n) * interval '1 second', now()
   from (select 'bench_r_' || n as id, n from generate_series(1, ${READERS}) as n
         union all
         select 'bench_w_' || n as id, n from generate_series(1, ${WRITERS}) as n) as who,
        generate_series(1, ${TASKS_PER_USER}) as t`,
  `insert into task (user_id, title, description, completed, created_at, updated_at)
   select '${BIG_USER_ID}', 'Big task ' || g, case when g % 2 = 0 then 'Description ' || g end,
          g % 3 = 0, now() - g * interval '1 second', now()
   from generate_series(1, ${BIG_USER_TASKS}) as g`,
  // A steady-state table, as autovacuum keeps it: statistics and the visibility map.
  'vacuum analyze',
];

export const WRITER_TASKS_QUERY = `select id, substr(user_id, 9)::int as writer from task where user_id like 'bench\\_w\\_%' order by id`;

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

const list = (token: string, query = ''): autocannon.Request => ({
  method: 'GET',
  path: `/api/tasks${query}`,
  headers: bearer(token),
});

const create = (token: string): autocannon.Request => ({
  method: 'POST',
  path: '/api/tasks',
  headers: { ...bearer(token), 'content-type': 'application/json' },
  body: JSON.stringify({ title: 'Bench task', description: 'Created by npm run bench' }),
});

const toggle = (token: string, id: number): autocannon.Request => ({
  method: 'PATCH',
  path: `/api/tasks/${id}/complete`,
  headers: bearer(token),
});

/** Builds one connection's request list from its index: users rotate across connections. */
export type RequestPlan = (connection: number) => autocannon.Request[];

function plan(build: (slot: number) => autocannon.Request): RequestPlan {
  return (connection) =>
    Array.from({ length: REQUESTS_PER_CONNECTION }, (_, k) =>
      build(connection * REQUESTS_PER_CONNECTION + k),
    );
}

function pick<T>(items: T[], slot: number): T {
  const item = items[slot % items.length];
  if (item === undefined) throw new Error('pick from an empty list');
  return item;
}

export function requestPlans(population: Population) {
  const reader = (slot: number) => pick(population.readerTokens, slot);
  const writer = (slot: number) => pick(population.writerTokens, slot);
  const toggleOf = (slot: number) => {
    const { id, writer: owner } = pick(population.writerTasks, slot);
    return toggle(pick(population.writerTokens, owner - 1), id);
  };
  return {
    list20: plan((slot) => list(reader(slot))),
    create: plan((slot) => create(writer(slot))),
    toggle: plan(toggleOf),
    /** 80 % reads, 20 % writes (half creates, half toggles). */
    mix: plan((slot) => {
      if (slot % 10 === 4) return create(writer(slot));
      if (slot % 10 === 9) return toggleOf(slot);
      return list(reader(slot));
    }),
    /** The mix for the reference, which has no toggle: 8 lists and 2 creates in every 10. */
    referenceMix: plan((slot) => (slot % 5 === 4 ? create(writer(slot)) : list(reader(slot)))),
    page50Small: plan((slot) => list(reader(slot), '?limit=50')),
    page50Big: plan(() => list(population.bigUserToken, '?limit=50')),
    /** The heaviest read: the big user's whole list, as far as the cap (1 000 tasks). */
    wholeBig: plan(() => list(population.bigUserToken)),
  } satisfies Record<string, RequestPlan>;
}
