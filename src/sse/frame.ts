import type { FrameStyle } from '../routing';
/**
 * SSE frame encoding (WHATWG HTML, server-sent events). Fields are written as `name:value`
 * with no space, as the reference implementation does; frames are built once per event and
 * stream and the same Buffer is written to every connection.
 */

const LF = 0x0a;
const CR = 0x0d;
const SPACE = 0x20;
const DATA_FIELD = Buffer.from('data:');
/** A leading space in a value would be stripped by the client; the extra one keeps it. */
const DATA_FIELD_SPACED = Buffer.from('data: ');
const NEWLINE = Buffer.from('\n');
const CLOSE_BRACE = Buffer.from('}');

/** The seed's keep-alive: a named `heartbeat` event, sent after this long without a frame (the default). */
export const HEARTBEAT_INTERVAL_MS = 15_000;
export const HEARTBEAT_JSON = '{"type":"heartbeat"}';
export const HEARTBEAT_FRAME = Buffer.from(`event:heartbeat\ndata:${HEARTBEAT_JSON}\n\n`);

/** The seed's `standard_keep_alive()`: the interval and the exact frame written. */
export function standardKeepAlive(): { intervalMs: number; frame: Buffer } {
  return { intervalMs: HEARTBEAT_INTERVAL_MS, frame: HEARTBEAT_FRAME };
}

function hasLineBreak(payload: Uint8Array): boolean {
  return payload.includes(LF) || payload.includes(CR);
}

/**
 * `data:` lines for a payload. CR, LF and CRLF all end a line in SSE, so each becomes its own
 * `data:` line; nothing in the payload can start a new field or end the frame early.
 */
function pushDataLines(parts: Buffer[], payload: Buffer): void {
  if (!hasLineBreak(payload)) {
    parts.push(payload[0] === SPACE ? DATA_FIELD_SPACED : DATA_FIELD, payload, NEWLINE);
    return;
  }
  let lineStart = 0;
  for (let i = 0; i <= payload.length; i++) {
    const byte = payload[i];
    if (i < payload.length && byte !== LF && byte !== CR) continue;
    const line = payload.subarray(lineStart, i);
    parts.push(line[0] === SPACE ? DATA_FIELD_SPACED : DATA_FIELD, line, NEWLINE);
    if (byte === CR && payload[i + 1] === LF) i++;
    lineStart = i + 1;
  }
}

export interface FrameFields {
  /** Named event type; omitted for plain `message` events. */
  event?: string;
  id?: string;
}

function assertSingleLine(name: string, value: string): void {
  if (/[\r\n\0]/.test(value)) throw new Error(`SSE ${name} field must not contain CR, LF or NUL`);
}

export function encodeFrame(payload: Buffer, fields: FrameFields = {}): Buffer {
  const parts: Buffer[] = [];
  if (fields.event !== undefined) {
    assertSingleLine('event', fields.event);
    parts.push(Buffer.from(`event:${fields.event}\n`));
  }
  if (fields.id !== undefined) {
    assertSingleLine('id', fields.id);
    parts.push(Buffer.from(`id:${fields.id}\n`));
  }
  pushDataLines(parts, payload);
  parts.push(NEWLINE);
  return Buffer.concat(parts);
}

/** An `id:` line alone: moves the client's last event id without dispatching an event. */
export function encodeIdOnly(id: string): Buffer {
  assertSingleLine('id', id);
  return Buffer.from(`id:${id}\n\n`);
}

export function encodeRetry(milliseconds: number): Buffer {
  return Buffer.from(`retry:${Math.max(0, Math.floor(milliseconds))}\n\n`);
}

/** An event as a stream shows it: wrapped with its kind where the stream tags protocols. */
export function encodeEventFrame(kind: string, style: FrameStyle, event: Buffer, fields: FrameFields = {}): Buffer {
  if (style === 'protocol') return encodeFrame(wrapWithProtocol(kind, event), fields);
  return encodeFrame(event, style === 'named' ? { ...fields, event: kind } : fields);
}

const PROTOCOL_PREFIXES = new Map<string, Buffer>();

/** `{"protocol":"<kind>","event":<event>}` around the publisher's bytes, as the contexts stream sends it. */
export function wrapWithProtocol(protocol: string, event: Buffer): Buffer {
  let prefix = PROTOCOL_PREFIXES.get(protocol);
  if (!prefix) {
    prefix = Buffer.from(`{"protocol":${JSON.stringify(protocol)},"event":`);
    PROTOCOL_PREFIXES.set(protocol, prefix);
  }
  return Buffer.concat([prefix, event, CLOSE_BRACE]);
}
