import type { JwtConfig } from '../config';
import { createVerifier, type TokenVerifier } from './verifier';

/** One key source (an HS256 secret, a PEM public key, or a JWKS URL) and the claims to check. */
export type JwtOptions = Partial<JwtConfig> & ({ secret: string } | { publicKeyPem: string } | { jwksUrl: string });

/** The stand-alone server's defaults, so an embedded hub verifies tokens the same way. */
export const JWT_DEFAULTS = { userClaim: 'sub', clockToleranceSec: 30 } as const;

/** A JWT verifier for `jwtAuthenticator`; the user id comes from `userClaim` (`sub`), roles from `roles`. */
export function jwtVerifier(options: JwtOptions): TokenVerifier {
  return createVerifier({ ...JWT_DEFAULTS, ...options });
}
