import type { Browser } from 'playwright-core';
import { type HubProcess, SHARED_REDIS_URL, startReadyHub, uniquePrefix } from '../helpers/hub-process';
import { mintToken } from '../helpers/tokens';
import { AppServer } from './helpers/app-server';
import { describeInChromium, launchChromium } from './helpers/chromium';
import {
  expectEveryEventOnce,
  lastConnection,
  Origin,
  Publisher,
  type Tab,
  sleep,
  streamConnections,
  waitFor,
  waitForDelivery,
  waitForOpen,
} from './helpers/scenario';

/** Every tab of one browser origin shares one stream, and loses nothing when the tab holding it goes. */
describeInChromium('browser client: one stream per origin', () => {
  const prefix = uniquePrefix();
  let hub: HubProcess;
  let app: AppServer;
  let browser: Browser;

  beforeAll(async () => {
    [hub, browser] = await Promise.all([
      startReadyHub({ REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: prefix }),
      launchChromium(),
    ]);
    app = await new AppServer([hub.url]).listen();
  }, 30_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await hub?.stop();
  });

  const noStreamsLeft = (): Promise<number> =>
    waitFor(
      'the hub to see no streams',
      () => streamConnections([hub]),
      (n) => n === 0,
    );

  for (const share of ['shared-worker', 'leader-election'] as const) {
    it(`holds exactly one connection for 1, 3 and 10 tabs (${share})`, async () => {
      const user = `tabs-${share}`;
      const token = await mintToken(user);
      const publisher = new Publisher(prefix, user);
      const origin = await Origin.open(browser, app);
      const figures: string[] = [];
      try {
        for (const count of [1, 3, 10]) {
          await origin.openTabs(count - origin.tabs.length, { token, share });
          await waitForOpen(origin.tabs);
          // Delivery to every tab proves they all joined the one stream before it is counted.
          const id = await publisher.publish();
          await waitForDelivery(origin.tabs, publisher.lastSeq);
          const connections = await streamConnections([hub]);
          figures.push(`${count} tab(s): ${connections} connection(s)`);
          expect({ tabs: count, connections, event: id !== '' }).toEqual({ tabs: count, connections: 1, event: true });
          expect(origin.tabs.map((t) => lastConnection(t)?.tabs)).toEqual(origin.tabs.map(() => count));
        }
        const roles = origin.tabs.map((t) => lastConnection(t)?.role);
        expect(roles.filter((r) => r === 'leader').length).toBe(share === 'leader-election' ? 1 : 0);
        console.log(`[browser] ${share}, connections per origin: ${figures.join('; ')}`);
      } finally {
        publisher.close();
        await origin.close();
      }
      await noStreamsLeft();
    }, 60_000);
  }

  it('the tab holding the stream closes while events flow at 50/s: the others get every event once', async () => {
    const user = 'handover';
    const token = await mintToken(user);
    const publisher = new Publisher(prefix, user);
    const origin = await Origin.open(browser, app);
    try {
      const tabs = await origin.openTabs(4, { token, share: 'leader-election' });
      await waitForOpen(tabs);
      await publisher.publish();
      await waitForDelivery(tabs, publisher.lastSeq);
      publisher.start(50);
      await sleep(1000);
      const leader = tabs.find((t) => lastConnection(t)?.role === 'leader');
      if (!leader) throw new Error('no leader tab');
      const closedAt = Date.now();
      await origin.closeTab(leader);
      const survivors = origin.tabs;
      const newLeader = await waitFor(
        'a new leader',
        () => survivors.find((t) => lastConnection(t)?.role === 'leader'),
        (t) => t !== undefined,
      );
      const tookOverMs = Date.now() - closedAt;
      await sleep(1500);
      await publisher.stop();
      await waitForDelivery(survivors, publisher.lastSeq);
      for (const tab of survivors) await expectEveryEventOnce(tab, publisher.lastSeq);
      expect(await streamConnections([hub])).toBe(1);
      console.log(
        `[browser] leader closed at 50 events/s: a new leader within ${tookOverMs} ms; ` +
          `${survivors.length} tabs got events 1..${publisher.lastSeq} once each (the new leader was tab ${survivors.indexOf(newLeader as Tab) + 2} of 4)`,
      );
    } finally {
      publisher.close();
      await origin.close();
    }
    await noStreamsLeft();
  }, 60_000);
});
