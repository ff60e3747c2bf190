import { Registry } from '../../src/hub/registry';

const sub = (userId: string, id: string) => ({ userId, id });

describe('registry', () => {
  it('looks subscribers up per stream and user', () => {
    const registry = new Registry<ReturnType<typeof sub>>(10);
    const a = sub('alice', '1');
    const b = sub('bob', '2');
    registry.add('agui', a);
    registry.add('contexts', b);
    expect([...(registry.subscribers('agui', 'alice') ?? [])]).toEqual([a]);
    expect(registry.subscribers('agui', 'bob')).toBeUndefined();
    expect(registry.count('agui')).toBe(1);
    expect(registry.total()).toBe(2);
    expect(registry.userIds()).toEqual(new Set(['alice', 'bob']));
  });

  it('enforces the cap per user and per stream', () => {
    const registry = new Registry<ReturnType<typeof sub>>(2);
    expect(registry.add('agui', sub('u', '1'))).toBe(true);
    const second = sub('u', '2');
    expect(registry.add('agui', second)).toBe(true);
    expect(registry.hasRoomFor('agui', 'u')).toBe(false);
    expect(registry.add('agui', sub('u', '3'))).toBe(false);
    expect(registry.add('agui', second)).toBe(true); // already registered
    expect(registry.add('a2a', sub('u', '4'))).toBe(true);
    expect(registry.add('agui', sub('other', '5'))).toBe(true);
    expect(registry.count('agui')).toBe(3);
  });

  it('forgets users with no connections left and ignores unknown removals', () => {
    const registry = new Registry<ReturnType<typeof sub>>(10);
    const a = sub('u', '1');
    registry.add('agui', a);
    registry.remove('agui', a);
    registry.remove('agui', a);
    registry.remove('a2a', sub('nobody', 'x'));
    expect(registry.subscribers('agui', 'u')).toBeUndefined();
    expect(registry.count('agui')).toBe(0);
    expect([...registry.all()]).toEqual([]);
  });
});
