import type { Browser } from 'playwright-core';
import { type HubProcess, SHARED_REDIS_URL, startReadyHub, uniquePrefix } from '../helpers/hub-process';
import { mintToken } from '../helpers/tokens';
import { AppServer } from './helpers/app-server';
import { describeInChromium, launchChromium } from './helpers/chromium';
import {
  expectEveryEventOnce,
  Origin,
  Publisher,
  sleep,
  type Tab,
  type TabRecord,
  waitFor,
  waitForDelivery,
  waitForOpen,
} from './helpers/scenario';

/** When each tab next reported an open stream after `since`, in ms after `since`. */
async function recoveryTimes(tabs: Tab[], since: number): Promise<number[]> {
  const opened = (tab: Tab): TabRecord | undefined =>
    tab.records.find((r) => r.at >= since && r.type === 'status' && r.status.state === 'open');
  await waitFor(
    'every tab to recover',
    () => tabs.map(opened),
    (all) => all.every((r) => r !== undefined),
    30_000,
  );
  return tabs.map((tab) => (opened(tab) as TabRecord).at - since);
}

/** Reloads, replica restarts and proxy outages: every tab resumes where it was, by itself. */
describeInChromium('browser client: resume', () => {
  const prefix = uniquePrefix();
  const env = {
    REDIS_URL: SHARED_REDIS_URL,
    SSEHUB_CHANNEL_PREFIX: prefix,
    SSEHUB_DRAIN_MS: '1000',
    // Short heartbeats let a frozen stream be noticed in about a second (2.5 of them).
    SSEHUB_HEARTBEAT_MS: '500',
  };
  let hubA: HubProcess;
  let hubB: HubProcess;
  let app: AppServer;
  let browser: Browser;

  beforeAll(async () => {
    [hubA, hubB, browser] = await Promise.all([startReadyHub(env), startReadyHub(env), launchChromium()]);
    app = await new AppServer([hubA.url, hubB.url]).listen();
  }, 30_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await Promise.all([hubA?.stop(), hubB?.stop()]);
  });

  it('a tab reloaded mid-stream resumes with no gap: alone, and next to a tab that keeps the stream', async () => {
    const user = 'reload';
    const token = await mintToken(user);
    const publisher = new Publisher(prefix, user);
    const alone = await Origin.open(browser, app);
    const pair = await Origin.open(browser, app);
    try {
      const [single] = await alone.openTabs(1, { token });
      const [reloaded, staying] = await pair.openTabs(2, { token });
      const tabs = [single, reloaded, staying] as Tab[];
      await waitForOpen(tabs);
      publisher.start(50);
      await sleep(1000);
      await Promise.all([single?.page.reload(), reloaded?.page.reload()]);
      await sleep(1000);
      await publisher.stop();
      await waitForDelivery(tabs, publisher.lastSeq);
      for (const tab of tabs) await expectEveryEventOnce(tab, publisher.lastSeq);
      console.log(`[browser] reload at 50 events/s: 3 tabs got events 1..${publisher.lastSeq} once each, no gap`);
    } finally {
      publisher.close();
      await Promise.all([alone.close(), pair.close()]);
    }
  }, 60_000);

  it('a replica that hangs (no heartbeats, connection open) is left for another, and nothing is lost', async () => {
    const user = 'stall';
    const token = await mintToken(user);
    const publisher = new Publisher(prefix, user);
    const origin = await Origin.open(browser, app);
    try {
      const tabs = await origin.openTabs(2, { token, heartbeatMs: '500' });
      await waitForOpen(tabs);
      publisher.start(50);
      await sleep(500);
      // The process stops answering but its sockets stay open; the load balancer takes it out of rotation.
      const frozenAt = Date.now();
      hubA.child.kill('SIGSTOP');
      app.upstreams = [hubB.url];
      let recovered: number[];
      try {
        recovered = await recoveryTimes(tabs, frozenAt);
      } finally {
        hubA.child.kill('SIGCONT');
        app.upstreams = [hubA.url, hubB.url];
      }
      await sleep(500);
      await publisher.stop();
      await waitForDelivery(tabs, publisher.lastSeq);
      for (const tab of tabs) await expectEveryEventOnce(tab, publisher.lastSeq);
      const stalls = tabs.map(
        (t) => t.records.filter((r) => r.type === 'status' && r.status.reason === 'stalled').length,
      );
      expect(stalls.every((n) => n >= 1)).toBe(true);
      console.log(
        `[browser] hung replica (heartbeat 500 ms): stall detected, open again after ${recovered.join(', ')} ms, nothing lost`,
      );
    } finally {
      publisher.close();
      await origin.close();
    }
  }, 60_000);

  it('surfaces reset with its reason when the cursor fell out of retention', async () => {
    const user = 'trimmed';
    const token = await mintToken(user);
    const publisher = new Publisher(prefix, user);
    const origin = await Origin.open(browser, app);
    try {
      const stale = await publisher.publish();
      // More than the history keeps (SSEHUB_HISTORY_MAX, 1000): the stale id is trimmed away.
      await Promise.all(Array.from({ length: 1001 }, () => publisher.publish()));
      const tab = await origin.openTab({ token, last: stale });
      const reset = await waitFor(
        'a reset',
        () => tab.records.find((r): r is Extract<TabRecord, { type: 'reset' }> => r.type === 'reset'),
        (r) => r !== undefined,
      );
      expect(reset?.reset.reason).toBe('trimmed');
      await waitForOpen([tab]);
      await publisher.publish();
      await waitForDelivery([tab], publisher.lastSeq);
      console.log(`[browser] reset surfaced: ${JSON.stringify(reset?.reset)}`);
    } finally {
      publisher.close();
      await origin.close();
    }
  }, 60_000);

  it('a replica restart and 5 s of 502 from the proxy: every tab recovers by itself and loses nothing', async () => {
    const user = 'outage';
    const token = await mintToken(user);
    const publisher = new Publisher(prefix, user);
    const workers = await Origin.open(browser, app);
    const election = await Origin.open(browser, app);
    try {
      const tabs = [
        ...(await workers.openTabs(3, { token, share: 'shared-worker' })),
        ...(await election.openTabs(2, { token, share: 'leader-election' })),
      ];
      await waitForOpen(tabs);
      publisher.start(50);
      await sleep(500);

      // A rolling restart of the replica the proxy prefers: it drains (retry: hints, then 503), exits, comes back.
      const restartAt = Date.now();
      await hubA.stop('SIGTERM');
      const afterRestart = await recoveryTimes(tabs, restartAt);
      hubA = await startReadyHub(env);
      app.upstreams = [hubA.url, hubB.url];
      await sleep(500);

      // The proxy loses its upstreams: the streams break and every request gets a 502 page for 5 s.
      const outageAt = Date.now();
      app.failFor(5000);
      const afterOutage = await recoveryTimes(tabs, outageAt + 5000);
      await sleep(500);
      await publisher.stop();
      await waitForDelivery(tabs, publisher.lastSeq);
      for (const tab of tabs) await expectEveryEventOnce(tab, publisher.lastSeq);
      console.log(
        `[browser] replica restart: tabs open again after ${afterRestart.join(', ')} ms; ` +
          `5 s of 502: open again ${afterOutage.join(', ')} ms after the proxy recovered; ` +
          `events 1..${publisher.lastSeq} delivered once to each of ${tabs.length} tabs`,
      );
    } finally {
      publisher.close();
      await Promise.all([workers.close(), election.close()]);
    }
  }, 90_000);
});
