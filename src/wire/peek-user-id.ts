const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const ID_PREFIX = Buffer.from('{"id":"');
const USER_ID_KEY = Buffer.from('"user_id":"');
/** An id longer than this is not one ssehub assigned; the full parse says what it is. */
const MAX_ID_SCAN = 64;
/** MAX_USER_ID_LENGTH characters escape to at most six bytes each. */
const MAX_USER_ID_SCAN = 512 * 6;

const SIMPLE_ESCAPES: Readonly<Record<number, string>> = {
  34: '"',
  92: '\\',
  47: '/',
  98: '\b',
  102: '\f',
  110: '\n',
  114: '\r',
  116: '\t',
};

function startsWithAt(buf: Buffer, at: number, prefix: Buffer): boolean {
  return buf.length - at >= prefix.length && buf.compare(prefix, 0, prefix.length, at, at + prefix.length) === 0;
}

function hexValue(byte: number): number {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30;
  const lower = byte | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/**
 * The user id of an envelope in the shape ssehub publishes it, `{"id":"…","user_id":"…",…` or
 * `{"user_id":"…",…`, read from its first bytes only; undefined whenever that shape is not
 * certain (whitespace, other member order, an escaped key, a broken string), and the caller
 * then parses the whole envelope. Only a user this replica does not hold is dropped on this
 * answer: an event that is delivered is still parsed and validated in full, and an envelope
 * that names a second user_id is invalid (duplicate member) whatever its first one says.
 */
export function peekEnvelopeUserId(buf: Buffer): string | undefined {
  let at = 1;
  if (startsWithAt(buf, 0, ID_PREFIX)) {
    // ssehub's ids are plain ASCII (<epoch>:<ms>-<seq>): an escape or a long string is left to the parse.
    const end = Math.min(buf.length, ID_PREFIX.length + MAX_ID_SCAN);
    let close = -1;
    for (let i = ID_PREFIX.length; i < end; i++) {
      const byte = buf[i] as number;
      if (byte === QUOTE) {
        close = i;
        break;
      }
      if (byte === BACKSLASH || byte < 0x20) return undefined;
    }
    if (close === -1 || buf[close + 1] !== 0x2c) return undefined;
    at = close + 2;
  } else if (buf[0] !== 0x7b) {
    return undefined;
  }
  if (!startsWithAt(buf, at, USER_ID_KEY)) return undefined;
  return readString(buf, at + USER_ID_KEY.length);
}

/** The JSON string starting at `start` (just past its opening quote), if it closes and is followed by ',' or '}'. */
function readString(buf: Buffer, start: number): string | undefined {
  const end = Math.min(buf.length, start + MAX_USER_ID_SCAN);
  let text = '';
  let runStart = start;
  for (let i = start; i < end; i++) {
    const byte = buf[i] as number;
    if (byte === QUOTE) {
      const after = buf[i + 1];
      if (after !== 0x2c && after !== 0x7d) return undefined;
      return text + buf.toString('utf8', runStart, i);
    }
    if (byte < 0x20) return undefined;
    if (byte !== BACKSLASH) continue;
    text += buf.toString('utf8', runStart, i);
    const escaped = buf[i + 1];
    if (escaped === undefined) return undefined;
    const simple = SIMPLE_ESCAPES[escaped];
    if (simple !== undefined) {
      text += simple;
      i += 1;
    } else if (escaped === 0x75) {
      let code = 0;
      for (let k = 2; k < 6; k++) {
        const digit = hexValue(buf[i + k] ?? -1);
        if (digit < 0) return undefined;
        code = code * 16 + digit;
      }
      text += String.fromCharCode(code);
      i += 5;
    } else {
      return undefined;
    }
    runStart = i + 1;
  }
  return undefined;
}
