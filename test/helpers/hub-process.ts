import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { TEST_SECRET } from './tokens';

const MAIN = join(__dirname, '..', '..', 'dist', 'main.js');

export const SHARED_REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A unique channel prefix per test keeps parallel suites apart on one shared Redis. */
export function uniquePrefix(): string {
  return `ssehubtest-${randomBytes(6).toString('hex')}`;
}

export interface HubProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything the process wrote to stdout and stderr. */
  output(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts a real hub (the compiled `dist/main.js`) on a free port and waits until it listens. */
export async function startHub(env: Record<string, string>): Promise<HubProcess> {
  const child = spawn(process.execPath, [MAIN], {
    env: {
      PATH: process.env.PATH ?? '',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'info',
      SSEHUB_JWT_SECRET: TEST_SECRET,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hub did not start:\n${output}`)), 10_000);
    const check = (): void => {
      const match = /"port":(\d+),"transport":"\w+","msg":"ssehub listening"/.exec(output);
      if (match) {
        clearTimeout(timer);
        resolve(Number(match[1]));
      }
    };
    child.stdout?.on('data', check);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`hub exited with ${code} before listening:\n${output}`));
    });
  });

  const hub: HubProcess = {
    url: `http://127.0.0.1:${port}`,
    port,
    child,
    output: () => output,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  return hub;
}

/** Polls `/readyz` until the hub's transport subscription is up. */
export async function waitUntilReady(hub: HubProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`${hub.url}/readyz`);
      if (res.status === 200) return;
    } catch {
      // not accepting yet
    }
    if (Date.now() > deadline) throw new Error(`hub not ready:\n${hub.output()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export async function startReadyHub(env: Record<string, string>): Promise<HubProcess> {
  const hub = await startHub(env);
  await waitUntilReady(hub);
  return hub;
}

export async function metricValue(hub: HubProcess, series: string): Promise<number> {
  const text = await (await fetch(`${hub.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  if (line === undefined) throw new Error(`metric ${series} not found`);
  return Number(line.slice(series.length + 1));
}
