// @ts-check
/**
 * Runs Nchan (nginx + libnginx-mod-nchan) for the benchmark: renders nginx.conf.template into a
 * fresh temporary prefix and starts `nginx -p <tmp> -c <tmp>/nginx.conf -e <tmp>/error.log` as a
 * non-daemon child on a free port.
 *
 * Standalone:  node bench/nchan/nchan.mjs --redis-url redis://127.0.0.1:6390 [--port 8099] [--workers 1]
 * (runs until Ctrl-C).
 *
 * Needs: apt-get install -y nginx libnginx-mod-nchan   (Debian 12: nginx 1.22.1, nchan 1.3.6)
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { childPids, freePort, spawnChild, stopChild, waitForPort } from '../lib/procs.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const MODULE_CANDIDATES = [
  '/usr/lib/nginx/modules/ngx_nchan_module.so',
  '/usr/share/nginx/modules/ngx_nchan_module.so',
];

/** The nginx binary and the Nchan module, or a reason they are missing. */
export function findNchan() {
  let nginx = '';
  for (const candidate of ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx']) {
    if (existsSync(candidate)) {
      nginx = candidate;
      break;
    }
  }
  if (!nginx) {
    try {
      nginx = execFileSync('sh', ['-c', 'command -v nginx'], { encoding: 'utf8' }).trim();
    } catch {
      // not on PATH
    }
  }
  const module = MODULE_CANDIDATES.find((path) => existsSync(path)) ?? '';
  if (!nginx) return { ok: false, reason: 'nginx not installed (apt-get install -y nginx libnginx-mod-nchan)' };
  if (!module) return { ok: false, reason: 'Nchan module not installed (apt-get install -y libnginx-mod-nchan)' };
  return { ok: true, nginx, module, reason: '' };
}

/**
 * @param {{redisUrl: string, workers?: number, port?: number}} options
 */
export async function startNchan(options) {
  const found = findNchan();
  if (!found.ok) throw new Error(found.reason);
  const port = options.port ?? (await freePort());
  const prefix = mkdtempSync(join(tmpdir(), 'bench-nchan-'));
  chmodSync(prefix, 0o755);
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const conf = readFileSync(join(HERE, 'nginx.conf.template'), 'utf8')
    .replaceAll('{{MODULE}}', /** @type {string} */ (found.module))
    .replaceAll('{{WORKERS}}', String(options.workers ?? 1))
    .replaceAll('{{PREFIX}}', prefix)
    .replaceAll('{{PORT}}', String(port))
    .replaceAll('{{REDIS_URL}}', options.redisUrl)
    // Workers keep root's files readable and the temp paths writable; a non-root master cannot switch users anyway.
    .replaceAll('{{USER}}', isRoot ? 'user root;' : '');
  const confPath = join(prefix, 'nginx.conf');
  writeFileSync(confPath, conf);
  const errorLog = join(prefix, 'error.log');
  const child = spawnChild(/** @type {string} */ (found.nginx), ['-p', prefix, '-c', confPath, '-e', errorLog], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout?.on('data', (c) => (output += c));
  child.stderr?.on('data', (c) => (output += c));
  const readLog = () => {
    try {
      return readFileSync(errorLog, 'utf8');
    } catch {
      return '';
    }
  };
  try {
    await waitForPort(port, 10_000, () => child.exitCode !== null || child.signalCode !== null);
  } catch (err) {
    await stopChild(child, 'SIGKILL');
    throw new Error(`nginx did not start: ${/** @type {Error} */ (err).message}\n${output}${readLog()}`);
  }
  const masterPid = /** @type {number} */ (child.pid);
  return {
    port,
    prefix,
    child,
    /** master and worker pids */
    pids: () => [masterPid, ...childPids(masterPid)],
    errorLog: readLog,
    async stop() {
      await stopChild(child, 'SIGTERM', 5000);
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const arg = (/** @type {string} */ name, /** @type {string} */ fallback) => {
    const i = process.argv.indexOf(name);
    return i === -1 ? fallback : (process.argv[i + 1] ?? fallback);
  };
  const nchan = await startNchan({
    redisUrl: arg('--redis-url', 'redis://127.0.0.1:6379'),
    port: Number(arg('--port', '0')) || undefined,
    workers: Number(arg('--workers', '1')),
  });
  console.log(`nchan on http://127.0.0.1:${nchan.port} (prefix ${nchan.prefix}); Ctrl-C stops it`);
  process.on('SIGINT', () => void nchan.stop().then(() => process.exit(0)));
}
