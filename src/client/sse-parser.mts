/** One dispatched block of an `text/event-stream` body. */
export interface SseFrame {
  /** The `event:` name, `message` when the block had none. */
  event: string;
  /** The joined `data:` lines, or `null` for a block without any (the hub's opening `id:` line). */
  data: string | null;
  /**
   * The `id:` of this block only. Unlike `EventSource.lastEventId` it does not carry over to
   * later blocks: an event published without an id must not look like a repeat of the previous one.
   */
  id: string | null;
}

/**
 * An incremental parser for the SSE wire format (WHATWG HTML, "Parsing an event stream"): lines end
 * in CRLF, LF or CR, and a CR at the end of a chunk may be the first half of a CRLF.
 */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private event = '';
  private id: string | null = null;

  constructor(
    private readonly onFrame: (frame: SseFrame) => void,
    private readonly onRetry: (milliseconds: number) => void,
  ) {}

  push(chunk: string): void {
    const text = this.buffer + chunk;
    let position = 0;
    let cr = text.indexOf('\r');
    let lf = text.indexOf('\n');
    while (position < text.length) {
      if (cr !== -1 && cr < position) cr = text.indexOf('\r', position);
      if (lf !== -1 && lf < position) lf = text.indexOf('\n', position);
      let end: number;
      let next: number;
      if (cr !== -1 && (lf === -1 || cr < lf)) {
        if (cr === text.length - 1) break;
        end = cr;
        next = lf === cr + 1 ? cr + 2 : cr + 1;
      } else if (lf !== -1) {
        end = lf;
        next = lf + 1;
      } else {
        break;
      }
      this.line(text.slice(position, end));
      position = next;
    }
    this.buffer = text.slice(position);
  }

  private line(line: string): void {
    if (line === '') {
      this.dispatch();
      return;
    }
    if (line.charCodeAt(0) === 58 /* ':' comment */) return;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data.push(value);
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value === '' ? null : value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.onRetry(Number(value));
        break;
    }
  }

  private dispatch(): void {
    const hasData = this.data.length > 0;
    if (hasData || this.id !== null) {
      this.onFrame({ event: this.event || 'message', data: hasData ? this.data.join('\n') : null, id: this.id });
    }
    this.data = [];
    this.event = '';
    this.id = null;
  }
}
