import { EVENT_KINDS, isEventKind, kindsForStream, routesFor } from '../../src/routing';

describe('routing', () => {
  const streamsOf = (kind: (typeof EVENT_KINDS)[number]) => routesFor(kind).map((r) => [r.stream, r.wrapWithProtocol]);

  it('sends agui and a2a to their stream and, wrapped, to contexts', () => {
    expect(streamsOf('agui')).toEqual([
      ['agui', false],
      ['contexts', true],
    ]);
    expect(streamsOf('a2a')).toEqual([
      ['a2a', false],
      ['contexts', true],
    ]);
  });

  it('sends system only to contexts and analytics only to analytics', () => {
    expect(streamsOf('system')).toEqual([['contexts', true]]);
    expect(streamsOf('analytics')).toEqual([['analytics', false]]);
  });

  it('knows which kinds feed each stream', () => {
    expect(kindsForStream('contexts')).toEqual(['agui', 'a2a', 'system']);
    expect(kindsForStream('analytics')).toEqual(['analytics']);
  });

  it('recognises exactly the four kinds, case-sensitively', () => {
    expect(EVENT_KINDS.every(isEventKind)).toBe(true);
    expect(isEventKind('AGUI')).toBe(false);
    expect(isEventKind('contexts')).toBe(false);
  });
});
