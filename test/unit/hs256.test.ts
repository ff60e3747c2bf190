import { createHmac, createSecretKey } from 'node:crypto';
import { jwtVerify } from 'jose';
import { AuthError } from '../../src/auth/auth-error';
import { Hs256Verifier, type JwtClaims } from '../../src/auth/hs256';
import { jwtVerifier } from '../../src/auth/jwt';
import { TEST_SECRET } from '../helpers/tokens';

/**
 * The hub checks HS256 tokens itself (node:crypto) instead of through jose; these cases hold it
 * to jose's `jwtVerify` answers with the hub's options, token by token. Where the two differ the
 * hub is the stricter one, and those cases are named.
 */

const SECRET = new TextEncoder().encode(TEST_SECRET);
const TOLERANCE = 30;
const now = (): number => Math.floor(Date.now() / 1000);

interface Claims {
  issuer?: string;
  audience?: string;
}

const b64 = (bytes: string | Buffer): string => Buffer.from(bytes).toString('base64url');
const json = (value: unknown): string => b64(JSON.stringify(value));

/** A compact token over the segments as given, signed with `alg`'s HMAC (HS256 unless named). */
function signed(header: string, payload: string, hash = 'sha256', secret: Uint8Array = SECRET): string {
  return `${header}.${payload}.${createHmac(hash, secret).update(`${header}.${payload}`).digest('base64url')}`;
}

function token(payload: Record<string, unknown>, header: Record<string, unknown> = { alg: 'HS256' }): string {
  return signed(json(header), json(payload));
}

type Answer = { accepted: JwtClaims } | { refused: 'expired' | 'invalid' };

async function joseAnswer(jwt: string, claims: Claims): Promise<Answer> {
  try {
    const { payload } = await jwtVerify(jwt, SECRET, {
      algorithms: ['HS256'],
      issuer: claims.issuer,
      audience: claims.audience,
      requiredClaims: ['exp'],
      clockTolerance: TOLERANCE,
    });
    return { accepted: payload };
  } catch (err) {
    return { refused: (err as { code?: string }).code === 'ERR_JWT_EXPIRED' ? 'expired' : 'invalid' };
  }
}

function hubAnswer(jwt: string, claims: Claims): Answer {
  const verifier = new Hs256Verifier(createSecretKey(SECRET), { ...claims, clockToleranceSec: TOLERANCE });
  try {
    return { accepted: verifier.verify(jwt) };
  } catch (err) {
    if (!(err instanceof AuthError) || err.status !== 401) throw err;
    return { refused: err.message === 'token expired' ? 'expired' : 'invalid' };
  }
}

const valid = (): Record<string, unknown> => ({ sub: 'alice', exp: now() + 3600, iat: now() });

const SAME_ANSWER: Array<[string, () => string, Claims?]> = [
  ['a valid token', () => token(valid())],
  ['a token with roles and extra claims', () => token({ ...valid(), roles: ['admin'], tenant: { id: 7 } })],
  ['an expired token', () => token({ ...valid(), exp: now() - 3600 })],
  ['a token expired within the clock tolerance', () => token({ ...valid(), exp: now() - 10 })],
  ['a token expired just past the tolerance', () => token({ ...valid(), exp: now() - TOLERANCE - 1 })],
  ['a token not valid before a minute from now', () => token({ ...valid(), nbf: now() + 60 })],
  ['a token not valid before ten seconds from now (within tolerance)', () => token({ ...valid(), nbf: now() + 10 })],
  ['a token without exp', () => token({ sub: 'alice' })],
  ['exp as a string', () => token({ sub: 'alice', exp: String(now() + 3600) })],
  ['exp as null', () => token({ sub: 'alice', exp: null })],
  ['iat as a string', () => token({ ...valid(), iat: 'yesterday' })],
  ['nbf as a string', () => token({ ...valid(), nbf: 'now' })],
  ['a huge exp', () => signed(json({ alg: 'HS256' }), b64('{"sub":"alice","exp":1e400}'))],
  [
    'a repeated exp (the last one counts)',
    () => signed(json({ alg: 'HS256' }), b64(`{"exp":1,"sub":"a","exp":${now() + 60}}`)),
  ],
  ['another secret', () => signed(json({ alg: 'HS256' }), json(valid()), 'sha256', new TextEncoder().encode('x'))],
  ['HS384', () => signed(json({ alg: 'HS384' }), json(valid()), 'sha384')],
  ['an HS256 MAC under an RS256 header', () => signed(json({ alg: 'RS256' }), json(valid()))],
  ['alg none', () => `${json({ alg: 'none' })}.${json(valid())}.`],
  ['no alg', () => token(valid(), { typ: 'JWT' })],
  ['alg as a number', () => token(valid(), { alg: 256 })],
  [
    'a payload changed after signing',
    () => {
      const [header, , signature] = token(valid()).split('.');
      return `${header}.${json({ ...valid(), sub: 'mallory' })}.${signature}`;
    },
  ],
  ['a truncated signature', () => token(valid()).slice(0, -4)],
  ['a signature with more bytes', () => `${token(valid())}AAAA`],
  ['two segments', () => token(valid()).split('.').slice(0, 2).join('.')],
  ['four segments', () => `${token(valid())}.x`],
  ['an empty header', () => signed('', json(valid()))],
  ['an empty payload', () => signed(json({ alg: 'HS256' }), '')],
  ['a header that is not JSON', () => signed(b64('{alg:HS256}'), json(valid()))],
  ['a header that is an array', () => signed(json(['HS256']), json(valid()))],
  ['a payload that is an array', () => signed(json({ alg: 'HS256' }), json([valid()]))],
  ['a payload that is a number', () => signed(json({ alg: 'HS256' }), json(42))],
  ['a payload that is not UTF-8', () => signed(json({ alg: 'HS256' }), b64(Buffer.from([0x7b, 0xff, 0x7d])))],
  ['base64 (not base64url) characters', () => signed(json({ alg: 'HS256' }), `${json(valid())}+/`)],
  ['a header of 4k+1 characters', () => signed(`${json({ alg: 'HS256' })}A`, json(valid()))],
  [
    'a signature in characters whose low bytes spell it',
    () => {
      const jwt = token(valid());
      const dot = jwt.lastIndexOf('.');
      const wide = [...jwt.slice(dot + 1)].map((c) => String.fromCharCode(0x100 + c.charCodeAt(0))).join('');
      return `${jwt.slice(0, dot + 1)}${wide}`;
    },
  ],
  ['an unknown critical extension', () => token(valid(), { alg: 'HS256', crit: ['exp'], exp: 1 })],
  ['an unencoded payload (b64: false)', () => token(valid(), { alg: 'HS256', crit: ['b64'], b64: false })],
  ['b64: false without crit (ignored)', () => token(valid(), { alg: 'HS256', b64: false })],
  ['the configured issuer', () => token({ ...valid(), iss: 'https://idp' }), { issuer: 'https://idp' }],
  ['another issuer', () => token({ ...valid(), iss: 'https://evil' }), { issuer: 'https://idp' }],
  ['no issuer where one is configured', () => token(valid()), { issuer: 'https://idp' }],
  ['the configured audience', () => token({ ...valid(), aud: 'ssehub' }), { audience: 'ssehub' }],
  ['an audience list holding it', () => token({ ...valid(), aud: ['other', 'ssehub'] }), { audience: 'ssehub' }],
  ['another audience', () => token({ ...valid(), aud: 'other' }), { audience: 'ssehub' }],
  ['no audience where one is configured', () => token(valid()), { audience: 'ssehub' }],
];

/** The same MAC spelt another way: the last character's two unused bits set. */
function respelledSignature(jwt: string): string {
  const last = jwt.at(-1) as string;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  return `${jwt.slice(0, -1)}${alphabet[alphabet.indexOf(last) ^ 1]}`;
}

const STRICTER: Array<[string, () => string]> = [
  ['padding after the signature', () => `${token(valid())}=`],
  ['the signature spelt with unused bits set', () => respelledSignature(token(valid()))],
  ['a declared b64 extension that changes nothing', () => token(valid(), { alg: 'HS256', crit: ['b64'], b64: true })],
];

describe('HS256 tokens checked without jose', () => {
  it.each(SAME_ANSWER)('answers as jose does: %s', async (_name, make, claims = {}) => {
    const jwt = make();
    expect(hubAnswer(jwt, claims)).toEqual(await joseAnswer(jwt, claims));
  });

  it.each(STRICTER)('refuses what jose would accept: %s', async (_name, make) => {
    const jwt = make();
    expect(await joseAnswer(jwt, {})).toHaveProperty('accepted');
    expect(hubAnswer(jwt, {})).toEqual({ refused: 'invalid' });
  });

  it('refuses to be built on a secret shorter than 256 bits, with which anyone could sign', () => {
    for (const secret of [Buffer.alloc(0), Buffer.alloc(31, 1)]) {
      expect(() => new Hs256Verifier(createSecretKey(secret), { clockToleranceSec: 0 })).toThrow('at least 32 bytes');
    }
    expect(() => jwtVerifier({ secret: '' })).toThrow('at least 32 bytes');
  });

  it('accepts a token only with a valid MAC over exactly the bytes sent', () => {
    const jwt = token(valid());
    for (let i = 0; i < jwt.length; i++) {
      if (jwt[i] === '.') continue;
      const flipped = `${jwt.slice(0, i)}${jwt[i] === 'A' ? 'B' : 'A'}${jwt.slice(i + 1)}`;
      expect(hubAnswer(flipped, {})).toHaveProperty('refused');
    }
  });
});
