// @ts-check
/**
 * The floor of Node's own HTTP server for idle SSE streams, in memory and in CPU per stream open: a bare `http.createServer`
 * that answers every request with `200 text/event-stream` and keeps the response in a Map,
 * nothing else (no framework, no auth, no Redis). It puts B5's RSS per idle connection and B8's
 * CPU per stream open of ssehub and of the baseline in context: what Node and the kernel cost
 * before any hub code runs.
 *
 *   node bench/node-http-floor.mjs [--connections 10000]
 *
 * Prints the server's CPU (utime + stime from /proc) per connection opened, and its RSS growth
 * per open connection, read from /proc after the connections have been open for a few seconds
 * (as B5 does).
 */
import http from 'node:http';
import { readFileSync } from 'node:fs';
import { spawnChild, stopChild, freePort, waitForPort, sleep, procSum } from './lib/procs.mjs';

const SERVER = `
const http = require('node:http');
const open = new Map();
let next = 0;
http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
  res.flushHeaders();
  const id = next++;
  open.set(id, res);
  res.on('close', () => open.delete(id));
}).listen(Number(process.env.PORT), '127.0.0.1');
`;

/** @param {number} pid */
function rssKb(pid) {
  const match = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS for ${pid}`);
  return Number(match[1]);
}

const at = process.argv.indexOf('--connections');
const connections = at > 0 ? Number(process.argv[at + 1]) : 10_000;
const port = await freePort();
const server = spawnChild(process.execPath, ['-e', SERVER], {
  env: { PORT: String(port), PATH: process.env.PATH ?? '' },
  stdio: 'inherit',
});
try {
  await waitForPort(port, 10_000, () => server.exitCode !== null);
  const pid = /** @type {number} */ (server.pid);
  await sleep(1000);
  const before = rssKb(pid);
  const cpuBefore = procSum([pid]).cpuUs;
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  /** @type {http.IncomingMessage[]} */
  const responses = [];
  for (let opened = 0; opened < connections; opened += 100) {
    const batch = Array.from(
      { length: Math.min(100, connections - opened) },
      () =>
        new Promise((resolve, reject) => {
          http
            .get({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
              if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
              responses.push(res);
              resolve(undefined);
            })
            .on('error', reject);
        }),
    );
    await Promise.all(batch);
  }
  const cpuPerOpen = (procSum([pid]).cpuUs - cpuBefore) / responses.length;
  await sleep(5000);
  const after = rssKb(pid);
  console.log(
    `bare node:http server, ${responses.length} idle SSE responses: RSS ${before} KB -> ${after} KB, ` +
      `${((after - before) / responses.length).toFixed(1)} KB per connection; ${cpuPerOpen.toFixed(0)} µs server CPU per stream opened (node ${process.version})`,
  );
  for (const res of responses) res.destroy();
} finally {
  await stopChild(server, 'SIGKILL');
}
