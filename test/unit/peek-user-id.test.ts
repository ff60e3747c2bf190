import { buildEnvelope, parseEnvelope } from '../../src/wire/envelope';
import { peekEnvelopeUserId } from '../../src/wire/peek-user-id';

const peek = (text: string): string | undefined => peekEnvelopeUserId(Buffer.from(text));

/** Whatever the quick read answers, the full parse must agree on the user or reject the envelope. */
function neverMisroutes(text: string): void {
  const quick = peek(text);
  if (quick === undefined) return;
  const full = parseEnvelope(Buffer.from(text), 1 << 20);
  if (full.ok) expect(full.userId).toBe(quick);
}

describe('reading the user id off an envelope', () => {
  it('reads the shapes ssehub publishes, with and without id', () => {
    expect(peek('{"id":"k1:1700000000000-3","user_id":"alice","event":{"type":"X"}}')).toBe('alice');
    expect(peek('{"user_id":"bob","event":{}}')).toBe('bob');
    const built = buildEnvelope('carol "the" \\ user\n', Buffer.from('{}'), 'k1:1-1');
    expect(peekEnvelopeUserId(built)).toBe('carol "the" \\ user\n');
  });

  it('unescapes the user id as JSON does, unicode escapes and surrogate pairs included', () => {
    const cases = ['a"b', 'back\\slash', 'sl/ash', 'tab\there', 'é ü', '😀', '\u0001ctl', 'x\u2028y'];
    for (const userId of cases) {
      const envelope = buildEnvelope(userId, Buffer.from('{}'), 'k1:1-1');
      expect(peekEnvelopeUserId(envelope)).toBe(userId);
    }
    expect(peek('{"user_id":"\\u0061\\u00e9\\ud83d\\ude00\\/","event":{}}')).toBe('aé😀/');
    expect(peek('{"user_id":"\\u00E9","event":{}}')).toBe('é');
  });

  it('is not fooled by a user_id inside the id, or by quotes inside the user id', () => {
    expect(peek('{"id":"x\\",\\"user_id\\":\\"mallory","user_id":"alice","event":{}}')).toBeUndefined();
    expect(peek('{"id":"\\"user_id\\":\\"mallory\\"","user_id":"alice","event":{}}')).toBeUndefined();
    expect(peek('{"user_id":"alice\\",\\"user_id\\":\\"mallory","event":{}}')).toBe('alice","user_id":"mallory');
  });

  it('is not certain (undefined) about any other shape, so the full parse decides', () => {
    const uncertain = [
      ' {"user_id":"a","event":{}}',
      '{ "user_id":"a","event":{}}',
      '{"user_id" :"a","event":{}}',
      '{"user_id": "a","event":{}}',
      '{"event":{},"user_id":"a"}',
      '{"user\\u005fid":"a","event":{}}',
      '{"id":"k1:1-1" ,"user_id":"a","event":{}}',
      '{"id":1,"user_id":"a","event":{}}',
      `{"id":"${'9'.repeat(100)}","user_id":"a","event":{}}`,
      '{"user_id":"a"',
      '{"user_id":"a',
      '{"user_id":"a\\',
      '{"user_id":"a\\q","event":{}}',
      '{"user_id":"a\\u12","event":{}}',
      '{"user_id":"a\\u12zz","event":{}}',
      '{"user_id":"a\nb","event":{}}',
      '{"user_id":"a"x,"event":{}}',
      '{"user_id":5,"event":{}}',
      '[{"user_id":"a"}]',
      '',
      '{',
      'not json',
    ];
    for (const text of uncertain) expect([text, peek(text)]).toEqual([text, undefined]);
  });

  it('names the first user_id when there is a second one; the full parse rejects such an envelope', () => {
    const text = '{"user_id":"alice","user_id":"bob","event":{}}';
    expect(peek(text)).toBe('alice');
    const full = parseEnvelope(Buffer.from(text), 1 << 20);
    expect(full.ok).toBe(false);
  });

  it('never names a user the full parse would route elsewhere', () => {
    const samples = [
      '{"id":"k1:1-1","user_id":"alice","event":{}}',
      '{"user_id":"alice","user_id":"bob","event":{}}',
      '{"user_id":"a\\"b","event":{}}',
      '{"user_id":"\\ud800","event":{}}',
      '{"user_id":"alice","event":{"user_id":"bob"}}',
      '{"user_id":"alice"}',
      '{"user_id":"alice","event":{},"user_id":"bob"}',
    ];
    for (const text of samples) neverMisroutes(text);
    // Every prefix of a valid envelope, and every single-byte corruption of it.
    const base = buildEnvelope('u\\"ser é', Buffer.from('{"a":"b"}'), 'k1:1700000000000-1').toString();
    for (let i = 0; i <= base.length; i++) neverMisroutes(base.slice(0, i));
    for (let i = 0; i < base.length; i++) {
      for (const c of ['"', '\\', ',', '}', ' ', 'x']) neverMisroutes(base.slice(0, i) + c + base.slice(i + 1));
    }
  });
});
