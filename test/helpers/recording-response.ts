import { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';

/** Just enough of a ServerResponse to record what a stream writes; it can refuse writes to simulate a full socket. */
export class RecordingResponse extends EventEmitter {
  /** Each write() call, in order. */
  writes: string[] = [];
  accepting = true;
  destroyed = false;
  writableEnded = false;
  writableNeedDrain = false;
  socket = null;
  /** Streams batch a turn's frames (see flush-queue); a test may flush them before reading `written`. */
  beforeRead: () => void = () => undefined;

  /** Everything written so far, as one string. */
  get written(): string {
    this.beforeRead();
    return this.writes.join('');
  }

  asResponse(): ServerResponse {
    return this as unknown as ServerResponse;
  }

  writeHead(): this {
    return this;
  }
  flushHeaders(): void {}
  write(chunk: Buffer): boolean {
    this.writes.push(chunk.toString());
    return this.accepting;
  }
  end(): void {
    this.writableEnded = true;
  }
  destroy(): void {
    this.destroyed = true;
  }
}
