import type { Task, TaskStatusUpdateEvent } from '@a2a-js/sdk';
import { serializeEvent } from '../../src/events';

describe('serializeEvent', () => {
  it('passes strings and Buffers through byte for byte', async () => {
    const bytes = Buffer.from('{ "type" : "CUSTOM", "name":"é", "value":1.50 }');
    expect(await serializeEvent('agui', bytes)).toBe(bytes);
    const text = '{"type":"HEARTBEAT",  "timestamp":"2026-05-04T10:00:00Z"}';
    expect((await serializeEvent('system', text)).equals(Buffer.from(text))).toBe(true);
    expect((await serializeEvent('a2a', text)).toString()).toBe(text);
  });

  it('writes typed AG-UI, system and analytics events as JSON.stringify does', async () => {
    const agui = { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'Hi "you"' } as const;
    expect((await serializeEvent('agui', agui)).toString()).toBe(JSON.stringify(agui));
    const system = { type: 'CONTEXT_DELETED', contextId: 'c1', timestamp: '2026-05-04T10:00:00Z' } as const;
    expect((await serializeEvent('system', system)).toString()).toBe(JSON.stringify(system));
    const analytics = { type: 'my.metric', value: 3, tags: ['a'] };
    expect((await serializeEvent('analytics', analytics)).toString()).toBe(JSON.stringify(analytics));
  });

  it('writes the SDK objects of A2A as A2A JSON in a StreamResponse', async () => {
    const { Role, TaskState } = await import('@a2a-js/sdk');
    const update: TaskStatusUpdateEvent = {
      taskId: 't1',
      contextId: 'c1',
      status: { state: TaskState.TASK_STATE_WORKING, message: undefined, timestamp: '2026-05-04T10:00:00Z' },
      metadata: undefined,
    };
    expect((await serializeEvent('a2a', update)).toString()).toBe(
      '{"statusUpdate":{"taskId":"t1","contextId":"c1","status":{"state":"TASK_STATE_WORKING","timestamp":"2026-05-04T10:00:00Z"}}}',
    );
    const task: Task = {
      id: 't1',
      contextId: 'c1',
      status: { state: TaskState.TASK_STATE_SUBMITTED, message: undefined, timestamp: undefined },
      artifacts: [],
      history: [
        {
          messageId: 'm1',
          contextId: 'c1',
          taskId: 't1',
          role: Role.ROLE_USER,
          parts: [{ content: { $case: 'text', value: 'Hello' }, metadata: undefined, filename: '', mediaType: '' }],
          metadata: undefined,
          extensions: [],
          referenceTaskIds: [],
        },
      ],
      metadata: undefined,
    };
    expect(JSON.parse((await serializeEvent('a2a', task)).toString())).toEqual({
      task: {
        id: 't1',
        contextId: 'c1',
        status: { state: 'TASK_STATE_SUBMITTED' },
        history: [{ messageId: 'm1', contextId: 'c1', taskId: 't1', role: 'ROLE_USER', parts: [{ text: 'Hello' }] }],
      },
    });
  });
});
