import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
  jwtVerify,
} from 'jose';
import type { Config } from '../config.js';
import { HttpError, ServiceUnavailableError, UnauthorizedError } from '../errors.js';

/** The identity a verified token vouches for. */
export interface TokenIdentity {
  sub: string;
  email: string | undefined;
  name: string | undefined;
}

export type TokenVerifier = (authorization: string | undefined) => Promise<TokenIdentity>;

/**
 * The public keys of the Better Auth this service hosts, read in-process (its database), so
 * that verifying its tokens never makes an HTTP call to ourselves.
 */
export type BuiltInKeysLoader = () => Promise<JSONWebKeySet>;

/** `iss` and `aud` of the built-in Better Auth's tokens: the origin of BETTER_AUTH_URL. */
export function builtInIssuer(baseUrl: string): string {
  return new URL(baseUrl).origin;
}

/** Allowed clock difference between the token's issuer and us (SPEC §4). */
export const CLOCK_SKEW_SECONDS = 60;

/** Asymmetric algorithms a JWKS key may be used with; HS* is never accepted against one. */
const ASYMMETRIC_ALGORITHMS = [
  'EdDSA',
  'Ed25519',
  'ES256',
  'ES384',
  'ES512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
];

const BEARER = /^Bearer +([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*) *$/i;

const COMMON_OPTIONS: JWTVerifyOptions = {
  requiredClaims: ['exp', 'sub'],
  clockTolerance: CLOCK_SKEW_SECONDS,
};

/**
 * Our own key store failed (e.g. the database is down): a server problem, not a bad token,
 * so the original error reaches the error handler (503 for an outage, else a logged 500).
 */
class KeyStoreError extends Error {
  override name = 'KeyStoreError';

  constructor(override readonly cause: unknown) {
    super('the built-in key set could not be loaded');
  }
}

/**
 * A key set loaded once and cached; a token naming a `kid` it does not hold makes it reload
 * (one load shared by concurrent requests), so a key rotated in while running is picked up.
 * A failed load is not cached: the next token tries again.
 */
export function createReloadingLocalKeySet(load: BuiltInKeysLoader): JWTVerifyGetKey {
  let current: Promise<JWTVerifyGetKey> | undefined;

  const reload = () => {
    const next = load().then(
      (keySet) => createLocalJWKSet(keySet),
      (error: unknown) => {
        throw new KeyStoreError(error);
      },
    );
    current = next;
    next.catch(() => {
      if (current === next) current = undefined;
    });
    return next;
  };

  return async (header, token) => {
    const used = current;
    const keys = await (used ?? reload());
    try {
      return await keys(header, token);
    } catch (error) {
      // Just loaded, or not a missing key: reloading cannot help.
      if (used === undefined || errorCode(error) !== 'ERR_JWKS_NO_MATCHING_KEY') throw error;
      // Another request may already have reloaded since: use its result.
      const fresh = current !== undefined && current !== used ? current : reload();
      return (await fresh)(header, token);
    }
  };
}

/** Most verified tokens remembered by one verifier (see VerifiedTokenCache). */
export const VERIFIED_TOKEN_CACHE_SIZE = 10_000;

/**
 * Tokens that verified, by their exact text, each until its `exp` (never past it; jose's
 * 60 s leeway after `exp` is left to a fresh verification). A client sends the same token
 * for many requests, and checking it again (HMAC or signature, claims, key import) was the
 * largest CPU cost of a request. Only a token that verified is ever stored, so every 401 is
 * decided as before. Bounded: the least recently used entry goes first.
 *
 * Only shared-secret (HS256) tokens are stored: the secret never changes while running, so
 * a hit vouches for exactly what a new verification would. Key sets can drop a key (a
 * rotation of the built-in keys reloads them), after which that key's tokens must be refused
 * at once; their tokens are verified every time.
 */
export class VerifiedTokenCache {
  private readonly entries = new Map<string, { identity: TokenIdentity; expiresAtMs: number }>();

  constructor(private readonly maxEntries = VERIFIED_TOKEN_CACHE_SIZE) {}

  get(token: string, nowMs: number): TokenIdentity | undefined {
    const entry = this.entries.get(token);
    if (entry === undefined) return undefined;
    this.entries.delete(token);
    if (nowMs >= entry.expiresAtMs) return undefined;
    this.entries.set(token, entry); // most recently used last
    return entry.identity;
  }

  set(token: string, identity: TokenIdentity, exp: unknown, nowMs: number): void {
    if (this.maxEntries <= 0 || typeof exp !== 'number' || !Number.isFinite(exp)) return;
    const expiresAtMs = exp * 1000;
    if (nowMs >= expiresAtMs) return;
    this.entries.delete(token);
    this.entries.set(token, { identity: Object.freeze({ ...identity }), expiresAtMs });
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * Builds the verifier once at start-up: keys are imported here and the remote key set is
 * fetched lazily, cached, and refetched only on an unknown `kid`, never per request.
 * Asymmetric tokens whose `iss` is the built-in issuer are checked against `builtInKeys`.
 * Verified shared-secret tokens are remembered until their `exp` (VerifiedTokenCache).
 */
export function createTokenVerifier(
  auth: Config['auth'],
  builtInKeys?: BuiltInKeysLoader,
  verified: VerifiedTokenCache = new VerifiedTokenCache(),
): TokenVerifier {
  const secretKey = new TextEncoder().encode(auth.secret);
  const ownIssuer = builtInIssuer(auth.baseUrl);
  const ownKeys = builtInKeys ? createReloadingLocalKeySet(builtInKeys) : undefined;
  const ownOptions: JWTVerifyOptions = {
    ...COMMON_OPTIONS,
    algorithms: ASYMMETRIC_ALGORITHMS,
    issuer: ownIssuer,
    audience: ownIssuer,
  };
  const externalKeys = auth.jwksUrl
    ? createRemoteJWKSet(new URL(auth.jwksUrl), {
        timeoutDuration: 5_000,
        cooldownDuration: 30_000,
        cacheMaxAge: 10 * 60_000,
      })
    : undefined;
  const externalOptions: JWTVerifyOptions = {
    ...COMMON_OPTIONS,
    algorithms: ASYMMETRIC_ALGORITHMS,
    ...(auth.issuer ? { issuer: auth.issuer } : {}),
    ...(auth.audience ? { audience: auth.audience } : {}),
  };
  const sharedSecretOptions: JWTVerifyOptions = { ...COMMON_OPTIONS, algorithms: ['HS256'] };

  return async (authorization) => {
    if (authorization === undefined || authorization.trim() === '') {
      throw new UnauthorizedError('Not authenticated: missing Authorization header', 'missing');
    }
    const match = BEARER.exec(authorization);
    const token = match?.[1];
    if (token === undefined) {
      throw new UnauthorizedError(
        'Malformed Authorization header: expected "Bearer <JWT>"',
        'malformed',
      );
    }
    const cached = verified.get(token, Date.now());
    if (cached !== undefined) return cached;

    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new UnauthorizedError('Malformed token: header is not valid', 'malformed');
    }

    let payload: JWTPayload;
    try {
      if (alg === 'HS256') {
        ({ payload } = await jwtVerify(token, secretKey, sharedSecretOptions));
      } else if (
        alg !== undefined &&
        ownKeys &&
        ASYMMETRIC_ALGORITHMS.includes(alg) &&
        claimedIssuer(token) === ownIssuer
      ) {
        ({ payload } = await jwtVerify(token, ownKeys, ownOptions));
      } else if (alg !== undefined && externalKeys && ASYMMETRIC_ALGORITHMS.includes(alg)) {
        ({ payload } = await jwtVerify(token, externalKeys, externalOptions));
      } else {
        throw new UnauthorizedError(
          `Token algorithm ${JSON.stringify(alg ?? null)} is not accepted`,
          'algorithm',
        );
      }
    } catch (error) {
      throw describeVerificationFailure(error);
    }
    const identity = toIdentity(payload);
    if (alg === 'HS256') verified.set(token, identity, payload.exp, Date.now());
    return identity;
  };
}

/** The `iss` a token claims, before any verification: it only picks the key set. */
function claimedIssuer(token: string): string | undefined {
  try {
    return decodeJwt(token).iss;
  } catch {
    return undefined;
  }
}

function toIdentity(payload: JWTPayload): TokenIdentity {
  if (typeof payload.sub !== 'string' || payload.sub.trim() === '') {
    throw new UnauthorizedError('Invalid token: "sub" must be a non-empty string', 'claims');
  }
  // PostgreSQL text cannot hold NUL, so no user row could ever have this id.
  if (payload.sub.includes('\u0000')) {
    throw new UnauthorizedError('Invalid token: "sub" must not contain NUL characters', 'claims');
  }
  const now = Math.floor(Date.now() / 1000);
  if (typeof payload.iat === 'number' && payload.iat > now + CLOCK_SKEW_SECONDS) {
    throw new UnauthorizedError('Invalid token: issued in the future ("iat")', 'claims');
  }
  return {
    sub: payload.sub,
    email: typeof payload.email === 'string' && payload.email !== '' ? payload.email : undefined,
    name: typeof payload.name === 'string' ? payload.name : undefined,
  };
}

function errorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error) {
    return typeof error.code === 'string' ? error.code : undefined;
  }
  return undefined;
}

/** Maps jose's failures to a 401 that says what is wrong, never echoing the token. */
function describeVerificationFailure(error: unknown): Error {
  if (error instanceof HttpError) return error;
  if (error instanceof KeyStoreError) {
    return error.cause instanceof Error ? error.cause : new Error(String(error.cause));
  }
  const claim =
    typeof error === 'object' && error !== null && 'claim' in error ? String(error.claim) : '';
  const reason =
    typeof error === 'object' && error !== null && 'reason' in error ? String(error.reason) : '';
  switch (errorCode(error)) {
    case 'ERR_JWT_EXPIRED':
      return new UnauthorizedError('Token has expired', 'expired');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      if (reason === 'missing') {
        return new UnauthorizedError(`Invalid token: missing required claim "${claim}"`, 'claims');
      }
      if (claim === 'nbf') return new UnauthorizedError('Token is not yet valid ("nbf")', 'claims');
      if (claim === 'iss' || claim === 'aud') {
        return new UnauthorizedError(`Invalid token: unexpected "${claim}"`, 'claims');
      }
      return new UnauthorizedError(`Invalid token: bad "${claim}" claim`, 'claims');
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return new UnauthorizedError('Invalid token signature', 'signature');
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return new UnauthorizedError('Token algorithm is not accepted', 'algorithm');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return new UnauthorizedError('Invalid token: no known key matches it', 'signature');
    // jose's generic error is only raised when the key set answers non-200 or non-JSON:
    // like a timeout, an outage of the issuer, not a bad token.
    case 'ERR_JWKS_TIMEOUT':
    case 'ERR_JWKS_INVALID':
    case 'ERR_JOSE_GENERIC':
      return new ServiceUnavailableError('Token keys cannot be fetched right now; try again');
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return new UnauthorizedError('Malformed token', 'malformed');
    default:
      // Node's fetch fails with "fetch failed" when the key set's host cannot be reached.
      if (error instanceof TypeError && error.message === 'fetch failed') {
        return new ServiceUnavailableError('Token keys cannot be fetched right now; try again');
      }
      return new UnauthorizedError('Invalid token', 'invalid');
  }
}
