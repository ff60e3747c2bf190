/**
 * The SharedWorker that holds one stream per configuration for every tab of the origin:
 * `new SharedWorker(new URL('ssehub/client/worker', import.meta.url), { type: 'module' })`, or
 * let `connect()` start it.
 */
import { Holder, type HolderScope } from './holder.mjs';
import type { ToHolder, ToTab, WorkerInit } from './protocol.mjs';
import type { Credentials } from './types.mjs';

interface SharedWorkerScope extends HolderScope {
  addEventListener(type: 'connect', listener: (event: MessageEvent) => void): void;
  addEventListener(type: 'online' | 'offline', listener: () => void): void;
}

/** How long a tab may take to answer for credentials before the next tab is asked. */
const AUTH_TIMEOUT_MS = 10_000;

const scope = self as unknown as SharedWorkerScope;

interface Group {
  holder: Holder;
  ports: Map<string, MessagePort>;
  pendingAuth: Map<number, (reply: Extract<ToHolder, { t: 'auth-reply' }> | null) => void>;
}

const groups = new Map<string, Group>();
let nextRequest = 1;

function post(group: Group, message: ToTab): void {
  const to = 'to' in message ? message.to : undefined;
  if (to !== undefined) {
    group.ports.get(to)?.postMessage(message);
    return;
  }
  for (const port of group.ports.values()) port.postMessage(message);
}

/** The worker has no credentials of its own: the newest tab is asked first, older ones if it does not answer. */
async function credentialsFrom(group: Group, needsAuth: boolean): Promise<Credentials> {
  if (!needsAuth) return {};
  for (const [tabId, port] of [...group.ports].reverse()) {
    const reqId = nextRequest++;
    const reply = await new Promise<Extract<ToHolder, { t: 'auth-reply' }> | null>((resolve) => {
      const timer = setTimeout(() => {
        group.pendingAuth.delete(reqId);
        resolve(null);
      }, AUTH_TIMEOUT_MS);
      group.pendingAuth.set(reqId, (answer) => {
        clearTimeout(timer);
        group.pendingAuth.delete(reqId);
        resolve(answer);
      });
      port.postMessage({ t: 'auth', reqId, to: tabId } satisfies ToTab);
    });
    if (reply === null) continue;
    if (reply.error) throw reply.error;
    return {
      ...(reply.ticket === undefined ? {} : { ticket: reply.ticket }),
      ...(reply.headers === undefined ? {} : { headers: reply.headers }),
    };
  }
  throw new Error('no tab answered for credentials');
}

function groupFor(init: WorkerInit): Group {
  const existing = groups.get(init.key);
  if (existing) return existing;
  const group: Group = {
    ports: new Map(),
    pendingAuth: new Map(),
    holder: undefined as unknown as Holder,
  };
  group.holder = new Holder(
    init.config,
    { post: (message) => post(group, message), credentials: () => credentialsFrom(group, init.config.needsAuth) },
    scope,
    (tabId, remaining) => {
      group.ports.delete(tabId);
      if (remaining > 0) return;
      // Nobody listens any more: end the stream rather than hold a connection for no one.
      group.holder.close();
      if (groups.get(init.key) === group) groups.delete(init.key);
    },
  );
  groups.set(init.key, group);
  return group;
}

scope.addEventListener('connect', (event: MessageEvent) => {
  const port = event.ports[0];
  if (!port) return;
  let init: WorkerInit | undefined;
  port.onmessage = (message: MessageEvent<WorkerInit | ToHolder>) => {
    const data = message.data;
    if (data.t === 'init') {
      init = data;
      const group = groupFor(data);
      group.ports.set(data.hello.tabId, port);
      // A short wait gathers the cursors of tabs that open together, for one start from the oldest.
      group.holder.join(data.hello.tabId, data.hello.cursor, data.hello.visible, true, 20);
      return;
    }
    if (!init) return;
    // The group may have ended while this tab was away (say, in the back/forward cache).
    const group = data.t === 'hello' ? groupFor(init) : groups.get(init.key);
    if (!group) return;
    switch (data.t) {
      case 'hello':
        group.ports.set(data.tabId, port);
        group.holder.join(data.tabId, data.cursor, data.visible, true);
        break;
      case 'bye':
        group.holder.leave(data.tabId);
        break;
      case 'visible':
        group.holder.setVisible(data.tabId, data.visible);
        break;
      case 'reconnect':
        group.holder.reconnect();
        break;
      case 'auth-reply':
        group.pendingAuth.get(data.reqId)?.(data);
        break;
    }
  };
  port.start();
});
