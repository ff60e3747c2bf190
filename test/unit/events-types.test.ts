/** Compile-time checks: `npm run typecheck` fails if an `@ts-expect-error` line stops being an error. */
import type { Message, TaskArtifactUpdateEvent } from '@a2a-js/sdk';
import { EventType } from '@ag-ui/core';
import type { AgUiEvent, EventMap, EventOf, KnownSystemEvent } from '../../src/events';
import type { EventKind } from '../../src/routing';

const published: [EventKind, unknown][] = [];
function publish<K extends EventKind>(kind: K, _userId: string, event: EventOf<K>): void {
  published.push([kind, event]);
}

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const everyKindHasAType: Equal<keyof EventMap, EventKind> = true;

const timestamp = '2026-05-04T10:00:00Z';
const message: Message = {
  messageId: 'm1',
  contextId: 'c1',
  taskId: 't1',
  role: 2,
  parts: [],
  metadata: undefined,
  extensions: [],
  referenceTaskIds: [],
};

describe('event types', () => {
  it('type-check per family', () => {
    publish('agui', 'u1', { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'Hi' });
    publish('agui', 'u1', { type: EventType.RUN_STARTED, threadId: 't1', runId: 'r1' });
    // @ts-expect-error TEXT_MESSAGE_CONTENT needs delta
    publish('agui', 'u1', { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1' });
    // @ts-expect-error no such AG-UI event type
    publish('agui', 'u1', { type: 'TEXT_MESSAGE', messageId: 'm1', delta: 'Hi' });
    // @ts-expect-error delta is a string
    publish('agui', 'u1', { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 42 });

    publish('a2a', 'u1', message);
    // @ts-expect-error an AG-UI event is not an A2A one
    publish('a2a', 'u1', { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'Hi' });
    // @ts-expect-error the SDK's artifact update needs its artifact and chunk flags
    publish('a2a', 'u1', { taskId: 't1', contextId: 'c1' } satisfies Partial<TaskArtifactUpdateEvent>);

    publish('system', 'u1', { type: 'CONTEXT_CREATED', contextId: 'c1', name: 'Chat', timestamp });
    publish('system', 'u1', { type: 'my.own', anything: [1, { nested: null }] });
    // @ts-expect-error every system event has a string type
    publish('system', 'u1', { contextId: 'c1' });
    // @ts-expect-error members are JSON
    publish('system', 'u1', { type: 'my.own', at: new Map() });
    // @ts-expect-error a known system event keeps its fields when checked as one
    publish('system', 'u1', { type: 'CONTEXT_CREATED', contextId: 'c1', timestamp } satisfies KnownSystemEvent);

    publish('analytics', 'u1', {
      type: 'SESSION_ENDED',
      session_id: 's1',
      duration_ms: 5,
      page_count: 1,
      request_count: 2,
      timestamp,
    });
    // @ts-expect-error type is a string
    publish('analytics', 'u1', { type: 1 });

    const narrowed = (event: AgUiEvent): string | undefined =>
      event.type === 'TEXT_MESSAGE_CONTENT' ? event.delta : undefined;
    expect(narrowed({ type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'Hi' })).toBe('Hi');
    expect(everyKindHasAType).toBe(true);
    expect(published.map(([kind]) => kind)).toContain('analytics');
  });
});
