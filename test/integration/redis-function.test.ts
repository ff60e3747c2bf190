import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { parseEventId } from '../../src/history/event-id';
import { REDIS_LIBRARY } from '../../src/transport/redis/library';
import { MAX_JSON_DEPTH, parseEnvelope, validateEvent, validateUserId } from '../../src/wire/envelope';
import { SHARED_REDIS_URL, uniquePrefix } from '../helpers/hub-process';

const MAX_EVENT_BYTES = 1024 * 1024;

/**
 * The Redis function is the publish path for every other language: whatever it accepts must be
 * what the hubs deliver, and whatever the hubs would drop it must refuse with a clear error.
 */
describe('ssehub_publish agrees with the hub about what is a valid event', () => {
  const redis = new Redis(SHARED_REDIS_URL);
  const subscriber = new Redis(SHARED_REDIS_URL);
  const prefix = uniquePrefix();
  const published: Buffer[] = [];

  beforeAll(async () => {
    await redis.call('FUNCTION', 'LOAD', 'REPLACE', REDIS_LIBRARY);
    await subscriber.psubscribe(`${prefix}:*`);
    subscriber.on('pmessageBuffer', (_p: Buffer, _c: Buffer, message: Buffer) => published.push(message));
  });

  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length > 0) await redis.del(...keys);
    redis.disconnect();
    subscriber.disconnect();
  });

  const fcall = async (user: string | Buffer, event: string | Buffer): Promise<{ id?: string; error?: string }> => {
    try {
      const id = (await redis.call('FCALL', 'ssehub_publish', '0', 'agui', user, event, prefix)) as string;
      return { id };
    } catch (err) {
      return { error: (err as Error).message };
    }
  };

  const nest = (depth: number): string => `${'{"a":'.repeat(depth - 1)}{}${'}'.repeat(depth - 1)}`;
  const cases: Array<[string, string | Buffer]> = [
    ['plain', '{"type":"A"}'],
    ['NaN', '{"a":NaN}'],
    ['hex', '{"a":0x10}'],
    ['Infinity', '{"a":Infinity}'],
    ['leading zero', '{"a":01}'],
    ['huge exponent', '{"a":1e999}'],
    ['trailing comma', '{"a":1,}'],
    ['trailing garbage', '{"a":1}x'],
    ['array', '[1,2]'],
    ['string', '"x"'],
    ['whitespace around', ' \n{"a":1}\t'],
    ['invalid utf-8', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])],
    ['overlong utf-8', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')])],
    ['surrogate utf-8', Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')])],
    ['4-byte utf-8', '{"a":"😀 é 中"}'],
    [`depth ${MAX_JSON_DEPTH}`, nest(MAX_JSON_DEPTH)],
    [`depth ${MAX_JSON_DEPTH + 1}`, nest(MAX_JSON_DEPTH + 1)],
    ['brackets in strings', `{"s":"${'['.repeat(200)}"}`],
    ['escaped quote then bracket', '{"s":"\\"[","t":[1]}'],
  ];

  it.each(cases)('%s', async (_name, event) => {
    const bytes = Buffer.isBuffer(event) ? event : Buffer.from(event);
    const hubAccepts = validateEvent(bytes, MAX_EVENT_BYTES) === undefined;
    const result = await fcall('u', bytes);
    expect({ accepted: result.id !== undefined }).toEqual({ accepted: hubAccepts });
    if (result.error) expect(result.error).toMatch(/^ERR ssehub: /);
    if (result.id) expect(parseEventId(result.id)).toBeDefined();
  });

  it('refuses user ids the hub would drop, and counts their length as the hub does', async () => {
    const users: Array<string | Buffer> = [
      '',
      'x'.repeat(512),
      'x'.repeat(513),
      '😀'.repeat(256),
      '😀'.repeat(257),
      'é'.repeat(512),
      Buffer.from([0xff, 0x41]),
      'a\0b',
    ];
    for (const user of users) {
      const hubAccepts = typeof user === 'string' && validateUserId(user) === undefined;
      const result = await fcall(user, '{"a":1}');
      expect({ user: String(user).slice(0, 20), accepted: result.id !== undefined }).toEqual({
        user: String(user).slice(0, 20),
        accepted: hubAccepts,
      });
    }
  });

  it('every envelope it publishes passes the hub parser (random mutations of valid events)', async () => {
    published.length = 0;
    const seeds = [
      '{"type":"TEXT_MESSAGE_CONTENT","delta":"héllo\\n","n":[1,2.5e3,-0,true,null,{"x":"😀"}]}',
      '{\n  "a": {"b":[{"c":"\\u00e9\\n"}]},\n\t"z": 1e-5\n}',
      '{"s":"\\"\\\\/\\b\\f\\n\\r\\t\\u0041"}',
    ];
    // Bytes that matter to JSON and UTF-8: structure, numbers, literals, controls, broken sequences.
    const alphabet = Buffer.from(
      '{}[]",:\\ \t\n\r0123456789-+.eEtrufalsn\x00\x01\x7f\xc3\xa9\xff\xed\xa0\x80uU',
      'latin1',
    );
    const pick = (n: number): number => randomBytes(4).readUInt32LE() % n;
    let accepted = 0;
    for (let i = 0; i < 2000; i++) {
      let mutated = Buffer.from(seeds[i % seeds.length] as string);
      for (let m = 0; m < 1 + (i % 4); m++) {
        const at = pick(mutated.length);
        const byte = alphabet[pick(alphabet.length)] as number;
        const op = pick(3);
        if (op === 0) mutated[at] = byte;
        else if (op === 1)
          mutated = Buffer.concat([mutated.subarray(0, at), Buffer.from([byte]), mutated.subarray(at)]);
        else mutated = Buffer.concat([mutated.subarray(0, at), mutated.subarray(at + 1)]);
      }
      if (mutated.length === 0) continue;
      const result = await fcall(`user-${i % 7}`, mutated);
      const hubAccepts = validateEvent(mutated, MAX_EVENT_BYTES) === undefined;
      expect({ input: mutated.toString('latin1'), accepted: result.id !== undefined }).toEqual({
        input: mutated.toString('latin1'),
        accepted: hubAccepts,
      });
      if (result.id) accepted++;
    }
    const deadline = Date.now() + 5000;
    while (published.length < accepted && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(published).toHaveLength(accepted);
    for (const envelope of published) expect(parseEnvelope(envelope, MAX_EVENT_BYTES)).toMatchObject({ ok: true });
  });
});
