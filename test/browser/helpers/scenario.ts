import { Redis } from 'ioredis';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { type HubProcess, SHARED_REDIS_URL } from '../../helpers/hub-process';
import type { AppServer } from './app-server';

/** What the test page reports, in the order it happened (see fixtures/harness.html). */
export type TabRecord =
  | { type: 'event'; id: string | null; value: unknown; at: number }
  | { type: 'status'; status: { state: string; reason?: string }; at: number }
  | { type: 'reset'; reset: { reason: string; message: string; id: string | null }; at: number }
  | { type: 'connection'; info: { mode: string; role: 'leader' | 'follower'; tabs: number }; at: number };

export interface Tab {
  page: Page;
  records: TabRecord[];
}

export interface PageParams {
  token: string;
  share?: 'auto' | 'shared-worker' | 'leader-election' | 'none';
  url?: string;
  last?: string;
  heartbeatMs?: string;
}

/** One browser profile on the app's origin: its tabs share storage, workers and locks. */
export class Origin {
  readonly tabs: Tab[] = [];
  private readonly byPage = new Map<Page, Tab>();

  private constructor(
    readonly context: BrowserContext,
    private readonly app: AppServer,
  ) {}

  static async open(browser: Browser, app: AppServer): Promise<Origin> {
    const context = await browser.newContext();
    const origin = new Origin(context, app);
    await context.exposeBinding('ssehubRecord', ({ page }, entry: TabRecord) => {
      origin.byPage.get(page)?.records.push(entry);
    });
    return origin;
  }

  async openTab(params: PageParams): Promise<Tab> {
    const page = await this.context.newPage();
    const tab: Tab = { page, records: [] };
    this.byPage.set(page, tab);
    this.tabs.push(tab);
    const query = new URLSearchParams(Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined));
    await page.goto(`${this.app.url}/app/harness.html?${query}`);
    return tab;
  }

  async openTabs(count: number, params: PageParams): Promise<Tab[]> {
    const tabs: Tab[] = [];
    for (let i = 0; i < count; i++) tabs.push(await this.openTab(params));
    return tabs;
  }

  async closeTab(tab: Tab): Promise<void> {
    await tab.page.close();
    this.tabs.splice(this.tabs.indexOf(tab), 1);
  }

  async close(): Promise<void> {
    await this.context.close();
  }
}

export const events = (tab: Tab): Array<{ id: string; seq: number; at: number }> =>
  tab.records.flatMap((r) => (r.type === 'event' && r.id !== null ? [{ id: r.id, seq: seqOf(r.id), at: r.at }] : []));

export const lastConnection = (tab: Tab): Extract<TabRecord, { type: 'connection' }>['info'] | undefined =>
  tab.records.findLast((r): r is Extract<TabRecord, { type: 'connection' }> => r.type === 'connection')?.info;

export const seqOf = (id: string): number => Number(id.slice(id.lastIndexOf('-') + 1));

/**
 * The tab's events have no gap and no repeat, and end at `lastSeq`: with per-user ids counting up
 * by one and only this test publishing to its user, that is "every event once". Read from the
 * tab's own log, which survives reloads whole.
 */
export async function expectEveryEventOnce(tab: Tab, lastSeq: number): Promise<void> {
  const log = await tab.page.evaluate<string>("sessionStorage.getItem('harness:ids') ?? ''");
  const seqs = log.split(' ').filter(Boolean).map(seqOf);
  const problems: string[] = [];
  for (let i = 1; i < seqs.length; i++) {
    const [prev, cur] = [seqs[i - 1] as number, seqs[i] as number];
    if (cur !== prev + 1) problems.push(`${prev} -> ${cur}`);
  }
  expect({ problems, last: seqs.at(-1) }).toEqual({ problems: [], last: lastSeq });
}

/** Publishes `agui` events to one user through the hub's Redis function, like any backend. */
export class Publisher {
  private readonly redis = new Redis(SHARED_REDIS_URL);
  private timer: ReturnType<typeof setInterval> | undefined;
  private chain: Promise<unknown> = Promise.resolve();
  private counter = 0;
  lastSeq = 0;

  constructor(
    private readonly prefix: string,
    private readonly userId: string,
  ) {}

  async publish(): Promise<string> {
    const n = ++this.counter;
    const event = JSON.stringify({ type: 'CUSTOM', name: 'n', value: n });
    const id = (await this.redis.call(
      'FCALL',
      'ssehub_publish',
      '0',
      'agui',
      this.userId,
      event,
      this.prefix,
    )) as string;
    this.lastSeq = Math.max(this.lastSeq, seqOf(id));
    return id;
  }

  /** Publishes `perSecond` events a second, one after another, until `stop()`. */
  start(perSecond: number): void {
    this.timer = setInterval(() => {
      this.chain = this.chain.then(() => this.publish());
    }, 1000 / perSecond);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.chain;
  }

  close(): void {
    clearInterval(this.timer);
    this.redis.disconnect();
  }
}

/** Open streams on the given replicas, by `sse_active_connections` (summed over its streams). */
export async function streamConnections(hubs: HubProcess[]): Promise<number> {
  let total = 0;
  for (const hub of hubs) {
    const text = await (await fetch(`${hub.url}/metrics`)).text();
    for (const line of text.split('\n')) {
      if (line.startsWith('sse_active_connections{')) total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}

export async function waitFor<T>(
  what: string,
  probe: () => T | Promise<T>,
  ok: (value: T) => boolean,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value)}`);
    await sleep(50);
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until every tab has delivered the event with sequence number `seq`. */
export async function waitForDelivery(tabs: Tab[], seq: number, timeoutMs = 20_000): Promise<void> {
  await waitFor(
    `every tab to reach event ${seq}`,
    () => tabs.map((t) => events(t).at(-1)?.seq ?? 0),
    (lasts) => lasts.every((s) => s >= seq),
    timeoutMs,
  );
}

export const lastStatus = (tab: Tab): string | undefined =>
  tab.records.findLast((r): r is Extract<TabRecord, { type: 'status' }> => r.type === 'status')?.status.state;

/** Waits until every tab says its stream is open (a tab that joins a live stream hears so at once). */
export async function waitForOpen(tabs: Tab[], timeoutMs = 20_000): Promise<void> {
  await waitFor(
    'every tab to report an open stream',
    () => tabs.map(lastStatus),
    (s) => s.every((x) => x === 'open'),
    timeoutMs,
  );
}
