// @ts-check
/**
 * Process plumbing for the benchmark: free ports, children started with a raised open-files limit
 * and killed when the benchmark exits (whatever way it exits), and /proc readings of CPU time and
 * RSS.
 */
import { spawn, execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import net from 'node:net';

/** @type {Set<import('node:child_process').ChildProcess>} */
const children = new Set();

function killAll() {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}
process.on('exit', killAll);
for (const signal of /** @type {const} */ (['SIGINT', 'SIGTERM', 'SIGHUP'])) {
  process.on(signal, () => {
    killAll();
    process.exit(130);
  });
}

/**
 * Raises the soft open-files limit to the hard one (at most 65536) before exec'ing the command,
 * so the process id stays that of the command itself (for /proc readings).
 */
const ULIMIT_WRAPPER =
  'h=$(ulimit -Hn); if [ "$h" = unlimited ] || [ "$h" -gt 65536 ]; then h=65536; fi; ulimit -n "$h" 2>/dev/null; exec "$@"';

/**
 * Spawns a child with the raised limit and registers it for cleanup.
 * @param {string} command
 * @param {string[]} args
 * @param {import('node:child_process').SpawnOptions} [options]
 */
export function spawnChild(command, args, options = {}) {
  const child = spawn('/bin/sh', ['-c', ULIMIT_WRAPPER, 'sh', command, ...args], options);
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

/**
 * A Node child with an IPC channel (like fork), with the raised limit.
 * @param {string} modulePath
 * @param {string[]} [args]
 */
export function forkNode(modulePath, args = []) {
  return spawnChild(process.execPath, [modulePath, ...args], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

/**
 * Stops a child: `signal`, then SIGKILL after `graceMs`.
 * @param {import('node:child_process').ChildProcess} child
 * @param {NodeJS.Signals} [signal]
 * @param {number} [graceMs]
 */
export async function stopChild(child, signal = 'SIGTERM', graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** @returns {Promise<number>} */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (server.address());
      server.close(() => resolve(port));
    });
  });
}

/**
 * Resolves once something accepts TCP connections on the port.
 * @param {number} port
 * @param {number} timeoutMs
 * @param {() => boolean} [gone]  stops waiting early (e.g. the server process exited)
 */
export async function waitForPort(port, timeoutMs, gone = () => false) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (gone()) throw new Error(`process exited before listening on ${port}`);
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

let clkTck = 0;
export function ticksPerSecond() {
  if (clkTck === 0) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100;
    }
  }
  return clkTck;
}

/**
 * utime + stime (in µs) and RSS (bytes) of one process, from /proc/<pid>/stat and /proc/<pid>/status.
 * @param {number} pid
 */
export function procSample(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return { cpuUs: ((utime + stime) * 1e6) / ticksPerSecond(), rssBytes: rssKb * 1024 };
  } catch {
    return { cpuUs: 0, rssBytes: 0 };
  }
}

/**
 * Sum over several processes.
 * @param {number[]} pids
 */
export function procSum(pids) {
  let cpuUs = 0;
  let rssBytes = 0;
  for (const pid of pids) {
    const s = procSample(pid);
    cpuUs += s.cpuUs;
    rssBytes += s.rssBytes;
  }
  return { cpuUs, rssBytes, pids: pids.length };
}

/**
 * Direct children of a process (nginx workers of their master), from /proc.
 * @param {number} ppid
 */
export function childPids(ppid) {
  /** @type {number[]} */
  const out = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === ppid) out.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/** Whole-machine CPU ticks from /proc/stat: busy (everything but idle and iowait) and total. */
export function machineCpu() {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (v[3] ?? 0) + (v[4] ?? 0);
    return { busy: total - idle, total };
  } catch {
    return { busy: 0, total: 0 };
  }
}
