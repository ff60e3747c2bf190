import { ENVELOPE_OVERHEAD_BYTES, buildEnvelope, parseEnvelope, parseWebhookBody } from '../../src/wire/envelope';

const MAX = 1024 * 1024;
const parse = (text: string) => parseEnvelope(Buffer.from(text), MAX);

describe('envelope parsing', () => {
  it('extracts the user and the exact bytes of the event', () => {
    const event = '{"type":"TEXT_MESSAGE_CONTENT","big":123456789012345678901234567890,"z":1,"a":"\\u2028","u":"é"}';
    const parsed = parse(`{"user_id":"u-1","event":${event}}`);
    expect(parsed).toMatchObject({ ok: true, userId: 'u-1' });
    if (parsed.ok) expect(parsed.event.toString()).toBe(event);
  });

  it('refuses user ids with a lone surrogate or NUL, which no store keeps as they are', () => {
    for (const user of ['\\ud800', 'x\\udc00', 'a\\u0000b']) {
      expect(parse(`{"user_id":"${user}","event":{}}`)).toMatchObject({ ok: false, reason: 'invalid_user_id' });
    }
    expect(parse('{"user_id":"\\ud83d\\ude00","event":{}}')).toMatchObject({ ok: true, userId: '\ud83d\ude00' });
  });

  it('accepts whitespace, member order and unknown members', () => {
    const parsed = parse(' { "event" : {"a":[1,{"b":"}"}]} ,\n "extra": [1,2], "user_id" : "u" } ');
    expect(parsed.ok && parsed.event.toString()).toBe('{"a":[1,{"b":"}"}]}');
  });

  it('handles strings with escaped quotes and braces inside the event', () => {
    const event = '{"s":"a\\"}{[\\\\","t":"\\\\"}';
    const parsed = parse(`{"user_id":"u","event":${event}}`);
    expect(parsed.ok && parsed.event.toString()).toBe(event);
  });

  it.each([
    ['not json', 'malformed_json'],
    ['{"user_id":"u","event":{}', 'malformed_json'],
    ['[1,2]', 'not_an_object'],
    ['null', 'not_an_object'],
    ['{"event":{}}', 'invalid_user_id'],
    ['{"user_id":42,"event":{}}', 'invalid_user_id'],
    ['{"user_id":"","event":{}}', 'invalid_user_id'],
    ['{"user_id":"u"}', 'invalid_event'],
    ['{"user_id":"u","event":[1]}', 'invalid_event'],
    ['{"user_id":"u","event":"{}"}', 'invalid_event'],
    ['{"user_id":"u","event":null}', 'invalid_event'],
    ['{"user_id":"a","user_id":"b","event":{}}', 'duplicate_member'],
    ['{"user_id":"a","event":{},"ev\\u0065nt":{}}', 'duplicate_member'],
  ])('rejects %s as %s', (input, reason) => {
    expect(parse(input)).toMatchObject({ ok: false, reason });
  });

  it('rejects invalid UTF-8 and oversized envelopes', () => {
    const bad = Buffer.concat([
      Buffer.from('{"user_id":"u","event":{"s":"'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}}'),
    ]);
    expect(parseEnvelope(bad, MAX)).toMatchObject({ ok: false, reason: 'invalid_utf8' });
    // The limit is on the event; the envelope may exceed it by the id and user id, and no more.
    expect(parseEnvelope(Buffer.from('{"user_id":"u","event":{"a":"12345"}}'), 10)).toMatchObject({
      ok: false,
      reason: 'too_large',
    });
    expect(parseEnvelope(Buffer.from('{"user_id":"u","event":{"a":"1"}}'), 10)).toMatchObject({ ok: true });
    const padded = Buffer.from(`{"user_id":"u","event":{},"pad":"${'x'.repeat(ENVELOPE_OVERHEAD_BYTES)}"}`);
    expect(parseEnvelope(padded, 10)).toMatchObject({ ok: false, reason: 'too_large' });
  });

  it('rejects deeply nested JSON before parsing it, but not brackets inside strings', () => {
    const deep = `{"user_id":"u","event":{"a":${'['.repeat(100)}${']'.repeat(100)}}}`;
    expect(parse(deep)).toMatchObject({ ok: false, reason: 'too_deep' });
    const bracketsInString = `{"user_id":"u","event":{"s":"${'['.repeat(100)}\\"${'{'.repeat(100)}"}}`;
    expect(parse(bracketsInString)).toMatchObject({ ok: true });
    const nested60 = `{"user_id":"u","event":${'{"a":'.repeat(60)}1${'}'.repeat(60)}}`;
    expect(parse(nested60)).toMatchObject({ ok: true });
  });

  it('rejects over-long user ids', () => {
    expect(parse(`{"user_id":"${'x'.repeat(513)}","event":{}}`)).toMatchObject({
      ok: false,
      reason: 'invalid_user_id',
    });
  });
});

describe('webhook bodies', () => {
  const strip = (text: string): string => {
    const parsed = parseWebhookBody(Buffer.from(text), MAX);
    if (!parsed.ok) throw new Error(parsed.reason);
    return parsed.event.toString();
  };

  it('removes user_id wherever it stands and keeps every other byte', () => {
    expect(strip('{"user_id":"u","type":"A","n":1.50}')).toBe('{"type":"A","n":1.50}');
    expect(strip('{"type":"A", "user_id":"u", "n":1}')).toBe('{"type":"A", "n":1}');
    expect(strip('{"type":"A","n":[1,2],"user_id":"u"}')).toBe('{"type":"A","n":[1,2]}');
    expect(strip('{"user_id":"u"}')).toBe('{}');
  });

  it('requires a string user_id', () => {
    expect(parseWebhookBody(Buffer.from('{"type":"A"}'), MAX)).toMatchObject({ ok: false, reason: 'invalid_user_id' });
  });

  it('round-trips through the transport envelope', () => {
    const envelope = buildEnvelope('user "quoted"', Buffer.from('{"type":"A"}'));
    const parsed = parseEnvelope(envelope, MAX);
    expect(parsed).toMatchObject({ ok: true, userId: 'user "quoted"' });
    expect(parsed.ok && parsed.event.toString()).toBe('{"type":"A"}');
  });
});
