import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { signToken, testConfig } from '../../test/helpers.js';
import { createTokenVerifier, VerifiedTokenCache } from './token-verifier.js';

const identity = (sub: string) => ({ sub, email: undefined, name: undefined });

afterEach(() => {
  vi.useRealTimers();
});

describe('verified shared-secret tokens are remembered until their exp', () => {
  it('when a verified token is presented again after its exp plus the 60 s skew, then it is refused as expired', async () => {
    vi.useFakeTimers({ toFake: ['Date'] });
    const cache = new VerifiedTokenCache();
    const verify = createTokenVerifier(testConfig().auth, undefined, cache);
    const sub = `user_${randomUUID()}`;
    const token = await signToken(sub, { expiresIn: 600 });

    await expect(verify(`Bearer ${token}`)).resolves.toMatchObject({ sub });
    expect(cache.size).toBe(1);

    vi.setSystemTime(Date.now() + (600 + 120) * 1000);
    await expect(verify(`Bearer ${token}`)).rejects.toMatchObject({
      statusCode: 401,
      reason: 'expired',
    });
  });

  it('when a token fails verification, then it is not remembered and fails again', async () => {
    const cache = new VerifiedTokenCache();
    const verify = createTokenVerifier(testConfig().auth, undefined, cache);
    const token = await signToken(`user_${randomUUID()}`, {
      secret: 'some-other-secret-that-is-long-enough-for-hs256-00',
    });

    for (let attempt = 0; attempt < 2; attempt++) {
      await expect(verify(`Bearer ${token}`)).rejects.toMatchObject({ reason: 'signature' });
    }
    expect(cache.size).toBe(0);
  });

  it('when an entry reaches its exp, then the cache no longer returns it', () => {
    const cache = new VerifiedTokenCache();
    const now = Date.now();
    const exp = Math.floor(now / 1000) + 10;
    cache.set('token', identity('u1'), exp, now);

    expect(cache.get('token', exp * 1000 - 1)).toEqual(identity('u1'));
    expect(cache.get('token', exp * 1000)).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it('when more tokens verify than it holds, then the least recently used one is dropped', () => {
    const cache = new VerifiedTokenCache(2);
    const now = Date.now();
    const exp = Math.floor(now / 1000) + 3600;
    cache.set('a', identity('a'), exp, now);
    cache.set('b', identity('b'), exp, now);
    cache.get('a', now);
    cache.set('c', identity('c'), exp, now);

    expect(cache.size).toBe(2);
    expect(cache.get('b', now)).toBeUndefined();
    expect(cache.get('a', now)).toEqual(identity('a'));
    expect(cache.get('c', now)).toEqual(identity('c'));
  });
});
