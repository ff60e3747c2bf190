import { EVENT_KINDS, isEventKind, kindsForStream, routesFor } from '../../src/routing';

describe('routing', () => {
  const streamsOf = (kind: (typeof EVENT_KINDS)[number]) => routesFor(kind).map((r) => [r.stream, r.style]);

  it('sends agui and a2a to their stream, wrapped to contexts, and named to the multiplexed stream', () => {
    expect(streamsOf('agui')).toEqual([
      ['agui', 'plain'],
      ['contexts', 'protocol'],
      ['multiplexed', 'named'],
    ]);
    expect(streamsOf('a2a')).toEqual([
      ['a2a', 'plain'],
      ['contexts', 'protocol'],
      ['multiplexed', 'named'],
    ]);
  });

  it('sends system only to contexts and analytics only to analytics, of the seed streams', () => {
    expect(streamsOf('system')).toEqual([
      ['contexts', 'protocol'],
      ['multiplexed', 'named'],
    ]);
    expect(streamsOf('analytics')).toEqual([
      ['analytics', 'plain'],
      ['multiplexed', 'named'],
    ]);
  });

  it('knows which kinds feed each stream', () => {
    expect(kindsForStream('contexts')).toEqual(['agui', 'a2a', 'system']);
    expect(kindsForStream('analytics')).toEqual(['analytics']);
    expect(kindsForStream('multiplexed')).toEqual(EVENT_KINDS);
  });

  it('recognises exactly the four kinds, case-sensitively', () => {
    expect(EVENT_KINDS.every(isEventKind)).toBe(true);
    expect(isEventKind('AGUI')).toBe(false);
    expect(isEventKind('contexts')).toBe(false);
  });
});
