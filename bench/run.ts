/**
 * `npm run bench`: the production build under load, beside a hand-written reference server,
 * on a fresh seeded database. Options and scenarios: bench/README.md.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  type BenchDatabase,
  createBenchDatabase,
  migrateAndSeed,
  serverVersion,
} from './database.js';
import {
  BIG_USER_TASKS,
  createPopulation,
  type Population,
  READERS,
  type RequestPlan,
  requestPlans,
  TASKS_PER_USER,
  WRITERS,
} from './fixtures.js';
import { type LoadSpec, runLoad } from './load.js';
import { describePgliteAlone, measurePgliteAlone, type PgliteAloneResult } from './pglite-alone.js';
import { type BenchPgBouncer, startPgBouncer } from './pgbouncer.js';
import {
  checkTargets,
  formatRatio,
  formatTable,
  formatTargets,
  type Ratio,
  type ScenarioRecord,
  type SoakRecord,
  soakRecord,
  type Target,
  throughputRatio,
} from './report.js';
import { freePort, type RunningServer, startReference, startService } from './servers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));
const SCENARIOS = [
  'list20',
  'create',
  'rls',
  'toggle',
  'mix',
  'open',
  'closed',
  'cap',
  'page50',
] as const;
type ScenarioId = (typeof SCENARIOS)[number];
/** Load before measuring in the 1 000-connection scenarios: connecting is not serving. */
const RAMP_UP_SECONDS = 2;

const USAGE = `npm run bench -- [options]

  --quick                 short runs (about 3 minutes in all)
  --duration <s>          seconds per 64-connection scenario (default 10; 4 with --quick)
  --open-duration <s>     seconds of the fixed-rate 1 000-connection scenario (default 60; 15 with --quick)
  --rounds <n>            alternations of service and reference (and of the RLS pair); each ratio
                          is the median of its alternations (default 5; 3 with --quick)
  --soak                  add the soak: mixed load at a fixed rate, RSS every 10 s
  --soak-duration <s>     length of the soak (default 600)
  --pglite                run the service on PGlite (no reference server then)
  --connections <n>       connections of the throughput scenarios (default 64)
  --open-connections <n>  connections of the 1 000-connection scenarios (default 1000)
  --open-rate <n>         offered req/s of the open-loop scenario (default 2000)
  --pool <n>              DATABASE_POOL_MAX of the service and pool size of the reference (default 10)
  --workers <n>           WEB_CONCURRENCY of the service, with the local Redis when above 1 (default 1)
  --pgbouncer             the service reaches PostgreSQL through a private PgBouncer in transaction
                          pooling mode (--pool server connections), as on Neon's pooled endpoint
  --only <ids>            comma-separated subset of: ${SCENARIOS.join(', ')}
  --log-file <path>       where the service's log lines go (default /dev/null)
  --env <NAME=value>      extra environment of the service, e.g. --env LOG_LEVEL=warn (repeatable)
  --database-url <url>    PostgreSQL server to create the scratch database on
                          (default $BENCH_DATABASE_URL or postgres://postgres@127.0.0.1:5432/postgres)
  --no-build              skip npm run build (dist/ must be current)
  --profile               write a CPU profile of the service to bench/results/profiles/
`;

function parseOptions(argv: string[]) {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      'open-duration': { type: 'string' },
      rounds: { type: 'string' },
      soak: { type: 'boolean', default: false },
      'soak-duration': { type: 'string' },
      pglite: { type: 'boolean', default: false },
      connections: { type: 'string' },
      'open-connections': { type: 'string' },
      'open-rate': { type: 'string' },
      pool: { type: 'string' },
      pgbouncer: { type: 'boolean', default: false },
      workers: { type: 'string' },
      only: { type: 'string' },
      'log-file': { type: 'string' },
      env: { type: 'string', multiple: true },
      'database-url': { type: 'string' },
      'no-build': { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const count = (name: string, raw: string | undefined, fallback: number) => {
    if (raw === undefined) return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < 1) {
      process.stderr.write(`bench: --${name} must be a whole number >= 1\n`);
      process.exit(2);
    }
    return value;
  };
  const only = (values.only ?? SCENARIOS.join(',')).split(',').map((id) => id.trim());
  for (const id of only) {
    if (!(SCENARIOS as readonly string[]).includes(id)) {
      process.stderr.write(`bench: unknown scenario "${id}" in --only\n${USAGE}`);
      process.exit(2);
    }
  }
  const workers = count('workers', values.workers, 1);
  if (workers > 1 && values.pglite) {
    process.stderr.write(
      'bench: --workers above 1 needs PostgreSQL (PGlite is one process only)\n',
    );
    process.exit(2);
  }
  if (values.pgbouncer && values.pglite) {
    process.stderr.write('bench: --pgbouncer needs PostgreSQL\n');
    process.exit(2);
  }
  return {
    quick: values.quick,
    duration: count('duration', values.duration, values.quick ? 4 : 10),
    openDuration: count('open-duration', values['open-duration'], values.quick ? 15 : 60),
    rounds: count('rounds', values.rounds, values.quick ? 3 : 5),
    soak: values.soak,
    soakDuration: count('soak-duration', values['soak-duration'], 600),
    kind: values.pglite ? ('pglite' as const) : ('postgres' as const),
    connections: count('connections', values.connections, 64),
    openConnections: count('open-connections', values['open-connections'], 1000),
    openRate: count('open-rate', values['open-rate'], 2000),
    pool: count('pool', values.pool, 10),
    workers,
    pgbouncer: values.pgbouncer,
    only: new Set(only as ScenarioId[]),
    logFile: values['log-file'] ?? '/dev/null',
    serviceEnv: Object.fromEntries(
      (values.env ?? []).map((pair) => {
        const equals = pair.indexOf('=');
        if (equals < 1) {
          process.stderr.write(`bench: --env takes NAME=value, not "${pair}"\n`);
          process.exit(2);
        }
        return [pair.slice(0, equals), pair.slice(equals + 1)];
      }),
    ),
    adminUrl:
      values['database-url'] ??
      process.env.BENCH_DATABASE_URL ??
      'postgres://postgres@127.0.0.1:5432/postgres',
    build: !values['no-build'],
    profile: values.profile,
  };
}

type Options = ReturnType<typeof parseOptions>;

/** The results file may be shared: no password from --database-url goes into it. */
function withoutPassword(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(unparsable)';
  }
}

const say = (line: string) => process.stderr.write(`${line}\n`);

function build() {
  say('bench: npm run build');
  const result = spawnSync('npm', ['run', 'build'], { cwd: ROOT, stdio: ['ignore', 2, 2] });
  if (result.status !== 0) throw new Error('npm run build failed');
}

/** One request of each kind through fetch: a bench of 401s or empty lists measures nothing. */
async function smokeTest(server: RunningServer, population: Population, full: boolean) {
  const [reader] = population.readerTokens;
  const [writer] = population.writerTokens;
  const [toggled] = population.writerTasks;
  if (!reader || !writer || !toggled) throw new Error('smoke test: empty population');
  const call = async (path: string, token: string, init: RequestInit = {}) => {
    const response = await fetch(`${server.baseUrl}${path}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    });
    return { status: response.status, body: (await response.json()) as unknown, response };
  };
  const fail = (what: string, detail: unknown) => {
    throw new Error(`${server.name} smoke test: ${what}: ${JSON.stringify(detail).slice(0, 300)}`);
  };

  const list = await call('/api/tasks', reader);
  if (list.status !== 200 || !Array.isArray(list.body) || list.body.length !== TASKS_PER_USER) {
    fail(`GET /api/tasks should be ${TASKS_PER_USER} tasks`, list);
  }
  const created = await call('/api/tasks', writer, {
    method: 'POST',
    body: JSON.stringify({ title: 'Smoke test' }),
  });
  if (created.status !== 201) fail('POST /api/tasks should be 201', created.body);
  if (!full) return;
  const patched = await fetch(`${server.baseUrl}/api/tasks/${toggled.id}/complete`, {
    method: 'PATCH',
    headers: { authorization: `Bearer ${population.writerTokens[toggled.writer - 1] ?? ''}` },
  });
  if (patched.status !== 200) fail('PATCH …/complete should be 200', await patched.text());
  const page = await call('/api/tasks?limit=50', population.bigUserToken);
  const total = page.response.headers.get('x-total-count');
  if (!Array.isArray(page.body) || page.body.length !== 50 || total !== String(BIG_USER_TASKS)) {
    fail(`the big user's page should be 50 of ${BIG_USER_TASKS}`, { total, status: page.status });
  }
}

/**
 * Waits until the server has worked off what the last scenario left behind, then a second
 * more for sockets to close. Requests already read when the load generator stopped are still
 * answered (to closed sockets): after 1 000 connections of whole lists, PGlite needed about
 * 15 s for them, and a scenario started meanwhile measured the queue. The service's `/ready`
 * asks the database, so it answers only once the requests ahead of it are done.
 */
async function settle(server: RunningServer) {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    try {
      const response = await fetch(`${server.baseUrl}${server.readyPath}`, {
        signal: AbortSignal.timeout(5_000),
      });
      await response.arrayBuffer();
      if (response.status === 200) break;
    } catch {
      // still busy
    }
    await sleep(250);
  }
  await sleep(1000);
}

function machine() {
  const cpus = os.cpus();
  return {
    cpu: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    memoryGb: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    loadAverageAtStart: os.loadavg().map((value) => Math.round(value * 100) / 100),
  };
}

async function main(options: Options) {
  const startedAt = new Date();
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`;
  const records: ScenarioRecord[] = [];
  let soak: SoakRecord | null = null;
  const servers: RunningServer[] = [];
  let database: BenchDatabase | undefined;
  let bouncer: BenchPgBouncer | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanUp = () => {
    cleaned ??= (async () => {
      for (const server of servers.splice(0)) await server.stop().catch(() => undefined);
      if (bouncer) {
        await bouncer
          .stop()
          .catch((error: unknown) => say(`bench: pgbouncer stop failed: ${String(error)}`));
      }
      if (database) {
        say('bench: dropping the scratch database');
        await database
          .drop()
          .catch((error: unknown) => say(`bench: drop failed: ${String(error)}`));
      }
    })();
    return cleaned;
  };
  const interrupted = () => {
    say('bench: interrupted; stopping servers');
    void cleanUp().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  const host = machine();
  say(
    `bench: ${host.cores} × ${host.cpu}, load average ${host.loadAverageAtStart.join(' ')}${host.loadAverageAtStart[0] !== undefined && host.loadAverageAtStart[0] > host.cores / 2 ? ' (busy machine: compare ratios, not absolute figures)' : ''}`,
  );
  try {
    if (options.build) build();
    const databaseVersion =
      options.kind === 'postgres'
        ? `PostgreSQL ${await serverVersion(options.adminUrl)}`
        : 'PGlite';
    database = await createBenchDatabase(options.kind, options.adminUrl);
    say(
      `bench: migrating and seeding ${databaseVersion}: ${READERS + WRITERS} users × ${TASKS_PER_USER} tasks, one user × ${BIG_USER_TASKS}`,
    );
    const seedStarted = performance.now();
    const writerTasks = await migrateAndSeed(database);
    say(`bench: seeded in ${((performance.now() - seedStarted) / 1000).toFixed(1)} s`);
    // Seeding went straight to the server; the service goes through the bouncer. The
    // reference stays direct: its named prepared statements need a session of their own.
    if (options.pgbouncer) {
      bouncer = await startPgBouncer(options.adminUrl, options.pool);
      say(`bench: the service reaches PostgreSQL through PgBouncer (transaction pooling)`);
    }
    const serviceDatabaseUrl =
      bouncer && database.url !== undefined ? bouncer.urlFor(database.url) : database.url;

    const secret = randomBytes(32).toString('base64url');
    const lifetime = 7200 + (options.soak ? options.soakDuration : 0);
    const population = createPopulation(secret, lifetime, writerTasks);
    const plans = requestPlans(population);

    const serviceOptions = {
      databaseUrl: serviceDatabaseUrl,
      pgliteDir: database.pgliteDir,
      secret,
      port: await freePort(),
      logPath: options.logFile,
      // Debian's PgBouncer 1.18 cannot keep prepared statements in transaction mode: the
      // service is configured as its README says for such a pooler.
      extraEnv: {
        ...(options.pgbouncer ? { DATABASE_PREPARED_STATEMENTS: 'false' } : {}),
        ...options.serviceEnv,
      },
      poolMax: options.kind === 'postgres' ? options.pool : undefined,
      workers: options.workers,
      cpuProfileDir: options.profile ? `${RESULTS_DIR}profiles` : undefined,
    };
    const service = await startService(serviceOptions);
    servers.push(service);
    await smokeTest(service, population, true);
    let reference: RunningServer | undefined;
    if (database.url !== undefined) {
      reference = await startReference({
        databaseUrl: database.url,
        secret,
        port: await freePort(),
        poolMax: options.pool,
      });
      servers.push(reference);
      await smokeTest(reference, population, false);
    }

    // Every user once, as in steady state: the service meets each token's user on its first
    // request (a user upsert) and remembers it; the first measured run must not pay for that.
    const meetEveryone = async (server: RunningServer) => {
      const tokens = [
        ...population.readerTokens,
        ...population.writerTokens,
        population.bigUserToken,
      ];
      say(`bench: one list request for each of ${tokens.length} users on ${server.name}`);
      await Promise.all(
        Array.from({ length: 16 }, async (_, worker) => {
          for (let i = worker; i < tokens.length; i += 16) {
            const response = await fetch(`${server.baseUrl}/api/tasks?limit=1`, {
              headers: { authorization: `Bearer ${tokens[i] ?? ''}` },
            });
            await response.arrayBuffer();
          }
        }),
      );
    };
    await meetEveryone(service);
    const warmUp = async (server: RunningServer) => {
      // Long enough for the JIT: with 1 s, the first measured round of the service ran about
      // a third slower than the second, which skewed the first service/reference pair.
      const seconds = options.quick ? 3 : 5;
      say(`bench: warming up ${server.name} (${seconds} s list, ${seconds} s create)`);
      for (const plan of [plans.list20, plans.create]) {
        await runLoad(server, { connections: options.connections, durationSeconds: seconds, plan });
      }
    };
    await warmUp(service);
    if (reference) await warmUp(reference);

    const measure = async (
      id: ScenarioId | 'soak',
      label: string,
      target: Target,
      server: RunningServer,
      spec: LoadSpec,
    ) => {
      say(
        `bench: ${label} on ${target} (${spec.connections} connections, ${spec.durationSeconds} s)`,
      );
      const result = await runLoad(server, { ...spec, databaseCpu: options.kind === 'postgres' });
      const record: ScenarioRecord = { id, label, target, ...result };
      records.push(record);
      say(
        `       ${result.requestsPerSecond.toFixed(0)} req/s, p50 ${result.latencyMs.p50.toFixed(1)} ms, p95 ${result.latencyMs.p95.toFixed(1)} ms, p99 ${result.latencyMs.p99.toFixed(1)} ms, ${result.errors} errors, ${result.timeouts} timeouts, RSS ${result.rssMaxMb?.toFixed(0) ?? 'n/a'} MB, CPU µs/response ${result.cpuUsPerResponse.server?.toFixed(0) ?? 'n/a'} server + ${result.cpuUsPerResponse.database?.toFixed(0) ?? 'n/a'} database, steal ${result.stealPercent?.toFixed(1) ?? 'n/a'} %`,
      );
      await settle(server);
      return record;
    };
    const closedLoop = (plan: RequestPlan, connections = options.connections): LoadSpec => ({
      connections,
      durationSeconds: options.duration,
      plan,
    });

    // Throughput beside the reference, alternating service and reference.
    for (const [id, label, plan] of [
      ['list20', 'list 20', plans.list20],
      ['create', 'create', plans.create],
    ] as const) {
      if (!options.only.has(id)) continue;
      for (let round = 0; round < options.rounds; round++) {
        await measure(id, label, 'service', service, closedLoop(plan));
        if (reference) await measure(id, label, 'reference', reference, closedLoop(plan));
      }
    }
    // The machine's own ceiling at the open-loop rate: the reference, offered the same rate
    // from as many connections, answers whether a miss there is the service's or the machine's.
    const openLoop = (plan: RequestPlan): LoadSpec => ({
      connections: options.openConnections,
      durationSeconds: options.openDuration,
      overallRate: options.openRate,
      rampUpSeconds: RAMP_UP_SECONDS,
      plan,
    });
    if (reference && options.only.has('open')) {
      await measure(
        'open',
        'list/create, fixed rate',
        'reference',
        reference,
        openLoop(plans.referenceMix),
      );
    }
    if (reference) {
      await reference.stop();
      servers.splice(servers.indexOf(reference), 1);
    }

    // What row-level security costs: list 20 on the same build with it off, alternated.
    if (options.only.has('rls') && options.kind === 'postgres' && options.workers === 1) {
      const withoutRls = await startService({
        ...serviceOptions,
        port: await freePort(),
        cpuProfileDir: undefined,
        withoutRowLevelSecurity: true,
      });
      servers.push(withoutRls);
      await smokeTest(withoutRls, population, false);
      await meetEveryone(withoutRls);
      await warmUp(withoutRls);
      for (let round = 0; round < options.rounds; round++) {
        await measure('rls', 'list 20', 'service', service, closedLoop(plans.list20));
        await measure('rls', 'list 20', 'no RLS', withoutRls, closedLoop(plans.list20));
      }
      await withoutRls.stop();
      servers.splice(servers.indexOf(withoutRls), 1);
    }

    if (options.only.has('toggle')) {
      await measure('toggle', 'toggle', 'service', service, closedLoop(plans.toggle));
    }
    if (options.only.has('mix')) {
      await measure('mix', 'mix 80/20', 'service', service, closedLoop(plans.mix));
    }
    if (options.only.has('open')) {
      await measure('open', 'mix, fixed rate', 'service', service, openLoop(plans.mix));
    }
    if (options.only.has('closed')) {
      await measure('closed', 'mix, closed loop', 'service', service, {
        ...closedLoop(plans.mix, options.openConnections),
        rampUpSeconds: RAMP_UP_SECONDS,
      });
    }
    if (options.only.has('cap')) {
      // Every connection at once asks for the most one list answers: memory under the
      // heaviest reads, and whether any of them is refused or times out.
      await measure('cap', 'whole list of 1 000', 'service', service, {
        ...closedLoop(plans.wholeBig, options.openConnections),
        rampUpSeconds: RAMP_UP_SECONDS,
      });
    }
    let pageRatio: number | null = null;
    if (options.only.has('page50')) {
      // Few connections: the latency of one request, not of a queue.
      const small = await measure('page50', 'page 50, 20-task user', 'service', service, {
        ...closedLoop(plans.page50Small, 8),
      });
      const big = await measure('page50', 'page 50, 100k-task user', 'service', service, {
        ...closedLoop(plans.page50Big, 8),
      });
      pageRatio = big.latencyMs.p50 / small.latencyMs.p50;
    }

    if (options.soak) {
      const samples: { seconds: number; rssMb: number }[] = [];
      await measure('soak', 'soak: mix, fixed rate', 'service', service, {
        connections: 256,
        durationSeconds: options.soakDuration,
        overallRate: Math.max(1, Math.floor(options.openRate / 2)),
        rampUpSeconds: RAMP_UP_SECONDS,
        plan: plans.mix,
        onRssTick: {
          everySeconds: 10,
          record: (seconds, rssMb) => samples.push({ seconds, rssMb }),
        },
      });
      soak = soakRecord(options.soakDuration, samples);
    }

    let pgliteAlone: PgliteAloneResult | null = null;
    if (options.kind === 'pglite' && options.only.has('list20') && database.pgliteDir) {
      // PGlite holds its directory exclusively: the service lets go of it first.
      await service.stop();
      servers.splice(servers.indexOf(service), 1);
      say(
        `bench: list 20 on PGlite alone, in a process started as the service is (${options.duration} s)`,
      );
      pgliteAlone = await measurePgliteAlone(database.pgliteDir, options.duration);
      say(`       ${describePgliteAlone(pgliteAlone)}`);
    }

    const ratios: Ratio[] = (
      [
        ['list20', 'list 20 service/reference'],
        ['create', 'create service/reference'],
      ] as const
    )
      .filter(([id]) => records.some((record) => record.id === id))
      .map(([id, name]) => throughputRatio(records, id, name));
    const rlsRatio = records.some((record) => record.id === 'rls')
      ? throughputRatio(records, 'rls', 'list 20 service/no RLS', 'no RLS')
      : null;
    const targets = checkTargets({
      records,
      ratios,
      rlsRatio,
      pageRatio,
      soak,
      pgliteAlone,
      databaseKind: options.kind,
    });

    const finishedAt = new Date();
    const summary = [
      '',
      `${command}  (${databaseVersion}; ${host.cores} × ${host.cpu}; ${host.memoryGb} GB; Node ${host.node})`,
      '',
      formatTable(records),
      '',
      ...ratios.map(formatRatio),
      ...(rlsRatio ? [formatRatio(rlsRatio)] : []),
      ...(pageRatio === null
        ? []
        : [`page 50, 100k-task user / 20-task user (p50): ${pageRatio.toFixed(2)}`]),
      ...(pgliteAlone
        ? [
            `list 20 on PGlite alone (the service's list called directly, no HTTP): ${describePgliteAlone(pgliteAlone)}`,
          ]
        : []),
      ...(soak
        ? [
            `soak: RSS ${soak.samples.map((sample) => sample.rssMb.toFixed(0)).join(' ')} MB; growth from ${soak.countedFromSeconds ?? 0} s: ${soak.growthPercent?.toFixed(1) ?? 'n/a'} %`,
          ]
        : []),
      '',
      'Targets (issue 6):',
      formatTargets(targets),
      '',
    ].join('\n');
    process.stdout.write(summary);

    mkdirSync(RESULTS_DIR, { recursive: true });
    const file = `${RESULTS_DIR}${startedAt
      .toISOString()
      .replaceAll(':', '-')
      .replace(/\.\d+Z$/, 'Z')}.json`;
    writeFileSync(
      file,
      `${JSON.stringify(
        {
          command,
          startedAt: startedAt.toISOString(),
          finishedAt: finishedAt.toISOString(),
          machine: {
            ...host,
            loadAverageAtEnd: os.loadavg().map((value) => Math.round(value * 100) / 100),
          },
          database: databaseVersion,
          options: {
            ...options,
            adminUrl: withoutPassword(options.adminUrl),
            only: [...options.only],
          },
          scenarios: records,
          ratios,
          pageLatencyRatio: pageRatio,
          pgliteAlone,
          soak,
          targets,
        },
        null,
        2,
      )}\n`,
    );
    say(
      `bench: wrote ${file} (${((finishedAt.getTime() - startedAt.getTime()) / 1000).toFixed(0)} s in all)`,
    );
  } finally {
    await cleanUp();
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
}

main(parseOptions(process.argv.slice(2))).catch((error: unknown) => {
  say(`bench: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
});
