import type { Browser } from 'playwright-core';
import { type HubProcess, SHARED_REDIS_URL, startReadyHub, uniquePrefix } from '../helpers/hub-process';
import { mintToken } from '../helpers/tokens';
import { AppServer } from './helpers/app-server';
import { describeInChromium, launchChromium } from './helpers/chromium';

/** examples/browser/index.html, served with the built client next to it, as its text says. */
describeInChromium('browser example', () => {
  let hub: HubProcess;
  let app: AppServer;
  let browser: Browser;

  beforeAll(async () => {
    [hub, browser] = await Promise.all([
      startReadyHub({ REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: uniquePrefix() }),
      launchChromium(),
    ]);
    app = await new AppServer([hub.url]).listen();
  }, 30_000);

  afterAll(async () => {
    await browser?.close();
    await app?.close();
    await hub?.stop();
  });

  it('subscribes through ssehub/client, shows the sharing and the status, and shows a published event', async () => {
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(`${app.url}/app/example/index.html`);
      await page.locator('#log').getByText('ssehub/client loaded').waitFor();
      await page.fill('#token', await mintToken('example-user'));
      await page.selectOption('#stream', '/api/v1/stream/agui');
      await page.click('#connect');
      await page.locator('#state', { hasText: 'open' }).waitFor();
      await page.locator('#sharing', { hasText: '1 stream for 1 tab(s)' }).waitFor();
      await page.click('#publish');
      await page.locator('#log').getByText('hello from the browser').waitFor();
    } finally {
      await context.close();
    }
  }, 30_000);
});
