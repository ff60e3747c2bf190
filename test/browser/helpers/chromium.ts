import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';
import { type Browser, chromium } from 'playwright-core';

/** `CHROMIUM_PATH`, else the first of the usual names on PATH (the Debian package installs `chromium`). */
export function findChromium(): string | undefined {
  const explicit = process.env.CHROMIUM_PATH;
  if (explicit) return isAbsolute(explicit) ? explicit : onPath(explicit);
  for (const name of ['chromium', 'chromium-browser', 'google-chrome']) {
    const found = onPath(name);
    if (found) return found;
  }
  return undefined;
}

function onPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * `describe`, or `describe.skip` with a loud warning when there is no Chromium on a developer's
 * machine. Under CI a missing browser fails the suite: a silently skipped suite proves nothing.
 */
export function describeInChromium(name: string, body: () => void): void {
  if (findChromium() !== undefined) {
    describe(name, body);
    return;
  }
  if (process.env.CI) {
    describe(name, () => {
      it('needs Chromium', () => {
        throw new Error('Chromium not found: install it (apt-get install chromium) or set CHROMIUM_PATH');
      });
    });
    return;
  }
  console.warn(
    `\n\n!!! SKIPPING browser tests "${name}": no Chromium found (set CHROMIUM_PATH or install chromium) !!!\n\n`,
  );
  describe.skip(name, body);
}

export async function launchChromium(): Promise<Browser> {
  const executablePath = findChromium();
  if (!executablePath) throw new Error('Chromium not found');
  return chromium.launch({ executablePath, headless: true });
}
