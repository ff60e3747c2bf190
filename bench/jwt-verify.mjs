#!/usr/bin/env node
// @ts-check
/**
 * What a first-seen HS256 token costs to verify, CPU per token, and what a cheaper path would save:
 *
 *   node bench/jwt-verify.mjs [--tokens 5000] [--concurrency 1]
 *
 * - jose with the secret as bytes (imported into WebCrypto on every call),
 * - jose with the secret as a KeyObject (imported once),
 * - node:crypto HMAC + JSON.parse of the claims: the core of the hub's own HS256 check
 *   (src/auth/hs256.ts adds the header, algorithm and claim checks).
 * A loop like this one keeps the process busy, so it does not see what jose's WebCrypto path
 * costs a server that sleeps between requests: each verification is a thread-pool job whose
 * completion wakes the event loop. Scenario B8 measures that in a replica opening streams.
 */
import { createHmac, createSecretKey, timingSafeEqual } from 'node:crypto';
import { SignJWT, jwtVerify } from 'jose';

const count = Number(process.argv[process.argv.indexOf('--tokens') + 1]) || 5000;
const secret = new TextEncoder().encode('bench-secret-0123456789abcdef0123456789abcdef');
const keyObject = createSecretKey(secret);
const tokens = [];
for (let i = 0; i < count; i++) {
  tokens.push(
    await new SignJWT({ sub: `user-${i}`, roles: [] })
      .setProtectedHeader({ alg: 'HS256' })
      .setExpirationTime('1h')
      .sign(secret),
  );
}

const concurrency = Number(process.argv[process.argv.indexOf('--concurrency') + 1]) || 1;

/**
 * CPU µs per token of `verify` over every token, `concurrency` at a time (as a burst of stream
 * opens runs them), after one warm-up pass.
 * @param {(token: string) => unknown} verify
 */
async function cpuPerToken(verify) {
  let perToken = Number.NaN;
  for (let pass = 0; pass < 2; pass++) {
    const start = process.cpuUsage();
    for (let i = 0; i < tokens.length; i += concurrency) {
      await Promise.all(tokens.slice(i, i + concurrency).map(verify));
    }
    const used = process.cpuUsage(start);
    perToken = (used.user + used.system) / tokens.length;
  }
  return perToken;
}

const options = { algorithms: ['HS256'], requiredClaims: ['exp'] };
const rows = [
  ['jose, secret as bytes', await cpuPerToken((t) => jwtVerify(t, secret, options))],
  ['jose, secret as KeyObject', await cpuPerToken((t) => jwtVerify(t, keyObject, options))],
  [
    'node:crypto HMAC + JSON.parse (the hub core)',
    await cpuPerToken((t) => {
      const dot = t.lastIndexOf('.');
      const mac = createHmac('sha256', keyObject).update(t.slice(0, dot)).digest();
      if (!timingSafeEqual(mac, Buffer.from(t.slice(dot + 1), 'base64url'))) throw new Error('bad signature');
      return JSON.parse(Buffer.from(t.slice(t.indexOf('.') + 1, dot), 'base64url').toString());
    }),
  ],
];
console.log(
  `HS256, ${count} distinct tokens, ${concurrency} at a time, CPU per verification (node ${process.version}):`,
);
for (const [name, us] of rows) console.log(`  ${String(name).padEnd(48)} ${Number(us).toFixed(1).padStart(7)} µs`);
