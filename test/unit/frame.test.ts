import { HEARTBEAT_FRAME, encodeFrame, encodeRetry, wrapWithProtocol } from '../../src/sse/frame';
import { parseFrames } from '../helpers/sse-client';

const text = (buf: Buffer): string => buf.toString('utf8');

describe('SSE framing', () => {
  it('writes data:<json> with no space and no event line', () => {
    expect(text(encodeFrame(Buffer.from('{"type":"RUN_STARTED"}')))).toBe('data:{"type":"RUN_STARTED"}\n\n');
  });

  it('sends the heartbeat as the exact named event of the reference', () => {
    expect(text(HEARTBEAT_FRAME)).toBe('event:heartbeat\ndata:{"type":"heartbeat"}\n\n');
  });

  it('splits LF, CRLF and CR line breaks into separate data lines', () => {
    const frame = text(encodeFrame(Buffer.from('{\n"a":1,\r\n"b":2\r}')));
    expect(frame).toBe('data:{\ndata:"a":1,\ndata:"b":2\ndata:}\n\n');
    expect(parseFrames(frame)).toEqual([{ data: '{\n"a":1,\n"b":2\n}', hasData: true }]);
  });

  it('cannot be used to inject fields or end the frame early', () => {
    const hostile = '{"x":1}\n\nevent:evil\nid:666\ndata:{"pwned":true}\n\n';
    const frames = parseFrames(text(encodeFrame(Buffer.from(hostile))));
    expect(frames).toHaveLength(1);
    expect(frames[0]?.event).toBeUndefined();
    expect(frames[0]?.id).toBeUndefined();
    expect(frames[0]?.data).toBe(hostile);
  });

  it('keeps a leading space that a client would otherwise strip', () => {
    const frame = text(encodeFrame(Buffer.from('{\n  "indented":true\n}')));
    expect(frame).toBe('data:{\ndata:   "indented":true\ndata:}\n\n');
    expect(parseFrames(frame)[0]?.data).toBe('{\n  "indented":true\n}');
  });

  it('adds id and event fields and refuses line breaks in them', () => {
    expect(text(encodeFrame(Buffer.from('{}'), { event: 'reset', id: '7' }))).toBe('event:reset\nid:7\ndata:{}\n\n');
    expect(() => encodeFrame(Buffer.from('{}'), { id: '1\n2' })).toThrow();
    expect(() => encodeFrame(Buffer.from('{}'), { event: 'a\rb' })).toThrow();
  });

  it('wraps events for the contexts stream without touching their bytes', () => {
    const event = Buffer.from('{"type":"X","n":12345678901234567890,"s":"\\u00e9"}');
    expect(text(wrapWithProtocol('agui', event))).toBe(
      '{"protocol":"agui","event":{"type":"X","n":12345678901234567890,"s":"\\u00e9"}}',
    );
  });

  it('encodes retry hints as digits only', () => {
    expect(text(encodeRetry(1500.7))).toBe('retry:1500\n\n');
  });
});
