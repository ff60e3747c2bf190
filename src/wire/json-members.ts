/**
 * Locates the members of a top-level JSON object as byte ranges, so that values can be
 * forwarded byte-for-byte instead of being re-serialized (which would lose integers beyond
 * 2^53, key order and the publisher's escapes).
 *
 * The input must already be known to be valid JSON (the caller runs JSON.parse first);
 * this scanner only finds boundaries. JSON's structural characters are ASCII and UTF-8
 * continuation bytes are >= 0x80, so scanning bytes is safe for any UTF-8 text.
 */

export interface JsonMember {
  /** Decoded key. */
  key: string;
  /** Offset of the key's opening quote. */
  start: number;
  valueStart: number;
  /** Offset just past the value. */
  valueEnd: number;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;

function isWhitespace(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
}

function skipWhitespace(buf: Uint8Array, pos: number): number {
  while (pos < buf.length && isWhitespace(buf[pos])) pos++;
  return pos;
}

/** `pos` is at an opening quote; the offset just past the closing quote, or past the end if there is none. */
function endOfString(buf: Uint8Array, pos: number): number {
  pos++;
  while (pos < buf.length) {
    const byte = buf[pos];
    if (byte === BACKSLASH) pos += 2;
    else if (byte === QUOTE) return pos + 1;
    else pos++;
  }
  return buf.length + 1;
}

function skipString(buf: Uint8Array, pos: number): number {
  const end = endOfString(buf, pos);
  if (end > buf.length) throw new Error('unterminated string');
  return end;
}

function skipValue(buf: Uint8Array, pos: number): number {
  const first = buf[pos];
  if (first === QUOTE) return skipString(buf, pos);
  if (first === OPEN_BRACE || first === OPEN_BRACKET) {
    let depth = 0;
    while (pos < buf.length) {
      const byte = buf[pos];
      if (byte === QUOTE) {
        pos = skipString(buf, pos);
        continue;
      }
      if (byte === OPEN_BRACE || byte === OPEN_BRACKET) depth++;
      else if (byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
        depth--;
        if (depth === 0) return pos + 1;
      }
      pos++;
    }
    throw new Error('unterminated container');
  }
  // number, true, false, null: runs until a delimiter
  while (pos < buf.length) {
    const byte = buf[pos];
    if (byte === COMMA || byte === CLOSE_BRACE || byte === CLOSE_BRACKET || isWhitespace(byte)) break;
    pos++;
  }
  return pos;
}

function decodeKey(buf: Buffer, start: number, end: number): string {
  // Keys without escapes (nearly all of them) decode straight from the bytes, without the JSON parser.
  for (let pos = start + 1; pos < end - 1; pos++) {
    if (buf[pos] === BACKSLASH) return JSON.parse(buf.toString('utf8', start, end)) as string;
  }
  return buf.toString('utf8', start + 1, end - 1);
}

/**
 * True when brackets nest deeper than `maxDepth`. Parsing deeply nested JSON costs far more per
 * byte than flat JSON, so an envelope of nothing but brackets could stall every replica; this
 * scan is linear and allocation-free.
 */
export function nestsDeeperThan(buf: Uint8Array, maxDepth: number): boolean {
  let depth = 0;
  for (let pos = 0; pos < buf.length; pos++) {
    const byte = buf[pos];
    if (byte === QUOTE) {
      pos = endOfString(buf, pos) - 1;
    } else if (byte === OPEN_BRACE || byte === OPEN_BRACKET) {
      if (++depth > maxDepth) return true;
    } else if (byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
      depth--;
    }
  }
  return false;
}

/** Members of the object that starts at the first non-whitespace byte of `buf`. */
export function scanObjectMembers(buf: Buffer): JsonMember[] {
  let pos = skipWhitespace(buf, 0);
  if (buf[pos] !== OPEN_BRACE) throw new Error('not an object');
  pos = skipWhitespace(buf, pos + 1);
  const members: JsonMember[] = [];
  if (buf[pos] === CLOSE_BRACE) return members;
  for (;;) {
    const start = pos;
    const keyEnd = skipString(buf, pos);
    const key = decodeKey(buf, start, keyEnd);
    pos = skipWhitespace(buf, keyEnd);
    if (buf[pos] !== COLON) throw new Error('expected colon');
    const valueStart = skipWhitespace(buf, pos + 1);
    const valueEnd = skipValue(buf, valueStart);
    members.push({ key, start, valueStart, valueEnd });
    pos = skipWhitespace(buf, valueEnd);
    if (buf[pos] === COMMA) {
      pos = skipWhitespace(buf, pos + 1);
      continue;
    }
    if (buf[pos] === CLOSE_BRACE) return members;
    throw new Error('expected comma or closing brace');
  }
}
