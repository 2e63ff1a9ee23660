/**
 * Generated hostile input (fast-check) through `app.inject`, on one app and one fresh database:
 * every route and both route shapes, plus /health, /ready, /openapi.json, /docs, the web page,
 * /metrics, /api/auth/* and unknown paths. For every answer:
 *
 * - never a 5xx (503 belongs to the database-outage tests, not here);
 * - an error (>= 400) is JSON with a `detail` — every route, the static page and the docs
 *   included: their 404/405s go through the same JSON not-found handler, so no exception is
 *   needed (HEAD answers have no body and are checked for status only);
 * - an error body carries no stack trace, file path, SQL or driver name;
 * - a task answer belongs to the token's user, and a 204 deletes only that user's own task.
 *
 * Each test ends by comparing the database with the ledger of acknowledged writes: exactly the
 * tasks whose creation got a 201, minus those whose deletion got a 204.
 */
import fc from 'fast-check';
import type { FastifyInstance, HTTPMethods, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BODY_LIMIT_BYTES } from '../../src/app.js';
import { task } from '../../src/db/schema.js';
import {
  createUserAndToken,
  signToken,
  startTestApp,
  type TestContext,
  type TestUser,
} from '../helpers.js';

/** Requests per property; the total is printed at the end (the lead quotes it). */
const RUNS = {
  routes: 4_500,
  bodies: 2_500,
  rawBodies: 1_200,
  headers: 2_000,
  auth: 300,
};

/** The fuzz must not meet 429s: every limit off (0 disables a limit). */
const NO_RATE_LIMITS = {
  RATE_LIMIT_USER_PER_MINUTE: '0',
  RATE_LIMIT_IP_PER_MINUTE: '0',
  RATE_LIMIT_AUTH_PER_MINUTE: '0',
};

const ORIGIN = 'http://localhost:3000';

/** What must never reach a client: stack frames, file paths, SQL, driver and library names. */
const LEAK =
  /\n\s+at |\bat [\w.$<>]+ \(|node_modules|\/work\/|\/src\/|\.[jt]s:\d+|\bselect\b[^"]*\bfrom\b|\binsert into\b|\bdelete from\b|\bupdate "|relation "|violates|syntax error|pglite|drizzle|postgres|sqlstate/i;

interface FuzzRequest {
  method: HTTPMethods;
  url: string;
  headers: Record<string, string>;
  payload?: string | Buffer;
  /** The user whose valid token the request carries, if any. */
  actorId?: string;
  /** A task route: without valid credentials it must not succeed. */
  taskRoute?: boolean;
  /** For an item route: the task id the server will parse from the path, if it parses one. */
  taskId?: number;
  /** True for POST to a task collection: a 201 is a new acknowledged task. */
  creates?: boolean;
}

/** Subjects of tokens that verify but name odd users (unicode, NUL, very long, RTL ...). */
const oddSubjects = [
  '\u202eevil\u202c',
  'zero\u200bwidth\u200d',
  '👩‍👩‍👧‍👦',
  '\ud800lone',
  'nul\u0000byte',
  ' ',
  'x'.repeat(2_000),
  '../../etc/passwd',
  "' OR '1'='1",
];

let ctx: TestContext;
let app: FastifyInstance;
let users: TestUser[];
/** Tokens for oddSubjects. */
let oddSubjectTokens: string[];
/** Tokens that must not verify. */
let badTokens: string[];

/** Acknowledged tasks still alive: id → owner. */
const ledger = new Map<number, string>();
const stats = { requests: 0, serverErrors: 0, created: 0, deleted: 0 };
const statuses = new Map<number, number>();

beforeAll(async () => {
  ctx = await startTestApp(NO_RATE_LIMITS);
  app = ctx.app;
  users = await Promise.all([createUserAndToken(), createUserAndToken(), createUserAndToken()]);
  oddSubjectTokens = await Promise.all(oddSubjects.map((sub) => signToken(sub)));
  const someone = users[0]?.id ?? 'someone';
  badTokens = await Promise.all([
    signToken(someone, { expiresIn: -120 }),
    signToken(someone, { secret: 'another-secret-that-is-long-enough-0123456789' }),
    signToken(someone, { expiresIn: null }),
    signToken(undefined),
    signToken(someone, { header: { alg: 'HS512' } }).catch(() => 'x.y.z'),
    signToken(someone, { claims: { nbf: Math.floor(Date.now() / 1000) + 3_600 } }),
  ]);
  // alg "none": a header and a payload, no signature.
  const encode = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
  badTokens.push(
    `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ sub: someone, exp: 9_999_999_999 })}.`,
  );
}, 120_000);

afterAll(async () => {
  console.log(
    `fuzz: ${stats.requests} generated requests, ${stats.serverErrors} answered 5xx; ` +
      `${stats.created} tasks acknowledged with 201, ${stats.deleted} deleted with 204; ` +
      `answers by status ${JSON.stringify(Object.fromEntries([...statuses].sort(([a], [b]) => a - b)))}`,
  );
  await ctx?.close();
});

function describeRequest(request: FuzzRequest): string {
  const payload =
    request.payload === undefined
      ? ''
      : ` payload(${Buffer.byteLength(request.payload)} B)=${JSON.stringify(
          request.payload.toString().slice(0, 300),
        )}`;
  return `${request.method} ${request.url.slice(0, 300)} headers=${JSON.stringify(
    request.headers,
  ).slice(0, 600)}${payload}`;
}

function parseJson(response: LightMyRequestResponse): unknown {
  try {
    return JSON.parse(response.body);
  } catch {
    return undefined;
  }
}

function isTaskJson(value: unknown): value is { id: number; user_id: string } {
  return (
    typeof value === 'object' &&
    value !== null &&
    'id' in value &&
    typeof value.id === 'number' &&
    'user_id' in value &&
    typeof value.user_id === 'string'
  );
}

/** Sends one generated request and checks the invariants every answer must keep. */
async function send(request: FuzzRequest): Promise<LightMyRequestResponse> {
  stats.requests++;
  const response = await app.inject({
    method: request.method,
    url: request.url,
    headers: request.headers,
    ...(request.payload !== undefined ? { payload: request.payload } : {}),
  });
  const status = response.statusCode;
  statuses.set(status, (statuses.get(status) ?? 0) + 1);
  const what = `${describeRequest(request)}\n=> ${status} ${response.body.slice(0, 500)}`;
  if (status >= 500) stats.serverErrors++;
  expect(status, what).toBeLessThan(500);

  if (status >= 400) {
    expect(response.body, what).not.toMatch(LEAK);
    if (request.method !== 'HEAD') {
      expect(String(response.headers['content-type']), what).toMatch(/^application\/json/);
      const body = parseJson(response);
      expect(body, what).toEqual(expect.objectContaining({ detail: expect.anything() }));
    }
  }

  const json = request.method === 'HEAD' ? undefined : parseJson(response);
  if (request.creates && status === 201) expect(isTaskJson(json), what).toBe(true);
  // Every 201 with a task is an acknowledged create, also from a path that only resolves to
  // the collection (`/api/tasks/1/..` is `/api/tasks/` once inject resolves the URL).
  if (status === 201 && isTaskJson(json)) {
    if (request.actorId !== undefined) expect(json.user_id, what).toBe(request.actorId);
    if (!ledger.has(json.id)) stats.created++;
    ledger.set(json.id, json.user_id);
  }
  const success = status >= 200 && status < 300;
  if (request.taskRoute && request.actorId === undefined && request.method !== 'OPTIONS') {
    expect(success, `succeeded without valid credentials: ${what}`).toBe(false);
  }
  if (request.actorId !== undefined && success) {
    // Whatever came back belongs to the caller: one task, or a list of them.
    const tasks = Array.isArray(json) ? json : isTaskJson(json) ? [json] : [];
    for (const item of tasks) {
      if (isTaskJson(item)) expect(item.user_id, what).toBe(request.actorId);
    }
  }
  if (request.method === 'DELETE' && status === 204) {
    expect(request.taskId, `a 204 for a path naming no task id: ${what}`).toBeDefined();
    if (request.taskId !== undefined) {
      expect(
        ledger.get(request.taskId),
        `deleted a task not acknowledged to its user: ${what}`,
      ).toBe(request.actorId);
      ledger.delete(request.taskId);
      stats.deleted++;
    }
  }
  return response;
}

/** The database holds exactly the acknowledged tasks, each with its owner. */
async function expectDatabaseMatchesLedger() {
  const rows = await ctx.database.handle.db
    .select({ id: task.id, userId: task.userId })
    .from(task)
    .orderBy(task.id);
  const expected = [...ledger.entries()]
    .sort(([a], [b]) => a - b)
    .map(([id, userId]) => ({ id, userId }));
  expect(rows).toEqual(expected);
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/** Pieces that break naive string handling. */
const UNICODE_EDGES = [
  '\u0000',
  '\ud800',
  '\udfff',
  '\udc00\ud800',
  '\u202e',
  '\u200f',
  '\u200b',
  '\u200d',
  '\ufeff',
  '\u2028',
  '\u2029',
  '\uffff',
  '\ufffe',
  '\u{10ffff}',
  '👩‍👩‍👧‍👦',
  '🏳️‍🌈',
  'e\u0301',
  'Z\u0338\u0322\u031b',
  'عربى',
  'שלום',
  '\t',
  '\n',
  '\r\n',
  ' ',
  '\\',
  '"',
  '<script>alert(1)</script>',
  "'; drop table task; --",
  '$' + '{7*7}', // a template-injection probe
  '%00',
  '../',
];

const weirdString = fc.oneof(
  { arbitrary: fc.string({ unit: 'binary', maxLength: 40 }), weight: 3 },
  { arbitrary: fc.string({ unit: 'grapheme', maxLength: 40 }), weight: 2 },
  {
    arbitrary: fc
      .array(fc.oneof(fc.constantFrom(...UNICODE_EDGES), fc.string({ maxLength: 5 })), {
        minLength: 1,
        maxLength: 8,
      })
      .map((parts) => parts.join('')),
    weight: 4,
  },
  {
    // Around the length rules: 200 (title) and 1000 (description) code points, in emoji too.
    arbitrary: fc
      .tuple(fc.constantFrom(199, 200, 201, 999, 1000, 1001, 5000), fc.constantFrom('a', '😀', ' '))
      .map(([length, unit]) => unit.repeat(length)),
    weight: 1,
  },
);

/** Number tokens JSON allows (or nearly) that break naive number handling. */
const rawNumber = fc.oneof(
  fc.constantFrom(
    '0',
    '-0',
    '1',
    '-1',
    '1e400',
    '-1e400',
    '1E+999',
    '1e-400',
    '9007199254740993',
    '-9223372036854775809',
    '123456789012345678901234567890',
    '0.1',
    '1.0',
    '01',
    '+1',
    '.5',
    'NaN',
    'Infinity',
    '0x10',
  ),
  fc.integer().map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((value) => JSON.stringify(value)),
  fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map(String),
);

const jsonString = weirdString.map((value) => JSON.stringify(value));

/** JSON text (mostly valid, sometimes not quite), nested a little. */
const jsonText: fc.Arbitrary<string> = fc.letrec<{ value: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    jsonString,
    rawNumber,
    fc.constantFrom('true', 'false', 'null', '"true"', '""', '[]', '{}'),
    fc.array(tie('value'), { maxLength: 4 }).map((items) => `[${items.join(',')}]`),
    fc
      .array(fc.tuple(jsonString, tie('value')), { maxLength: 4 })
      .map((entries) => `{${entries.map(([key, value]) => `${key}:${value}`).join(',')}}`),
  ),
})).value;

/** A title that is valid more often than not, so that creates succeed and the ledger fills. */
const titleText = fc.oneof(
  {
    arbitrary: fc.string({ minLength: 1, maxLength: 60 }).map((s) => JSON.stringify(`t${s}`)),
    weight: 4,
  },
  { arbitrary: jsonString, weight: 3 },
  { arbitrary: jsonText, weight: 2 },
);

function objectText(fields: [string, string | undefined][]): string {
  const members = fields
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([key, value]) => `${JSON.stringify(key)}:${value}`);
  return `{${members.join(',')}}`;
}

/** Keys a client must not be able to set, and keys that attack parsers. */
const extraKeys = fc.constantFrom(
  'id',
  'user_id',
  'userId',
  'created_at',
  'updated_at',
  'completed',
  '__proto__',
  'constructor',
  'prototype',
  '',
  'title ',
  'TITLE',
);

const extraFields = fc.array(fc.tuple(extraKeys, jsonText), { maxLength: 3 });

const createBody = fc
  .tuple(fc.option(titleText, { freq: 8 }), fc.option(jsonText, { freq: 2 }), extraFields)
  .map(([title, description, extra]) =>
    objectText([
      ['title', title ?? undefined],
      ['description', description ?? undefined],
      ...extra,
    ]),
  );

const updateBody = fc
  .tuple(
    fc.option(titleText),
    fc.option(jsonText),
    fc.option(fc.oneof(fc.constantFrom('true', 'false'), jsonText)),
    extraFields,
  )
  .map(([title, description, completed, extra]) =>
    objectText([
      ['title', title ?? undefined],
      ['description', description ?? undefined],
      ['completed', completed ?? undefined],
      ...extra,
    ]),
  );

const completeBody = fc.oneof(
  fc.constant(undefined),
  fc.constantFrom('', ' ', '{}', 'null', '{"completed":true}', '{"completed":false}'),
  fc.oneof(fc.constantFrom('true', 'false'), jsonText).map((value) => `{"completed":${value}}`),
  jsonText,
);

/** Bodies near and over the 16 KiB limit, deep nesting, broken JSON and broken UTF-8. */
const rawBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  // Padded to land just under, at and just over the limit (unknown fields are ignored).
  fc
    .tuple(fc.integer({ min: -64, max: 64 }), fc.constantFrom('a', 'é', '😀'))
    .map(([delta, unit]) => {
      const head = '{"title":"near the limit","pad":"';
      const tail = '"}';
      const room = BODY_LIMIT_BYTES + delta - head.length - tail.length;
      const unitBytes = Buffer.byteLength(unit);
      return `${head}${unit.repeat(Math.max(0, Math.floor(room / unitBytes)))}${'a'.repeat(
        Math.max(0, room % unitBytes),
      )}${tail}`;
    }),
  // Far over the limit.
  fc.constantFrom(64 * 1024, 256 * 1024).map((size) => `{"title":"${'x'.repeat(size)}"}`),
  // Deep nesting, under and over the limit, in arrays, objects and in the title itself.
  fc
    .tuple(
      fc.constantFrom(100, 1_000, 5_000, 8_000, 20_000),
      fc.constantFrom('array', 'object', 'title'),
    )
    .map(([depth, kind]) => {
      if (kind === 'array') return `${'['.repeat(depth)}${']'.repeat(depth)}`;
      if (kind === 'object') return `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
      return `{"title":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    }),
  // Truncated, doubled or otherwise broken JSON.
  fc
    .tuple(createBody, fc.nat())
    .map(([body, cut]) => body.slice(0, cut % Math.max(1, body.length))),
  createBody.map((body) => `${body}${body}`),
  fc.constantFrom(
    '{"title":"a",}',
    "{'title':'a'}",
    '{"title":"a"',
    '{"title":"a\u0000"}',
    '{"title":"tab\there"}',
    '{"title":"\\ud800"}',
    '{"title":"\\u0000"}',
    '{"title":"\\x41"}',
    '{"title":"a"}garbage',
    '\ufeff{"title":"bom"}',
    '{"__proto__":{"admin":true},"title":"proto"}',
    '{"constructor":{"prototype":{"admin":true}},"title":"ctor"}',
    '{"title":"a","title":"b"}',
    'null',
    '"just a string"',
    '[{"title":"in an array"}]',
    '1e400',
    ' ',
  ),
  // Bytes that are not UTF-8: lone continuation bytes, overlong forms, surrogates, 0xFF.
  fc
    .array(
      fc.constantFrom(
        [0xff],
        [0xc3, 0x28],
        [0xc0, 0xaf],
        [0xe0, 0x80, 0xaf],
        [0xed, 0xa0, 0x80],
        [0xf4, 0x90, 0x80, 0x80],
        [0x80],
        [0x00],
      ),
      { minLength: 1, maxLength: 4 },
    )
    .map((pieces) =>
      Buffer.concat([Buffer.from('{"title":"'), Buffer.from(pieces.flat()), Buffer.from('"}')]),
    ),
  fc.uint8Array({ maxLength: 64 }).map((bytes) => Buffer.from(bytes)),
);

/** Header values a real socket can carry: visible ASCII, space, tab and Latin-1 (obs-text). */
const headerValue = fc.string({
  unit: fc
    .oneof(
      fc.integer({ min: 0x20, max: 0x7e }),
      fc.integer({ min: 0x80, max: 0xff }),
      fc.constant(0x09),
    )
    .map((code) => String.fromCharCode(code)),
  maxLength: 40,
});

const contentType = fc.oneof(
  { arbitrary: fc.constant('application/json'), weight: 6 },
  {
    arbitrary: fc.constantFrom(
      'application/json; charset=utf-8',
      'application/json; charset=utf-16',
      'application/json; charset=latin1',
      'APPLICATION/JSON',
      'application/json;;;',
      'application/json, text/plain',
      'application/problem+json',
      'application/vnd.api+json',
      'application/jsonx',
      'text/plain',
      'text/json',
      'text/html',
      'application/x-www-form-urlencoded',
      'multipart/form-data; boundary=----x',
      'application/octet-stream',
      '*/*',
      '',
      ' ',
      'json',
      ';',
    ),
    weight: 4,
  },
  { arbitrary: headerValue, weight: 1 },
);

type AuthChoice =
  | { kind: 'user'; index: number; scheme: string }
  | { kind: 'odd'; index: number }
  | { kind: 'header'; value: string };

/**
 * Mostly a valid token (the scheme in any case: RFC 7235 makes it case-insensitive); else a
 * token naming an odd subject, or a header that must not authenticate anyone.
 */
const authChoice: fc.Arbitrary<AuthChoice> = fc.oneof(
  {
    arbitrary: fc
      .tuple(fc.nat(2), fc.constantFrom('Bearer', 'Bearer', 'Bearer', 'bearer', 'BEARER'))
      .map(([index, scheme]): AuthChoice => ({ kind: 'user', index, scheme })),
    weight: 16,
  },
  { arbitrary: fc.nat().map((index): AuthChoice => ({ kind: 'odd', index })), weight: 1 },
  {
    arbitrary: fc
      .oneof(
        fc.constantFrom('', 'Bearer', 'Bearer ', 'Bearer  ', 'Basic dXNlcjpwYXNz', 'Token abc'),
        fc.nat().map((i) => `Bearer ${badTokens[i % badTokens.length]}`),
        fc.nat(2).map((i) => `Bearer ${users[i]?.token}, Bearer ${users[(i + 1) % 3]?.token}`),
        fc.nat(2).map((i) => `Bearer ${users[i]?.token}x`),
        fc.nat(2).map((i) => `Bearer ${users[i]?.token.split('.').slice(0, 2).join('.')}`),
        fc.nat(2).map((i) => `Basic ${users[i]?.token}`),
        fc.constantFrom(2_000, 20_000).map((n) => `Bearer ${'a'.repeat(n)}`),
        headerValue.map((value) => `Bearer ${value}`),
        headerValue,
      )
      .map((value): AuthChoice => ({ kind: 'header', value })),
    weight: 3,
  },
);

/** A user id as the database keeps it: UTF-8, so a lone surrogate becomes U+FFFD. */
const storedForm = (id: string) => Buffer.from(id, 'utf8').toString('utf8');

interface Credentials {
  headers: Record<string, string>;
  /** The user the server will act for, when the credentials are valid. */
  actorId?: string;
}

function authHeaders(choice: AuthChoice): Credentials {
  if (choice.kind === 'header') {
    return choice.value === '' ? { headers: {} } : { headers: { authorization: choice.value } };
  }
  if (choice.kind === 'odd') {
    const index = choice.index % oddSubjects.length;
    return {
      headers: { authorization: `Bearer ${oddSubjectTokens[index]}` },
      actorId: storedForm(oddSubjects[index] ?? ''),
    };
  }
  const actor = users[choice.index];
  if (!actor) throw new Error('no such fuzz user');
  return { headers: { authorization: `${choice.scheme} ${actor.token}` }, actorId: actor.id };
}

/** Odd extra headers: request ids, idempotency keys, forwarding, ranges, caching, encodings. */
const oddHeaders = fc.dictionary(
  fc.constantFrom(
    'x-request-id',
    'idempotency-key',
    'x-forwarded-for',
    'forwarded',
    'x-real-ip',
    'origin',
    'accept',
    'accept-encoding',
    'accept-language',
    'content-encoding',
    'range',
    'if-none-match',
    'if-modified-since',
    'cookie',
    'x-http-method-override',
    'access-control-request-method',
    'expect',
    'te',
    'x-custom',
  ),
  fc.oneof(
    headerValue,
    fc.constantFrom(
      'gzip',
      'br, gzip, deflate',
      'bytes=0-10',
      'bytes=999999-',
      'bytes=-1,0-0,5-2',
      '*',
      'W/"x"',
      'Thu, 01 Jan 1970 00:00:00 GMT',
      'not a date',
      'http://localhost:3000',
      'null',
      '127.0.0.1, 10.0.0.1',
      'DELETE',
      'a'.repeat(300),
      'x'.repeat(8_000),
    ),
  ),
  { maxKeys: 3 },
);

/** A path segment: sensible values and the classic tricks. */
const segmentTrick = fc.constantFrom(
  '..',
  '.',
  '%2e%2e',
  '%2E%2e%2F..',
  '..%2f..%2fetc%2fpasswd',
  '%00',
  '1%00',
  '%',
  '%zz',
  '%ED%A0%80',
  '%C0%AF',
  '%FF',
  '',
  ';',
  ';a=b',
  '%20',
  '+',
  '*',
  '~',
  'a'.repeat(511),
  'a'.repeat(600),
  '9'.repeat(600),
  '%E2%80%AE',
  '%F0%9F%98%80',
);

/** How the server reads an id segment (tasks.schemas.ts): digits with an optional sign. */
function parsedTaskId(segment: string): number | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(segment);
  } catch {
    return undefined;
  }
  return /^[+-]?\d+$/.test(decoded) ? Number(decoded) : undefined;
}

type IdChoice =
  | { kind: 'own'; pick: number }
  | { kind: 'foreign'; pick: number }
  | { kind: 'raw'; segment: string };

const idChoice: fc.Arbitrary<IdChoice> = fc.oneof(
  { arbitrary: fc.nat().map((pick) => ({ kind: 'own' as const, pick })), weight: 5 },
  { arbitrary: fc.nat().map((pick) => ({ kind: 'foreign' as const, pick })), weight: 2 },
  {
    arbitrary: fc
      .oneof(
        fc.constantFrom(
          '0',
          '-1',
          '+1',
          '01',
          '1.5',
          '1e3',
          '0x10',
          'NaN',
          'Infinity',
          '9007199254740993',
          '9223372036854775807',
          '9223372036854775808',
          '-9223372036854775809',
          '99999999999999999999999999',
          '%31',
          '%2B1',
          '%EF%BC%91',
          '%D9%A3',
        ),
        fc.integer().map(String),
        fc.bigInt({ min: -(10n ** 40n), max: 10n ** 40n }).map(String),
        segmentTrick,
        fc.webSegment(),
      )
      .map((segment) => ({ kind: 'raw' as const, segment })),
    weight: 3,
  },
);

/** Resolves an id choice against the ledger at run time (ids exist only once created). */
function idSegment(choice: IdChoice, actorId: string | undefined): string {
  if (choice.kind === 'raw') return choice.segment;
  const wantOwn = choice.kind === 'own';
  const candidates = [...ledger.entries()].filter(([, owner]) => (owner === actorId) === wantOwn);
  const entry = candidates[choice.pick % Math.max(1, candidates.length)];
  return String(entry ? entry[0] : choice.pick + 1);
}

type UserSegmentChoice = 'own' | 'other' | 'encoded-own' | { raw: string };

const userSegmentChoice: fc.Arbitrary<UserSegmentChoice> = fc.oneof(
  { arbitrary: fc.constant('own' as const), weight: 6 },
  { arbitrary: fc.constant('other' as const), weight: 1 },
  { arbitrary: fc.constant('encoded-own' as const), weight: 1 },
  {
    arbitrary: fc
      .oneof(segmentTrick, fc.webSegment(), weirdString.map(encodeSegment))
      .map((raw) => ({ raw })),
    weight: 2,
  },
);

function encodeSegment(value: string): string {
  try {
    return encodeURIComponent(value);
  } catch {
    // A lone surrogate cannot be encoded: send the bytes a naive client would.
    return '%ED%A0%80';
  }
}

function userSegment(choice: UserSegmentChoice, actorId: string | undefined): string {
  const own = actorId ?? users[0]?.id ?? 'nobody';
  if (choice === 'own') return encodeSegment(own);
  if (choice === 'other') return encodeSegment(users.find((u) => u.id !== actorId)?.id ?? 'other');
  if (choice === 'encoded-own') {
    // Every character percent-encoded: decodes to the same id.
    return [...Buffer.from(own)].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('');
  }
  return choice.raw;
}

const TASK_ROUTES = ['list', 'create', 'get', 'update', 'delete', 'complete'] as const;
type TaskRoute = (typeof TASK_ROUTES)[number];

const ROUTE_METHOD: Record<TaskRoute, HTTPMethods> = {
  list: 'GET',
  create: 'POST',
  get: 'GET',
  update: 'PUT',
  delete: 'DELETE',
  complete: 'PATCH',
};

const queryString = fc.oneof(
  { arbitrary: fc.constant(''), weight: 3 },
  {
    arbitrary: fc
      .array(
        fc.tuple(
          fc.constantFrom(
            'status',
            'sort',
            'limit',
            'offset',
            'cursor',
            'status[]',
            'limit[0]',
            '__proto__',
            'constructor',
            '',
            'x',
          ),
          fc.oneof(
            fc.constantFrom(
              'all',
              'pending',
              'completed',
              'ALL',
              'created',
              'title',
              '-title',
              '',
              '0',
              '1',
              '-1',
              '1000',
              '1001',
              '100000',
              '100001',
              '1e3',
              '1e400',
              '-0',
              '1.5',
              '0x10',
              'NaN',
              'Infinity',
              '99999999999999999999999',
              '%zz',
              '%',
              '%00',
              '%FF',
              '%ED%A0%80',
              'a'.repeat(5_000),
            ),
            fc.integer().map(String),
            weirdString.map(encodeSegment),
          ),
        ),
        { maxLength: 5 },
      )
      .map((pairs) => `?${pairs.map(([key, value]) => `${key}=${value}`).join('&')}`),
    weight: 4,
  },
  {
    arbitrary: fc.constantFrom('?', '??', '?&&&', '?=', '?status', '?limit=1&limit=2', '?#x'),
    weight: 1,
  },
  { arbitrary: fc.webQueryParameters().map((query) => `?${query}`), weight: 1 },
);

/** Slashes a client (or proxy) may mangle: double, trailing, dot segments. */
const pathMangle = fc.constantFrom('none', 'none', 'none', 'trailing', 'double', 'dot', 'leading');

function mangle(path: string, how: string): string {
  switch (how) {
    case 'trailing':
      return `${path}/`;
    case 'double':
      return path.replaceAll('/', '//');
    case 'dot':
      return path.replace('/api/', '/api/./');
    case 'leading':
      return `/${path}`;
    default:
      return path;
  }
}

interface TaskRequestInput {
  route: TaskRoute;
  userShape: boolean;
  auth: AuthChoice;
  userSegment: UserSegmentChoice;
  id: IdChoice;
  query: string;
  mangle: string;
}

const taskRequestInput: fc.Arbitrary<TaskRequestInput> = fc.record({
  route: fc.constantFrom(...TASK_ROUTES),
  userShape: fc.boolean(),
  auth: authChoice,
  userSegment: userSegmentChoice,
  id: idChoice,
  query: queryString,
  mangle: pathMangle,
});

/** A `..` segment, also percent-encoded, as the WHATWG URL parser (and so inject) reads one. */
const DOUBLE_DOT_SEGMENT = /(^|\/)(\.|%2e)(\.|%2e)(\/|$|\?)/i;
const TASK_PATH = /^\/api\/([^/]+\/)?tasks(\/|$)/;

/**
 * Whether a task-route URL still names a task route once inject resolves it: a `..` segment
 * can lead elsewhere (`/api/../tasks/..` is `/`, the web page, which needs no credentials).
 */
function stillATaskRoute(url: string): boolean {
  if (!DOUBLE_DOT_SEGMENT.test(url)) return true;
  return TASK_PATH.test(new URL(url, 'http://localhost').pathname);
}

/** Builds a task-route request; the body is left to the caller. */
function taskRequest(input: TaskRequestInput, method?: HTTPMethods): FuzzRequest {
  const { headers, actorId } = authHeaders(input.auth);
  const base = input.userShape
    ? `/api/${userSegment(input.userSegment, actorId)}/tasks`
    : '/api/tasks';
  const collection = input.route === 'list' || input.route === 'create';
  const segment = collection ? undefined : idSegment(input.id, actorId);
  let path = base;
  if (segment !== undefined) path += `/${segment}`;
  if (input.route === 'complete') path += '/complete';
  const url = `${mangle(path, input.mangle)}${input.query}`;
  const request: FuzzRequest = {
    method: method ?? ROUTE_METHOD[input.route],
    url,
    headers: { ...headers },
    taskRoute: stillATaskRoute(url),
    ...(actorId !== undefined ? { actorId } : {}),
  };
  const taskId = segment === undefined ? undefined : parsedTaskId(segment);
  if (taskId !== undefined) request.taskId = taskId;
  if (collection && request.method === 'POST') request.creates = true;
  return request;
}

function withBody(request: FuzzRequest, body: string | Buffer | undefined, type?: string) {
  if (body === undefined) return request;
  return {
    ...request,
    headers: { ...request.headers, 'content-type': type ?? 'application/json' },
    payload: body,
  };
}

/** Mostly undefined; sometimes a value (a body on a GET, a method that is not the route's). */
function rarely<T>(arbitrary: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> {
  return fc.oneof({ arbitrary: fc.constant(undefined), weight: 4 }, { arbitrary, weight: 1 });
}

function bodyFor(route: TaskRoute): fc.Arbitrary<string | undefined> {
  if (route === 'create') return createBody;
  if (route === 'update') return updateBody;
  if (route === 'complete') return completeBody;
  return rarely(jsonText);
}

const METHODS: HTTPMethods[] = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS'];

/** Paths outside the tasks API: operations, docs, the page, metrics, auth, unknown. */
const otherPath = fc.oneof(
  fc.constantFrom(
    '/health',
    '/ready',
    '/openapi.json',
    '/docs',
    '/docs/',
    '/docs/json',
    '/docs/static/index.html',
    '/docs/static/nope.js',
    '/docs/static/../../package.json',
    '/docs/static/%2e%2e/%2e%2e/package.json',
    '/',
    '/index.html',
    '/app.js',
    '/styles.css',
    '/..%2fpackage.json',
    '/%2e%2e/%2e%2e/etc/passwd',
    '/.env',
    '/.git/config',
    '/metrics',
    '/api',
    '/api/',
    '/api/tasks/1/complete/extra',
    '/api/auth',
    '/api/auth/jwks',
    '/api/auth/token',
    '/api/auth/get-session',
    '/api/auth/ok',
    '/api/auth/nope',
    '/api/auth/../tasks',
    '/api/auth/%2e%2e/tasks',
    '/api/auth/sign-in/email',
    '/api/auth/sign-up/email',
    '/api/auth/sign-out',
    '/%00',
    '//',
    '/a%00b',
    `/${'a'.repeat(600)}`,
    `/api/${'%ff'.repeat(300)}/tasks`,
  ),
  fc.webPath().map((path) => (path.startsWith('/') ? path : `/${path}`)),
  fc
    .array(fc.oneof(segmentTrick, fc.webSegment()), { minLength: 1, maxLength: 4 })
    .map((segments) => `/${segments.join('/')}`),
);

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

describe('generated hostile requests', () => {
  it('when generated paths, methods and query strings hit every route, then nothing answers 5xx and every error is a JSON detail', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          {
            weight: 7,
            arbitrary: fc
              .tuple(taskRequestInput, rarely(fc.constantFrom(...METHODS)))
              .chain(([input, method]) =>
                bodyFor(input.route).map((body) => ({ input, method, body })),
              ),
          },
          {
            weight: 3,
            arbitrary: fc.record({
              path: otherPath,
              method: fc.constantFrom(...METHODS),
              query: queryString,
              auth: authChoice,
              body: rarely(jsonText),
            }),
          },
        ),
        async (generated) => {
          if ('input' in generated) {
            const request = taskRequest(generated.input, generated.method);
            await send(withBody(request, generated.body));
            return;
          }
          const { headers, actorId } = authHeaders(generated.auth);
          await send(
            withBody(
              {
                method: generated.method,
                url: `${generated.path}${generated.query}`,
                headers: { ...headers, origin: ORIGIN },
                ...(actorId !== undefined ? { actorId } : {}),
              },
              generated.body,
            ),
          );
        },
      ),
      { numRuns: RUNS.routes },
    );
    await expectDatabaseMatchesLedger();
  }, 240_000);

  it('when generated JSON bodies (wrong types, huge numbers, unicode edges, extra keys) are sent to create, update and complete, then nothing answers 5xx and the database holds exactly the acknowledged tasks', async () => {
    const writeRoutes = fc.constantFrom<TaskRoute>(
      'create',
      'create',
      'update',
      'complete',
      'delete',
    );
    await fc.assert(
      fc.asyncProperty(
        fc
          .record({
            route: writeRoutes,
            userShape: fc.boolean(),
            index: fc.nat(2),
            userSegment: fc.oneof(
              { arbitrary: fc.constant<UserSegmentChoice>('own'), weight: 9 },
              { arbitrary: userSegmentChoice, weight: 1 },
            ),
            id: fc.oneof(
              { arbitrary: fc.nat().map((pick) => ({ kind: 'own' as const, pick })), weight: 8 },
              { arbitrary: idChoice, weight: 2 },
            ),
          })
          .chain((input) => bodyFor(input.route).map((body) => ({ input, body }))),
        async ({ input, body }) => {
          const request = taskRequest({
            ...input,
            auth: { kind: 'user', index: input.index, scheme: 'Bearer' },
            query: '',
            mangle: 'none',
          });
          await send(withBody(request, body));
        },
      ),
      { numRuns: RUNS.bodies },
    );
    await expectDatabaseMatchesLedger();
  }, 240_000);

  it('when raw bodies near and over 16 KiB, deeply nested, truncated or not UTF-8 are sent, then the answer is 413, 4xx or the success the body deserves, never 5xx', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<TaskRoute>('create', 'update', 'complete'),
        fc.boolean(),
        fc.nat(2),
        rawBody,
        async (route, userShape, index, body) => {
          const request = taskRequest({
            route,
            userShape,
            auth: { kind: 'user', index, scheme: 'Bearer' },
            userSegment: 'own',
            id: { kind: 'own', pick: index },
            query: '',
            mangle: 'none',
          });
          const response = await send(withBody(request, body));
          if (Buffer.byteLength(body) > BODY_LIMIT_BYTES) {
            expect(response.statusCode, describeRequest(request)).toBe(413);
          }
        },
      ),
      { numRuns: RUNS.rawBodies },
    );
    await expectDatabaseMatchesLedger();
  }, 240_000);

  it('when generated headers (tokens, content types, idempotency keys, request ids, ranges) are sent, then nothing answers 5xx and every error is a JSON detail', async () => {
    await fc.assert(
      fc.asyncProperty(
        taskRequestInput,
        authChoice,
        contentType,
        oddHeaders,
        fc.option(createBody, { freq: 5 }),
        async (input, auth, type, extra, createPayload) => {
          const request = taskRequest({ ...input, auth });
          const body =
            createPayload ?? (input.route === 'update' ? '{"title":"via headers"}' : undefined);
          const withHeaders: FuzzRequest = {
            ...request,
            headers: { ...extra, ...request.headers },
          };
          if (body !== undefined) {
            await send({
              ...withHeaders,
              headers: { ...withHeaders.headers, 'content-type': type },
              payload: body,
            });
          } else {
            await send(withHeaders);
          }
        },
      ),
      { numRuns: RUNS.headers },
    );
    await expectDatabaseMatchesLedger();
  }, 240_000);

  it('when generated requests reach Better Auth at /api/auth/*, then nothing answers 5xx and every error is a JSON detail', async () => {
    const authPath = fc.oneof(
      fc.constantFrom(
        '/api/auth/sign-up/email',
        '/api/auth/sign-in/email',
        '/api/auth/sign-out',
        '/api/auth/get-session',
        '/api/auth/token',
        '/api/auth/jwks',
        '/api/auth/ok',
        '/api/auth/error',
        '/api/auth/update-user',
        '/api/auth/change-password',
        '/api/auth/reset-password',
        '/api/auth/list-sessions',
      ),
      fc.webSegment().map((segment) => `/api/auth/${segment}`),
      segmentTrick.map((segment) => `/api/auth/${segment}`),
    );
    const authBody = fc.oneof(
      fc
        .record({
          email: fc.oneof(
            fc.emailAddress(),
            jsonText.map((text) => ({ raw: text })),
          ),
          password: fc.oneof(fc.string({ minLength: 8, maxLength: 40 }), weirdString),
          name: weirdString,
        })
        .map(({ email, password, name }) =>
          objectText([
            ['email', typeof email === 'string' ? JSON.stringify(email) : email.raw],
            ['password', JSON.stringify(password)],
            ['name', JSON.stringify(name)],
          ]),
        ),
      jsonText,
      rawBody.map((body) => body.toString()),
    );
    await fc.assert(
      fc.asyncProperty(
        authPath,
        fc.constantFrom<HTTPMethods>('GET', 'POST', 'POST', 'PUT', 'DELETE'),
        fc.option(authBody, { freq: 4 }),
        contentType,
        fc.option(fc.constantFrom(ORIGIN, 'http://evil.example', 'null', ''), { freq: 4 }),
        oddHeaders,
        async (path, method, body, type, origin, extra) => {
          const headers: Record<string, string> = { ...extra };
          if (origin !== null) headers.origin = origin;
          const request: FuzzRequest = { method, url: path, headers };
          if (body !== null && method !== 'GET') {
            await send({
              ...request,
              headers: { ...headers, 'content-type': type },
              payload: body,
            });
          } else {
            await send(request);
          }
        },
      ),
      { numRuns: RUNS.auth },
    );
    await expectDatabaseMatchesLedger();
  }, 240_000);
});
