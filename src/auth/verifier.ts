import { createPublicKey, createSecretKey, type KeyObject } from 'node:crypto';
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import type { JwtConfig } from '../config';
import { validateUserId } from '../wire/envelope';
import { AuthError } from './auth-error';
import { Hs256Verifier } from './hs256';
import { VerifiedTokens } from './verified-tokens';

export { AuthError };

export const ROLE_ADMIN = 'admin';
export const ROLE_SERVICE = 'service';

const NO_ROLES: ReadonlySet<string> = new Set();

/** Who a verified token speaks for. */
export interface Principal {
  userId: string;
  roles: ReadonlySet<string>;
  /** Epoch milliseconds after which the token is no longer accepted (`exp` plus the clock tolerance). */
  expiresAt: number;
}

export interface TokenVerifier {
  verify(token: string): Promise<Principal>;
}

const RSA_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const EC_ALGORITHMS: Record<string, string> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' };
const ASYMMETRIC_ALGORITHMS = [...RSA_ALGORITHMS, ...Object.values(EC_ALGORITHMS), 'EdDSA', 'Ed25519'];

/** Only algorithms of the configured key's own family are accepted: no `none`, no HS/RS confusion. */
function algorithmsForPublicKey(key: KeyObject): string[] {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return RSA_ALGORITHMS;
    case 'rsa-pss':
      return RSA_ALGORITHMS.filter((alg) => alg.startsWith('PS'));
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve ?? '';
      const alg = EC_ALGORITHMS[curve];
      if (!alg) throw new Error(`unsupported EC curve ${curve} in SSEHUB_JWT_PUBLIC_KEY`);
      return [alg];
    }
    case 'ed25519':
      return ['EdDSA', 'Ed25519'];
    default:
      throw new Error(`unsupported key type ${String(key.asymmetricKeyType)} in SSEHUB_JWT_PUBLIC_KEY`);
  }
}

type VerificationKey = KeyObject | JWTVerifyGetKey;

/** The key set could not be had (the endpoint failed, answered nonsense or timed out): the token may be fine. */
class KeySetUnavailable extends Error {}

/**
 * A failure of the key set's fetch, not of the token: everything the remote key set throws
 * except "no key matches the token" (and "several do"), which are the token's own fault.
 */
function isKeySetFailure(err: unknown): boolean {
  return !(err instanceof errors.JWKSNoMatchingKey || err instanceof errors.JWKSMultipleMatchingKeys);
}

/**
 * A remote key set whose outages of every shape (5xx, an HTML page, bad JSON, a bad key set, a
 * refused connection, a timeout) are told apart from bad tokens: jose reports several of them as
 * plain JOSEErrors, the same class as a malformed token's.
 */
function remoteKeySet(url: URL): JWTVerifyGetKey {
  const keySet = createRemoteJWKSet(url);
  return async (header, token) => {
    try {
      return await keySet(header, token);
    } catch (err) {
      if (isKeySetFailure(err)) throw new KeySetUnavailable('key set unavailable', { cause: err });
      throw err;
    }
  };
}

class JoseVerifier implements TokenVerifier {
  constructor(
    private readonly key: VerificationKey,
    private readonly algorithms: string[],
    private readonly config: JwtConfig,
  ) {}

  async verify(token: string): Promise<Principal> {
    let payload: JWTPayload;
    try {
      const options = {
        algorithms: this.algorithms,
        issuer: this.config.issuer,
        audience: this.config.audience,
        requiredClaims: ['exp'],
        clockTolerance: this.config.clockToleranceSec,
      };
      // jwtVerify's overloads differ only in the key's type; pick the matching one.
      const result =
        typeof this.key === 'function'
          ? await jwtVerify(token, this.key, options)
          : await jwtVerify(token, this.key, options);
      payload = result.payload;
    } catch (err) {
      if (err instanceof KeySetUnavailable) throw new AuthError(503, 'key set unavailable');
      if (err instanceof errors.JWTExpired) throw new AuthError(401, 'token expired');
      if (err instanceof errors.JOSEError) throw new AuthError(401, `invalid token (${err.code})`);
      throw new AuthError(401, 'invalid token');
    }
    return principalFrom(payload, this.config);
  }
}

/** HS256 through node:crypto, synchronously (see Hs256Verifier for why not jose). */
class HmacVerifier implements TokenVerifier {
  private readonly hs256: Hs256Verifier;

  constructor(
    secret: Uint8Array,
    private readonly config: JwtConfig,
  ) {
    this.hs256 = new Hs256Verifier(createSecretKey(secret), config);
  }

  async verify(token: string): Promise<Principal> {
    return principalFrom(this.hs256.verify(token), this.config);
  }
}

/** Who a verified token's claims name: the user claim, the roles, and until when. */
function principalFrom(payload: JWTPayload, config: JwtConfig): Principal {
  const userId = payload[config.userClaim];
  if (typeof userId !== 'string' || userId.length === 0) {
    throw new AuthError(401, `token has no string "${config.userClaim}" claim`);
  }
  // The same rules as for publishers: a user id no event could be addressed to, or one a store
  // would rewrite into another user's, opens nothing.
  if (validateUserId(userId)) throw new AuthError(401, `token's "${config.userClaim}" claim is not a valid user id`);
  const rolesClaim = payload.roles;
  const named = Array.isArray(rolesClaim) ? rolesClaim.filter((r): r is string => typeof r === 'string') : [];
  // Most users have no role: one shared empty set keeps each remembered principal small.
  const roles = named.length === 0 ? NO_ROLES : new Set(named);
  // Streams stay open as long as verification itself would accept the token; closing earlier
  // would send a client with a token inside the tolerance into a reconnect loop.
  const expiresAt = ((payload.exp as number) + config.clockToleranceSec) * 1000;
  return { userId, roles, expiresAt };
}

/**
 * Builds the verifier for the configured key (`fallbackSecret` is the development-mode key),
 * remembering tokens that verified until they expire.
 */
export function createVerifier(config: JwtConfig, fallbackSecret?: Uint8Array): TokenVerifier {
  return new VerifiedTokens(createKeyVerifier(config, fallbackSecret));
}

function createKeyVerifier(config: JwtConfig, fallbackSecret?: Uint8Array): TokenVerifier {
  if (config.secret !== undefined) {
    return new HmacVerifier(new TextEncoder().encode(config.secret), config);
  }
  if (config.publicKeyPem !== undefined) {
    const key = createPublicKey(config.publicKeyPem);
    return new JoseVerifier(key, algorithmsForPublicKey(key), config);
  }
  if (config.jwksUrl !== undefined) {
    return new JoseVerifier(remoteKeySet(new URL(config.jwksUrl)), ASYMMETRIC_ALGORITHMS, config);
  }
  if (fallbackSecret !== undefined) return new HmacVerifier(fallbackSecret, config);
  throw new Error('no JWT key configured');
}
