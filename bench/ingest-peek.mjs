#!/usr/bin/env node
// @ts-check
/**
 * What a replica pays per event it does not hold a stream for: the full envelope check
 * (admitEnvelope) against the quick user-id read (peekEnvelopeUserId) that now drops such events.
 * Runs on the compiled hub: `npm run build && node bench/ingest-peek.mjs`.
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { admitEnvelope } = require('../dist/wire/envelope.js');
const { peekEnvelopeUserId } = require('../dist/wire/peek-user-id.js');

// The benchmark's ~200-byte event (bench/load/event.mjs) in the envelope the Redis function publishes.
const event = `{"seq":1,"t":1234567890123,"type":"TEXT_MESSAGE_CONTENT","messageId":"msg-000001","delta":"${'x'.repeat(90)}"}`;
const envelopes = Array.from({ length: 1000 }, (_, i) =>
  Buffer.from(`{"id":"k1:1700000000000-${i}","user_id":"b1-abc-u${i}","event":${event}}`),
);
const ROUNDS = 200;

/** @param {string} label @param {(envelope: Buffer) => unknown} read */
function measure(label, read) {
  let perEventUs = 0;
  // The last of three passes, after the JIT has settled.
  for (let pass = 0; pass < 3; pass++) {
    const started = process.hrtime.bigint();
    for (let round = 0; round < ROUNDS; round++) for (const envelope of envelopes) read(envelope);
    perEventUs = Number(process.hrtime.bigint() - started) / 1e3 / (ROUNDS * envelopes.length);
  }
  console.log(`${label.padEnd(40)} ${perEventUs.toFixed(3)} µs/event (${envelopes[0].length}-byte envelope)`);
}

measure('admitEnvelope (full parse and checks)', (envelope) => admitEnvelope('agui', envelope, 1 << 20));
measure('peekEnvelopeUserId (user id only)', (envelope) => peekEnvelopeUserId(envelope));
