import { createEventValidator, EventValidationError } from '../../src/events';

const validator = createEventValidator({ agui: true, a2a: true, system: true, analytics: true });

async function failure(kind: 'agui' | 'a2a' | 'system' | 'analytics', value: unknown): Promise<EventValidationError> {
  const error = await validator.validate(kind, value).then(
    () => undefined,
    (err: unknown) => err,
  );
  if (!(error instanceof EventValidationError))
    throw new Error(`expected an EventValidationError, got ${String(error)}`);
  return error;
}

describe('AG-UI validation', () => {
  it.each([
    { type: 'RUN_STARTED', threadId: 't1', runId: 'r1' },
    { type: 'TEXT_MESSAGE_START', messageId: 'm1', role: 'assistant' },
    { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'Hello', timestamp: 1_777_000_000_000 },
    { type: 'TOOL_CALL_START', toolCallId: 'c1', toolCallName: 'search', parentMessageId: 'm1' },
    { type: 'STATE_DELTA', delta: [{ op: 'replace', path: '/count', value: 2 }] },
    { type: 'CUSTOM', name: 'message_added', value: { id: 1 }, extra: 'members are allowed' },
    { type: 'RUN_FINISHED', threadId: 't1', runId: 'r1' },
  ])('accepts $type', async (event) => {
    await expect(validator.validate('agui', event)).resolves.toBeUndefined();
  });

  it('names a missing field', async () => {
    const error = await failure('agui', { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1' });
    expect(error.kind).toBe('agui');
    expect(error.path).toBe('delta');
    expect(error.message).toMatch(/^invalid agui event at "delta": .*expected string/);
  });

  it('names an unknown type', async () => {
    const error = await failure('agui', { type: 'TEXT_MESSAGE', messageId: 'm1', delta: 'x' });
    expect(error.path).toBe('type');
  });

  it('names nested fields and wrong values', async () => {
    expect((await failure('agui', { type: 'STATE_DELTA', delta: [{ op: 'merge', path: '/a' }] })).path).toBe(
      'delta[0].op',
    );
    expect((await failure('agui', { type: 'TEXT_MESSAGE_START', messageId: 'm1', role: 'robot' })).path).toBe('role');
    // AG-UI timestamps are integer milliseconds, not RFC 3339 text.
    const stamped = { type: 'RUN_ERROR', message: 'boom', timestamp: '2026-05-04T10:00:00Z' };
    expect((await failure('agui', stamped)).path).toBe('timestamp');
  });

  it('rejects what is not an object', async () => {
    const error = await failure('agui', 'TEXT_MESSAGE_CONTENT');
    expect(error.path).toBe('');
    expect(error).toBeInstanceOf(Error);
  });
});

describe('A2A validation', () => {
  const status = { state: 'TASK_STATE_WORKING' };
  const parts = [{ text: 'Hello' }];

  it.each([
    { task: { id: 't1', contextId: 'c1', status } },
    { message: { messageId: 'm1', role: 'ROLE_AGENT', parts } },
    { statusUpdate: { taskId: 't1', contextId: 'c1', status: { state: 'TASK_STATE_COMPLETED' } } },
    { artifactUpdate: { taskId: 't1', contextId: 'c1', artifact: { artifactId: 'a1', parts }, lastChunk: true } },
  ])('accepts %j', async (event) => {
    await expect(validator.validate('a2a', event)).resolves.toBeUndefined();
  });

  it.each([
    [{ statusUpdate: { taskId: 't1', contextId: 'c1' } }, 'statusUpdate.status', 'must be an object'],
    [
      { statusUpdate: { taskId: 't1', contextId: 'c1', status: { state: 'working' } } },
      'statusUpdate.status.state',
      'task state',
    ],
    [{ task: { id: '', contextId: 'c1', status } }, 'task.id', 'non-empty string'],
    [{ message: { messageId: 'm1', role: 'agent', parts } }, 'message.role', 'ROLE_AGENT'],
    [{ message: { messageId: 'm1', role: 'ROLE_USER', parts: [] } }, 'message.parts', 'non-empty array'],
    [
      { artifactUpdate: { taskId: 't1', contextId: 'c1', artifact: { parts } } },
      'artifactUpdate.artifact.artifactId',
      'non-empty',
    ],
  ])('rejects %j at %s', async (event, path, detail) => {
    const error = await failure('a2a', event);
    expect(error.path).toBe(path);
    expect(error.message).toContain(`"${path}"`);
    expect(error.message).toContain(detail);
  });

  it('needs exactly one payload', async () => {
    expect((await failure('a2a', { kind: 'task', id: 't1' })).message).toContain('exactly one of "task"');
    const both = {
      task: { id: 't1', contextId: 'c1', status },
      message: { messageId: 'm1', role: 'ROLE_USER', parts },
    };
    expect((await failure('a2a', both)).path).toBe('');
  });
});

describe('system and analytics validation', () => {
  it('accepts an object with a type, known or not', async () => {
    await expect(validator.validate('system', { type: 'HEARTBEAT', timestamp: '2026-05-04T10:00:00Z' })).resolves.toBe(
      undefined,
    );
    await expect(validator.validate('analytics', { type: 'my.metric', value: 3 })).resolves.toBeUndefined();
  });

  it.each([
    ['system', { contextId: 'c1' }, 'type'],
    ['analytics', { type: '' }, 'type'],
    ['system', { type: 7 }, 'type'],
    ['analytics', [{ type: 'PAGE_VIEW' }], ''],
    ['system', null, ''],
  ] as const)('%s rejects %j at "%s"', async (kind, event, path) => {
    const error = await failure(kind, event);
    expect(error.kind).toBe(kind);
    expect(error.path).toBe(path);
  });
});

describe('switches', () => {
  it('checks only the kinds switched on', async () => {
    const aguiOnly = createEventValidator({ agui: true, a2a: false });
    expect(aguiOnly.validates('agui')).toBe(true);
    expect(aguiOnly.validates('a2a')).toBe(false);
    expect(aguiOnly.validates('system')).toBe(false);
    await expect(aguiOnly.validate('a2a', { nothing: true })).resolves.toBeUndefined();
    await expect(aguiOnly.validate('system', 42)).resolves.toBeUndefined();
    await expect(aguiOnly.validate('agui', { type: 'NOPE' })).rejects.toThrow(EventValidationError);
  });
});
