import { createHash } from 'node:crypto';
import type { Principal, TokenVerifier } from './verifier';

/** Enough for every token of a busy replica's reconnect storm; a token costs a few hundred bytes. */
const DEFAULT_MAX_ENTRIES = 10_000;

/**
 * Remembers tokens that verified, until they expire: reconnects and extra tabs present the same
 * token again, and a signature check (130-225 µs for HS256 here) is most of a stream open's cost.
 * The key is the token's SHA-256, so a hit proves these exact bytes were verified (a token that
 * differs in any byte is verified afresh) while an entry costs a few dozen bytes, not the token's
 * few hundred: a replica holds one per connected user. Concurrent checks of one token share one verification.
 * Failures are never remembered. A key removed from a JWKS keeps its tokens valid here until they
 * expire, as they would be for a client that is already connected.
 */
export class VerifiedTokens implements TokenVerifier {
  private readonly verified = new Map<string, Principal>();
  private readonly pending = new Map<string, Promise<Principal>>();

  constructor(
    private readonly inner: TokenVerifier,
    private readonly maxEntries = DEFAULT_MAX_ENTRIES,
  ) {}

  verify(token: string): Promise<Principal> {
    const key = createHash('sha256').update(token).digest('base64');
    const hit = this.verified.get(key);
    if (hit !== undefined) {
      if (hit.expiresAt > Date.now()) return Promise.resolve(hit);
      this.verified.delete(key);
    }
    const inFlight = this.pending.get(key);
    if (inFlight !== undefined) return inFlight;
    const verification = this.inner.verify(token).then(
      (principal) => {
        this.pending.delete(key);
        this.remember(key, principal);
        return principal;
      },
      (err: unknown) => {
        this.pending.delete(key);
        throw err;
      },
    );
    this.pending.set(key, verification);
    return verification;
  }

  private remember(key: string, principal: Principal): void {
    this.verified.set(key, principal);
    // Map iteration is insertion order: the oldest entry goes first.
    if (this.verified.size > this.maxEntries) {
      const oldest = this.verified.keys().next().value;
      if (oldest !== undefined) this.verified.delete(oldest);
    }
  }
}
