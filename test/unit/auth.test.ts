import { generateKeyPairSync } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, exportJWK } from 'jose';
import type { JwtConfig } from '../../src/config';
import { extractToken } from '../../src/auth/token';
import { AuthError, createVerifier } from '../../src/auth/verifier';
import { TEST_SECRET, mintToken, unsignedToken } from '../helpers/tokens';

const base: JwtConfig = { userClaim: 'sub', clockToleranceSec: 0, secret: TEST_SECRET };

async function rejection(promise: Promise<unknown>): Promise<AuthError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof AuthError) return err;
    throw err;
  }
  throw new Error('expected the token to be rejected');
}

describe('token verification (HS256)', () => {
  const verifier = createVerifier(base);

  it('accepts a valid token and reads user, roles and expiry', async () => {
    const principal = await verifier.verify(await mintToken('alice', { roles: ['admin', 7 as unknown as string] }));
    expect(principal.userId).toBe('alice');
    expect([...principal.roles]).toEqual(['admin']);
    expect(principal.expiresAt).toBeGreaterThan(Date.now());
  });

  it('rejects expired tokens, wrong signatures and alg:none', async () => {
    expect((await rejection(verifier.verify(await mintToken('a', { expiresIn: -10 })))).status).toBe(401);
    const forged = await mintToken('a', { secret: 'another-secret-0123456789abcdef012345' });
    expect((await rejection(verifier.verify(forged))).status).toBe(401);
    expect((await rejection(verifier.verify(unsignedToken('a')))).status).toBe(401);
    expect((await rejection(verifier.verify('not.a.jwt'))).status).toBe(401);
  });

  it('keeps a stream open exactly as long as the token would still be accepted', async () => {
    const tolerant = createVerifier({ ...base, clockToleranceSec: 30 });
    const token = await mintToken('a', { expiresIn: -10 });
    const exp = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()).exp as number;
    expect((await tolerant.verify(token)).expiresAt).toBe((exp + 30) * 1000);
  });

  it("refuses user claims no event could be addressed to (a lone surrogate would be stored as another user's id)", async () => {
    for (const sub of ['x\ud800', '\udc00', 'a\u0000b', 'u'.repeat(513)]) {
      expect((await rejection(verifier.verify(await mintToken(sub)))).message).toMatch(/not a valid user id/);
    }
    expect((await verifier.verify(await mintToken('\ud83d\ude00'))).userId).toBe('\ud83d\ude00');
  });

  it('requires exp', async () => {
    const noExp = await new SignJWT({ sub: 'a' })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode(TEST_SECRET));
    expect((await rejection(verifier.verify(noExp))).message).toMatch(/invalid token/);
  });

  it('checks audience and issuer when configured', async () => {
    const strict = createVerifier({ ...base, audience: 'ssehub', issuer: 'https://idp' });
    await expect(
      strict.verify(await mintToken('a', { audience: 'ssehub', issuer: 'https://idp' })),
    ).resolves.toBeDefined();
    await rejection(strict.verify(await mintToken('a', { audience: 'other', issuer: 'https://idp' })));
    await rejection(strict.verify(await mintToken('a', { audience: 'ssehub', issuer: 'https://evil' })));
    await rejection(strict.verify(await mintToken('a')));
  });

  it('reads the user from the configured claim', async () => {
    const custom = createVerifier({ ...base, userClaim: 'uid' });
    expect((await custom.verify(await mintToken('ignored', { claims: { uid: 'u-42' } }))).userId).toBe('u-42');
    await rejection(custom.verify(await mintToken('ignored')));
  });
});

describe('token verification (public keys)', () => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsaPem = rsa.publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const verifier = createVerifier({ userClaim: 'sub', clockToleranceSec: 0, publicKeyPem: rsaPem });

  it('accepts RS256 tokens signed with the private key', async () => {
    const token = await new SignJWT({ sub: 'r' })
      .setProtectedHeader({ alg: 'RS256' })
      .setExpirationTime('1h')
      .sign(rsa.privateKey);
    expect((await verifier.verify(token)).userId).toBe('r');
  });

  it('rejects HS256 tokens signed with the public key as secret (algorithm confusion)', async () => {
    const token = await new SignJWT({ sub: 'r' })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(new TextEncoder().encode(rsaPem));
    expect((await rejection(verifier.verify(token))).status).toBe(401);
  });

  it('pins EC keys to their curve algorithm', async () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const ecVerifier = createVerifier({
      userClaim: 'sub',
      clockToleranceSec: 0,
      publicKeyPem: ec.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    });
    const token = await new SignJWT({ sub: 'e' })
      .setProtectedHeader({ alg: 'ES256' })
      .setExpirationTime('1h')
      .sign(ec.privateKey);
    expect((await ecVerifier.verify(token)).userId).toBe('e');
    await rejection(verifier.verify(token));
  });
});

describe('token verification (JWKS)', () => {
  const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
  let server: Server;
  let jwksUrl: string;
  let fetches = 0;

  beforeAll(async () => {
    const jwk = { ...(await exportJWK(signing.publicKey)), kid: 'key-1', alg: 'RS256', use: 'sig' };
    server = createServer((_req, res) => {
      fetches++;
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const sign = (kid: string, key = signing.privateKey) =>
    new SignJWT({ sub: 'j', roles: ['service'] })
      .setProtectedHeader({ alg: 'RS256', kid })
      .setExpirationTime('1h')
      .sign(key);

  it('verifies tokens against the fetched key set and caches it', async () => {
    const verifier = createVerifier({ userClaim: 'sub', clockToleranceSec: 0, jwksUrl });
    expect((await verifier.verify(await sign('key-1'))).roles.has('service')).toBe(true);
    await verifier.verify(await sign('key-1'));
    expect(fetches).toBe(1);
  });

  it('answers 503, not 401, when the key set cannot be fetched', async () => {
    const unreachable = createVerifier({
      userClaim: 'sub',
      clockToleranceSec: 0,
      jwksUrl: 'http://127.0.0.1:1/jwks.json',
    });
    expect((await rejection(unreachable.verify(await sign('key-1')))).status).toBe(503);
  });

  it('answers 503 when the key set endpoint fails: a 5xx, an HTML page, bad JSON, no key set, or no answer', async () => {
    type Outage = '500' | 'html' | 'garbage' | 'not-a-key-set' | 'hang';
    let outage: Outage = '500';
    const broken = createServer((_req, res) => {
      if (outage === '500') res.writeHead(500, { 'Content-Type': 'text/plain' }).end('upstream broke');
      if (outage === 'html') res.writeHead(200, { 'Content-Type': 'text/html' }).end('<html><body>Login</body></html>');
      if (outage === 'garbage') res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"keys":');
      if (outage === 'not-a-key-set') res.writeHead(200, { 'Content-Type': 'application/json' }).end('{"keys":7}');
      // 'hang': never answer; jose gives up after its 5 s fetch timeout.
    });
    await new Promise<void>((resolve) => broken.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(broken.address() as AddressInfo).port}/jwks.json`;
    try {
      for (const shape of ['500', 'html', 'garbage', 'not-a-key-set', 'hang'] as const) {
        outage = shape;
        // A verifier per shape: jose would not refetch within its cooldown.
        const verifier = createVerifier({ userClaim: 'sub', clockToleranceSec: 0, jwksUrl: url });
        const started = Date.now();
        const err = await rejection(verifier.verify(await sign('key-1')));
        console.log(`JWKS outage ${shape}: ${err.status} after ${Date.now() - started} ms`);
        expect({ shape, status: err.status }).toEqual({ shape, status: 503 });
      }
    } finally {
      broken.closeAllConnections();
      await new Promise((resolve) => broken.close(resolve));
    }
  });

  it('rejects unknown key ids and foreign keys with 401', async () => {
    const verifier = createVerifier({ userClaim: 'sub', clockToleranceSec: 0, jwksUrl });
    const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
    expect((await rejection(verifier.verify(await sign('key-2')))).status).toBe(401);
    expect((await rejection(verifier.verify(await sign('key-1', other.privateKey)))).status).toBe(401);
  });
});

describe('token extraction', () => {
  it('takes the bearer header first, then the access_token cookie', () => {
    expect(extractToken({ authorization: 'Bearer abc.def.ghi' })).toBe('abc.def.ghi');
    expect(extractToken({ authorization: 'bearer  abc' })).toBe('abc');
    expect(extractToken({ cookie: 'theme=dark; access_token=tok%2E1; x=y' })).toBe('tok.1');
    expect(extractToken({ authorization: 'Bearer h', cookie: 'access_token=c' })).toBe('h');
  });

  it('ignores other schemes, empty cookies and lookalike names', () => {
    expect(extractToken({ authorization: 'Basic dXNlcjpwdw==' })).toBeUndefined();
    expect(extractToken({ cookie: 'access_token=' })).toBeUndefined();
    expect(extractToken({ cookie: 'my_access_token=x' })).toBeUndefined();
    expect(extractToken({})).toBeUndefined();
  });
});
