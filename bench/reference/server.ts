/**
 * The measuring stick of `npm run bench`: the least a correct server can do for the list and
 * create of the tasks API. Fastify, a node-postgres pool with prepared statements, HS256
 * tokens verified by fast-jwt (with its verified-token cache), JSON Schema serialization.
 * No validation, logging, rate limits, metrics or row-level security. Never shipped or
 * imported by src/; started by bench/run.ts with:
 *
 *   DATABASE_URL=… JWT_SECRET=… PORT=… POOL_MAX=… node --import tsx bench/reference/server.ts
 */
import { createVerifier } from 'fast-jwt';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import pg from 'pg';

function required(name: string): string {
  const value = process.env[name];
  if (!value) {
    process.stderr.write(`reference: set ${name}\n`);
    process.exit(1);
  }
  return value;
}

// bigint ids as numbers, as the service answers them.
pg.types.setTypeParser(pg.types.builtins.INT8, Number);

const pool = new pg.Pool({
  connectionString: required('DATABASE_URL'),
  max: Number(process.env.POOL_MAX ?? 10),
});

const verify = createVerifier({
  key: required('JWT_SECRET'),
  algorithms: ['HS256'],
  requiredClaims: ['exp', 'sub'],
  clockTolerance: 60,
  // Larger than the bench's token population, so a round-robin over users never thrashes it.
  cache: 4096,
});

const COLUMNS = 'id, user_id, title, description, completed, created_at, updated_at';
const LIST = `select ${COLUMNS} from task where user_id = $1 order by created_at desc, id desc limit 1000`;
const CREATE = `insert into task (user_id, title, description) values ($1, $2, $3) returning ${COLUMNS}`;

const taskSchema = {
  type: 'object',
  properties: {
    id: { type: 'integer' },
    user_id: { type: 'string' },
    title: { type: 'string' },
    description: { type: ['string', 'null'] },
    completed: { type: 'boolean' },
    created_at: { type: 'string', format: 'date-time' },
    updated_at: { type: 'string', format: 'date-time' },
  },
} as const;

declare module 'fastify' {
  interface FastifyRequest {
    userId: string;
  }
}

const app = Fastify({ logger: false });
app.decorateRequest('userId', '');

async function authenticate(request: FastifyRequest, reply: FastifyReply) {
  const header = request.headers.authorization;
  if (header === undefined || !header.startsWith('Bearer ')) {
    return reply
      .code(401)
      .header('www-authenticate', 'Bearer')
      .send({ detail: 'Not authenticated' });
  }
  try {
    const payload: unknown = verify(header.slice(7));
    const sub = typeof payload === 'object' && payload !== null ? Reflect.get(payload, 'sub') : '';
    if (typeof sub !== 'string' || sub === '') throw new Error('no sub');
    request.userId = sub;
  } catch {
    return reply.code(401).header('www-authenticate', 'Bearer').send({ detail: 'Invalid token' });
  }
}

app.get('/health', async () => ({ status: 'ok' }));

app.get(
  '/api/tasks',
  { onRequest: authenticate, schema: { response: { 200: { type: 'array', items: taskSchema } } } },
  async (request) => {
    const { rows } = await pool.query({ name: 'list', text: LIST, values: [request.userId] });
    return rows;
  },
);

app.post(
  '/api/tasks',
  { onRequest: authenticate, schema: { response: { 201: taskSchema } } },
  async (request, reply) => {
    const body = (request.body ?? {}) as { title?: string; description?: string | null };
    const { rows } = await pool.query({
      name: 'create',
      text: CREATE,
      values: [request.userId, body.title, body.description ?? null],
    });
    const row: unknown = rows[0];
    const id = typeof row === 'object' && row !== null ? Reflect.get(row, 'id') : undefined;
    return reply
      .code(201)
      .header('location', `/api/tasks/${String(id)}`)
      .send(row);
  },
);

const shutdown = () => {
  app.close().then(
    () => pool.end().then(() => process.exit(0)),
    () => process.exit(1),
  );
};
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

await app.listen({ host: '127.0.0.1', port: Number(required('PORT')) });
