import { randomBytes } from 'node:crypto';
import calculateSlot from 'cluster-key-slot';
import { Redis } from 'ioredis';
import { parseEventId } from '../../src/history/event-id';
import { EVENT_KINDS } from '../../src/routing';
import {
  DEFAULT_HISTORY_SETTINGS,
  PUBLISH_BATCH_FUNCTION,
  PUBLISH_FUNCTION,
  redisLibrary,
  userKeys,
  userTag,
} from '../../src/transport/redis/library';
import { MAX_JSON_DEPTH, validateEvent } from '../../src/wire/envelope';
import { uniquePrefix } from '../helpers/hub-process';
import { OwnRedis } from '../helpers/redis-server';
import { userEpoch, userHistoryEvents, userHistoryLength, watchUserChannels } from '../helpers/redis-user';
import { sleep } from '../helpers/sse-client';
import { until, uid } from '../helpers/wait';

/**
 * The Redis functions are the publish path for every other language. They refuse only what would
 * harm Redis or the records' framing (unknown kinds, sizes, an event not from { to }, keys that
 * are not one user's), each with an exact error; everything else is stored and published, and the
 * replicas check each event as JSON where they deliver it. So what matters here: the refusals,
 * and that every message the functions publish parses as records of the user's channel, a bad
 * event dropping alone. (That a running hub counts those drops, live and at replay, is in
 * cluster.test.ts.)
 *
 * Redis is a private server: the library's limits are fixed when it is loaded, and hubs of other
 * suites on the shared Redis load theirs at any time.
 */

const MAX_EVENT_BYTES = 4096;

const ERR_KIND = (kind: string): string => `ERR ssehub: unknown kind ${kind} (${EVENT_KINDS.join(', ')})`;
const ERR_SIZE = `ERR ssehub: event must be 1 to ${MAX_EVENT_BYTES} bytes`;
const ERR_OBJECT = 'ERR ssehub: event must be a JSON object, from its { to its } without surrounding whitespace';
const ERR_KEYS = 'ERR ssehub: keys must be <prefix>:{<tag>}:m and <prefix>:{<tag>}:h';
const ERR_USER = 'ERR ssehub: user_id must be 1 to 2048 bytes';
const ERR_PAIRS = 'ERR ssehub: arguments must be <kind> <event> pairs';

let server: OwnRedis;
let redis: Redis;
const prefix = uniquePrefix();

beforeAll(async () => {
  server = await OwnRedis.start();
  redis = new Redis(server.url);
  await redis.call(
    'FUNCTION',
    'LOAD',
    'REPLACE',
    redisLibrary(new Map([[prefix, { ...DEFAULT_HISTORY_SETTINGS, maxEventBytes: MAX_EVENT_BYTES }]])),
  );
});

afterAll(async () => {
  redis?.disconnect();
  await server?.destroy();
});

type Arg = string | Buffer;

/** Runs FCALL; the reply, or the error's message. */
async function fcall(fn: string, keys: Arg[], args: Arg[]): Promise<{ reply?: unknown; error?: string }> {
  try {
    return { reply: await redis.call('FCALL', fn, String(keys.length), ...keys, ...args) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** Publishes one event of `userId` in the form the hub uses: the user's two keys declared. */
function publish(userId: string, kind: Arg, event: Arg): Promise<{ reply?: unknown; error?: string }> {
  const { meta, history } = userKeys(prefix, userId);
  return fcall(PUBLISH_FUNCTION, [meta, history], [kind, event]);
}

describe('what the functions refuse, with exact errors, leaving the user untouched', () => {
  const nothingWritten = async (userId: string): Promise<void> => {
    expect({ userId, epoch: await userEpoch(redis, prefix, userId) }).toEqual({ userId, epoch: undefined });
    expect(await userHistoryLength(redis, prefix, userId)).toBe(0);
  };

  it('refuses unknown kinds, events out of 1..max bytes, and events not from { to }', async () => {
    const user = uid('refused');
    const cases: Array<[Arg, Arg, string]> = [
      ['bogus', '{"a":1}', ERR_KIND('bogus')],
      ['AGUI', '{"a":1}', ERR_KIND('AGUI')],
      ['', '{"a":1}', ERR_KIND('')],
      ['agui', '', ERR_SIZE],
      ['agui', `{"pad":"${'x'.repeat(MAX_EVENT_BYTES - 9)}"}`, ERR_SIZE],
      ['agui', 'not json', ERR_OBJECT],
      ['agui', '"string"', ERR_OBJECT],
      ['agui', '[1,2]', ERR_OBJECT],
      ['agui', ' {"a":1}', ERR_OBJECT],
      ['agui', '{"a":1}\n', ERR_OBJECT],
      ['agui', '{"a":1}x', ERR_OBJECT],
    ];
    for (const [kind, event, error] of cases) {
      expect({ kind, event: String(event).slice(0, 20), ...(await publish(user, kind, event)) }).toEqual({
        kind,
        event: String(event).slice(0, 20),
        error,
      });
    }
    await nothingWritten(user);
    // The largest event it takes is exactly the limit.
    const largest = `{"pad":"${'x'.repeat(MAX_EVENT_BYTES - 10)}"}`;
    expect(Buffer.byteLength(largest)).toBe(MAX_EVENT_BYTES);
    expect(parseEventId(String((await publish(user, 'agui', largest)).reply))).toBeDefined();
  });

  it("refuses keys that are not one user's meta and history under one tag", async () => {
    const user = uid('keys');
    const { meta, history } = userKeys(prefix, user);
    const other = userKeys(prefix, uid('other'));
    const cases: Arg[][] = [
      [meta],
      [history, meta],
      [meta, other.history],
      [`${prefix}:{${user}}:x`, history],
      [meta, `${prefix}:{${user}}:hh`],
      [`${'p'.repeat(8192)}:{${user}}:m`, `${'p'.repeat(8192)}:{${user}}:h`],
    ];
    for (const keys of cases) {
      const name = keys.map((key) => String(key).slice(-40));
      expect({ name, ...(await fcall(PUBLISH_FUNCTION, keys, ['agui', '{"a":1}'])) }).toEqual({
        name,
        error: ERR_KEYS,
      });
    }
    expect(await fcall(PUBLISH_BATCH_FUNCTION, [history, meta], ['agui', '{"a":1}'])).toEqual({ error: ERR_KEYS });
    await nothingWritten(user);
  });

  it('refuses user ids of the legacy form (no keys declared) outside 1..2048 bytes', async () => {
    for (const user of ['', 'x'.repeat(2049), 'é'.repeat(1025)]) {
      expect(await fcall(PUBLISH_FUNCTION, [], ['agui', user, '{"a":1}', prefix])).toEqual({ error: ERR_USER });
    }
    const longest = 'x'.repeat(2048);
    expect(
      parseEventId(String((await fcall(PUBLISH_FUNCTION, [], ['agui', longest, '{"a":1}', prefix])).reply)),
    ).toBeDefined();
    expect(await userHistoryLength(redis, prefix, longest)).toBe(1);
  });

  it('refuses a whole batch when one event is refused, naming its position', async () => {
    const user = uid('batch');
    const { meta, history } = userKeys(prefix, user);
    const channel = await watchUserChannels(redis, prefix, [user], MAX_EVENT_BYTES);
    try {
      expect(await fcall(PUBLISH_BATCH_FUNCTION, [meta, history], [])).toEqual({ error: ERR_PAIRS });
      expect(await fcall(PUBLISH_BATCH_FUNCTION, [meta, history], ['agui', '{"a":1}', 'agui'])).toEqual({
        error: ERR_PAIRS,
      });
      expect(
        await fcall(
          PUBLISH_BATCH_FUNCTION,
          [meta, history],
          ['agui', '{"a":1}', 'bogus', '{"a":2}', 'agui', '{"a":3}'],
        ),
      ).toEqual({ error: `ERR ssehub: event 2: ${ERR_KIND('bogus').slice('ERR ssehub: '.length)}` });
      expect(await fcall(PUBLISH_BATCH_FUNCTION, [meta, history], ['agui', '{"a":1}', 'agui', '{"a":1} '])).toEqual({
        error: `ERR ssehub: event 2: ${ERR_OBJECT.slice('ERR ssehub: '.length)}`,
      });
      await nothingWritten(user);
      // The same batch without the refused event goes as one message, with consecutive ids.
      const reply = (await fcall(PUBLISH_BATCH_FUNCTION, [meta, history], ['agui', '{"a":1}', 'system', '{"a":3}']))
        .reply as [number, string, string];
      expect(reply[0]).toBe(1);
      const ids = reply.slice(1).map((id) => parseEventId(id as string));
      expect(ids.map((id) => id?.seq)).toEqual([1, 2]);
      await until(() => channel.messages.length === 1, 5000, 'the batch message');
      await sleep(50);
      expect(channel.messages).toHaveLength(1);
      expect(channel.messages[0]?.admitted.map((e) => [e.kind, e.event.toString()])).toEqual([
        ['agui', '{"a":1}'],
        ['system', '{"a":3}'],
      ]);
    } finally {
      channel.close();
    }
  });
});

describe('what the functions accept and the replicas drop', () => {
  const nest = (depth: number): string => `${'{"a":'.repeat(depth - 1)}{}${'}'.repeat(depth - 1)}`;
  const utf8 = (...bytes: number[]): Buffer =>
    Buffer.concat([Buffer.from('{"a":"'), Buffer.from(bytes), Buffer.from('"}')]);
  const cases: Array<[string, Arg]> = [
    ['plain', '{"type":"A"}'],
    ['NaN', '{"a":NaN}'],
    ['hex', '{"a":0x10}'],
    ['Infinity', '{"a":Infinity}'],
    ['leading zero', '{"a":01}'],
    ['huge exponent', '{"a":1e999}'],
    ['trailing comma', '{"a":1,}'],
    ['two objects', '{"a":1}{"b":2}'],
    ['invalid utf-8', utf8(0xc3, 0x28)],
    ['overlong utf-8', utf8(0xc0, 0xaf)],
    ['surrogate utf-8', utf8(0xed, 0xa0, 0x80)],
    ['4-byte utf-8', '{"a":"😀 é 中"}'],
    [`depth ${MAX_JSON_DEPTH}`, nest(MAX_JSON_DEPTH)],
    [`depth ${MAX_JSON_DEPTH + 1}`, nest(MAX_JSON_DEPTH + 1)],
    ['brackets in strings', `{"s":"${'['.repeat(200)}"}`],
    ['escaped quote then bracket', '{"s":"\\"[","t":[1]}'],
  ];

  it.each(cases)(
    '%s: stored and published as is; the replicas admit it exactly when the hub accepts it',
    async (_name, event) => {
      const bytes = Buffer.isBuffer(event) ? event : Buffer.from(event);
      const problem = validateEvent(bytes, MAX_EVENT_BYTES);
      const user = uid('accepted');
      const channel = await watchUserChannels(redis, prefix, [user], MAX_EVENT_BYTES);
      try {
        const { reply, error } = await publish(user, 'agui', bytes);
        expect(error).toBeUndefined();
        const id = parseEventId(String(reply));
        expect(id).toBeDefined();
        expect(await userHistoryEvents(redis, prefix, user)).toEqual([bytes]);
        await until(() => channel.messages.length === 1, 5000, 'the message');
        const [records] = channel.messages;
        if (problem) {
          expect(records?.admitted).toEqual([]);
          expect(records?.rejected).toEqual([{ reason: problem.reason, detail: problem.detail, kind: 'agui' }]);
        } else {
          expect(records?.rejected).toEqual([]);
          expect(records?.admitted).toEqual([{ kind: 'agui', userId: user, id, event: bytes }]);
        }
      } finally {
        channel.close();
      }
    },
  );

  it('every message it publishes parses as records, one per event (random mutations of valid events)', async () => {
    const users = Array.from({ length: 7 }, (_, i) => uid(`fuzz${i}`));
    const channel = await watchUserChannels(redis, prefix, users, MAX_EVENT_BYTES);
    const seeds = [
      '{"type":"TEXT_MESSAGE_CONTENT","delta":"héllo\\n","n":[1,2.5e3,-0,true,null,{"x":"😀"}]}',
      '{\n  "a": {"b":[{"c":"\\u00e9\\n"}]},\n\t"z": 1e-5\n}',
      '{"s":"\\"\\\\/\\b\\f\\n\\r\\t\\u0041"}',
    ];
    // Bytes that matter to JSON, UTF-8 and the records' framing: structure, numbers, literals,
    // controls, spaces and digits (a record is "<kind> <id> <length> <event>"), broken sequences.
    const alphabet = Buffer.from(
      '{}[]",:\\ \t\n\r0123456789-+.eEtrufalsn\x00\x01\x7f\xc3\xa9\xff\xed\xa0\x80uU',
      'latin1',
    );
    const pick = (n: number): number => randomBytes(4).readUInt32LE() % n;
    const sent: Array<{ user: string; event: Buffer; id: string }> = [];
    try {
      for (let i = 0; i < 2000; i++) {
        let mutated = Buffer.from(seeds[i % seeds.length] as string);
        for (let m = 0; m < 1 + (i % 4); m++) {
          const at = 1 + pick(mutated.length - 2);
          const byte = alphabet[pick(alphabet.length)] as number;
          const op = pick(3);
          if (op === 0) mutated[at] = byte;
          else if (op === 1)
            mutated = Buffer.concat([mutated.subarray(0, at), Buffer.from([byte]), mutated.subarray(at)]);
          else mutated = Buffer.concat([mutated.subarray(0, at), mutated.subarray(at + 1)]);
        }
        // Mutations stay inside the braces, so the function takes every one.
        const user = users[i % users.length] as string;
        const { reply, error } = await publish(user, 'agui', mutated);
        expect({ input: mutated.toString('latin1'), error }).toEqual({
          input: mutated.toString('latin1'),
          error: undefined,
        });
        sent.push({ user, event: mutated, id: String(reply) });
      }
      await until(() => channel.messages.length >= sent.length, 10_000, 'every message');
      await sleep(50);
      // One connection, calls one after another: the messages come in the order of the calls.
      expect(channel.messages).toHaveLength(sent.length);
      let dropped = 0;
      for (const [i, records] of channel.messages.entries()) {
        const { user, event, id } = sent[i] as (typeof sent)[number];
        const problem = validateEvent(event, MAX_EVENT_BYTES);
        const outcome = problem
          ? { admitted: [], rejected: [{ reason: problem.reason, detail: problem.detail, kind: 'agui' }] }
          : { admitted: [{ kind: 'agui', userId: user, id: parseEventId(id), event }], rejected: [] };
        expect({ input: event.toString('latin1'), ...records }).toEqual({
          input: event.toString('latin1'),
          ...outcome,
        });
        if (problem) dropped++;
      }
      // The mutations make both kinds, so both paths were taken.
      expect(dropped).toBeGreaterThan(0);
      expect(dropped).toBeLessThan(sent.length);
    } finally {
      channel.close();
    }
  });
});

describe('user ids and their keys', () => {
  it('maps ids with braces, percent signs and any unicode to keys of their own, all in one hash tag', async () => {
    const users = [
      'a',
      '{a}',
      '%7Ba%7D',
      '%7Ba}',
      '{',
      '}',
      '%',
      '%25',
      'a}b{c',
      '{}',
      'é',
      'e\u0301',
      '😀',
      'a b',
      'a:h',
      'a}:h',
    ];
    const seen = new Map<string, string>();
    for (const user of users) {
      const { meta, history, channel } = userKeys(prefix, user);
      // One hash tag per user: the key's first { ... } is exactly the encoded id, holding no brace.
      const tag = userTag(user);
      expect(tag).not.toMatch(/[{}]/);
      expect(/\{([^}]*)\}/.exec(meta)?.[1]).toBe(tag);
      expect([meta, history]).toEqual([`${channel}:m`, `${channel}:h`]);
      expect({ user, taken: seen.get(tag) }).toEqual({ user, taken: undefined });
      seen.set(tag, user);
      // Redis Cluster's own slot function (an implementation apart from the hub's) puts them together.
      expect(calculateSlot.generateMulti([meta, history, channel])).toBe(calculateSlot(channel));
    }
    // Each publishes into its own history only, through the declared keys and the legacy form alike.
    for (const [i, user] of users.entries()) {
      expect((await publish(user, 'agui', `{"n":${i}}`)).error).toBeUndefined();
      expect(
        (await fcall(PUBLISH_FUNCTION, [], ['agui', user, `{"n":${i},"legacy":true}`, prefix])).error,
      ).toBeUndefined();
    }
    for (const [i, user] of users.entries()) {
      expect({ user, events: (await userHistoryEvents(redis, prefix, user)).map(String) }).toEqual({
        user,
        events: [`{"n":${i}}`, `{"n":${i},"legacy":true}`],
      });
    }
  });

  it("creates each user's epoch with the user's first write, apart from every other user's", async () => {
    const [first, second] = [uid('epoch'), uid('epoch')];
    const a = parseEventId(String((await publish(first, 'agui', '{"a":1}')).reply));
    await sleep(2);
    const b = parseEventId(String((await publish(second, 'agui', '{"a":1}')).reply));
    expect(a?.epoch).toBe(await userEpoch(redis, prefix, first));
    expect(b?.epoch).toBe(await userEpoch(redis, prefix, second));
    expect(a?.epoch).not.toBe(b?.epoch);
    // Both start their own sequence.
    expect([a?.seq, b?.seq]).toEqual([1, 1]);
  });
});
