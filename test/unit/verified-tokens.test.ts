import { VerifiedTokens } from '../../src/auth/verified-tokens';
import { AuthError, type Principal, type TokenVerifier } from '../../src/auth/verifier';

/** A verifier that accepts tokens starting with "ok" and counts its calls. */
function countingVerifier(expiresAt: () => number) {
  const calls: string[] = [];
  const verifier: TokenVerifier = {
    async verify(token) {
      calls.push(token);
      if (!token.startsWith('ok')) throw new AuthError(401, 'invalid token');
      return { userId: token, roles: new Set<string>(), expiresAt: expiresAt() } satisfies Principal;
    },
  };
  return { calls, verifier };
}

describe('verified token cache', () => {
  it('verifies a token once while it is valid, and again once it expired', async () => {
    let expiresAt = Date.now() + 60_000;
    const { calls, verifier } = countingVerifier(() => expiresAt);
    const cached = new VerifiedTokens(verifier);
    const first = await cached.verify('ok-a');
    expect(await cached.verify('ok-a')).toBe(first);
    expect(calls).toEqual(['ok-a']);
    expiresAt = Date.now() - 1;
    await cached.verify('ok-b');
    await expect(cached.verify('ok-b')).resolves.toMatchObject({ userId: 'ok-b' });
    expect(calls).toEqual(['ok-a', 'ok-b', 'ok-b']);
  });

  it('treats a token differing in any byte as new, and never remembers a failure', async () => {
    const { calls, verifier } = countingVerifier(() => Date.now() + 60_000);
    const cached = new VerifiedTokens(verifier);
    await cached.verify('ok-token');
    await cached.verify('ok-tokeN');
    await expect(cached.verify('bad')).rejects.toBeInstanceOf(AuthError);
    await expect(cached.verify('bad')).rejects.toBeInstanceOf(AuthError);
    expect(calls).toEqual(['ok-token', 'ok-tokeN', 'bad', 'bad']);
  });

  it('shares one verification among concurrent checks of a token', async () => {
    const { calls, verifier } = countingVerifier(() => Date.now() + 60_000);
    const cached = new VerifiedTokens(verifier);
    const principals = await Promise.all(Array.from({ length: 5 }, () => cached.verify('ok-tab')));
    expect(new Set(principals).size).toBe(1);
    expect(calls).toEqual(['ok-tab']);
  });

  it('keeps at most its bound, dropping the oldest', async () => {
    const { calls, verifier } = countingVerifier(() => Date.now() + 60_000);
    const cached = new VerifiedTokens(verifier, 2);
    for (const token of ['ok-1', 'ok-2', 'ok-3', 'ok-3', 'ok-2', 'ok-1']) await cached.verify(token);
    expect(calls).toEqual(['ok-1', 'ok-2', 'ok-3', 'ok-1']);
  });
});
