import { randomBytes } from 'node:crypto';
import { sleep } from './sse-client';

/** Polls `check` until it holds, or fails naming what it waited for. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/** A user id of its own per test, so suites sharing one store never see each other's events. */
export function uid(label: string): string {
  return `${label}-${randomBytes(4).toString('hex')}`;
}
