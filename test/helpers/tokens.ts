import { SignJWT } from 'jose';

export const TEST_SECRET = 'test-secret-0123456789abcdef0123456789';

export interface TokenOptions {
  roles?: string[];
  /** Seconds from now; negative for an already expired token. */
  expiresIn?: number;
  audience?: string;
  issuer?: string;
  secret?: string;
  claims?: Record<string, unknown>;
}

export async function mintToken(userId: string, options: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  let jwt = new SignJWT({ sub: userId, roles: options.roles ?? [], ...options.claims })
    .setProtectedHeader({ alg: 'HS256' })
    .setIssuedAt(now)
    .setExpirationTime(now + (options.expiresIn ?? 3600));
  if (options.audience) jwt = jwt.setAudience(options.audience);
  if (options.issuer) jwt = jwt.setIssuer(options.issuer);
  return jwt.sign(new TextEncoder().encode(options.secret ?? TEST_SECRET));
}

/** An unsigned token (`alg: none`), which the hub must never accept. */
export function unsignedToken(userId: string): string {
  const encode = (value: object): string => Buffer.from(JSON.stringify(value)).toString('base64url');
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ sub: userId, roles: ['admin'], exp })}.`;
}
