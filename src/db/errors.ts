/** Node network errors that mean the database could not be reached. */
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

/** SQLSTATEs that mean "try again later" rather than "your request was wrong". */
const UNAVAILABLE_SQLSTATES = new Set([
  '53300', // too_many_connections
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '40001', // serialization_failure
  '40P01', // deadlock_detected
  '55P03', // lock_not_available
  '57014', // query_canceled (statement timeout)
]);

/** node-postgres's pool, when no connection came free in `connectionTimeoutMillis`. */
const POOL_WAIT_TIMEOUT = 'timeout exceeded when trying to connect';

const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  POOL_WAIT_TIMEOUT,
  'Client has encountered a connection error',
  'Cannot use a pool after calling end',
  'PGlite is closed',
];

/** Walks the `cause` chain: Drizzle wraps driver errors in DrizzleQueryError. */
function* errorChain(error: unknown): Generator<unknown> {
  let current: unknown = error;
  for (let depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    yield current;
    current = current instanceof Error ? current.cause : undefined;
  }
}

function codeOf(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    const { code } = error;
    return typeof code === 'string' ? code : undefined;
  }
  return undefined;
}

export function isDatabaseUnavailable(error: unknown): boolean {
  for (const link of errorChain(error)) {
    const code = codeOf(link);
    if (code !== undefined) {
      if (NETWORK_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATES.has(code)) return true;
      if (code.startsWith('08')) return true; // connection_exception class
    }
    if (link instanceof Error && UNAVAILABLE_MESSAGES.some((m) => link.message.includes(m))) {
      return true;
    }
  }
  return false;
}

/** The SQLSTATE of a PostgreSQL error anywhere in the chain (e.g. '23503'). */
export function sqlState(error: unknown): string | undefined {
  for (const link of errorChain(error)) {
    const code = codeOf(link);
    if (code !== undefined && /^[0-9A-Z]{5}$/.test(code)) return code;
  }
  return undefined;
}

/**
 * node-postgres's pool gave up waiting for one of its connections to come free (it was full:
 * every connection open or being opened was taken). Whether that is load or an outage
 * depends on whether those connections had reached the server (allConnectionsInUse).
 */
export function isPoolWaitTimeout(error: unknown): boolean {
  for (const link of errorChain(error)) {
    if (link instanceof Error && link.message === POOL_WAIT_TIMEOUT) return true;
  }
  return false;
}
