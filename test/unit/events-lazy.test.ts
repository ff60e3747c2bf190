/**
 * The schema modules (and zod) load on the first validation of a kind that needs them, never on
 * import or for other kinds. Each is replaced by a counting pass-through of the real module.
 */
const SCHEMA_MODULES = ['@ag-ui/core/schemas', 'zod/v4', 'zod', '@a2a-js/sdk'] as const;

let loaded: string[];

beforeEach(() => {
  jest.resetModules();
  loaded = [];
  for (const name of SCHEMA_MODULES) {
    jest.doMock(name, () => {
      loaded.push(name);
      return jest.requireActual(name);
    });
  }
});

afterEach(() => {
  for (const name of SCHEMA_MODULES) jest.dontMock(name);
});

// require, not import(): the module registry is reset per test, so each test imports afresh.
const loadEvents = async (): Promise<typeof import('../../src/events')> => require('../../src/events');

describe('lazy loading', () => {
  it('loads no schema to import, create a validator, serialize or check system events', async () => {
    const { createEventValidator, serializeEvent } = await loadEvents();
    const validator = createEventValidator({ agui: true, a2a: true, system: true, analytics: true });
    await validator.validate('system', { type: 'HEARTBEAT' });
    await validator.validate('analytics', { type: 'HEARTBEAT' });
    await serializeEvent('agui', { type: 'TEXT_MESSAGE_END', messageId: 'm1' });
    await serializeEvent('a2a', '{"task":{}}');
    expect(loaded).toEqual([]);
  });

  it('loads the AG-UI schemas once, on the first AG-UI validation', async () => {
    const { createEventValidator } = await loadEvents();
    const validator = createEventValidator({ agui: true });
    await validator.validate('agui', { type: 'TEXT_MESSAGE_END', messageId: 'm1' });
    expect(loaded).toEqual(['@ag-ui/core/schemas', 'zod/v4']);
    const count = loaded.length;
    await validator.validate('agui', { type: 'TEXT_MESSAGE_END', messageId: 'm2' });
    await createEventValidator({ agui: true }).validate('agui', { type: 'RUN_ERROR', message: 'x' });
    expect(loaded).toHaveLength(count);
  });

  it('loads the A2A SDK only for A2A, and nothing for a kind that is off', async () => {
    const { createEventValidator } = await loadEvents();
    await createEventValidator({ a2a: false, agui: false }).validate('agui', { type: 'NOPE' });
    expect(loaded).toEqual([]);
    await createEventValidator({ a2a: true }).validate('a2a', {
      statusUpdate: { taskId: 't1', contextId: 'c1', status: { state: 'TASK_STATE_WORKING' } },
    });
    expect(loaded).toEqual(['@a2a-js/sdk']);
  });
});
