#!/usr/bin/env node
// @ts-check
/**
 * What one small socket write costs the writing process on this machine, by how busy the reader
 * is: the floor under every heartbeat, every delivered event and every webhook answer.
 *
 *   node bench/write-floor.mjs [--writes 5000]
 *
 * The reader is another process holding 1,000 loopback TCP connections (as the benchmark's
 * subscribers do). The writer sends a heartbeat frame (13 bytes) per write: back to back over all
 * connections, then paced at 500 and at 5,000 writes/s, when the reader sleeps between writes.
 * A loopback write runs the receiving side (and wakes a sleeping reader) inside the sender's
 * system call, so its CPU is booked to the writer, as a hub's is in the benchmarks; at a low rate
 * the writer also sleeps between writes, and waking costs it too, as it costs a hub.
 */
import { fork } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';

const CONNECTIONS = 1000;
const FRAME = Buffer.from(': heartbeat\n\n');

if (process.argv[2] === 'reader') {
  const port = Number(process.argv[3]);
  for (let i = 0; i < CONNECTIONS; i++) net.connect(port, '127.0.0.1').on('data', () => {});
} else {
  const writes = Number(process.argv[process.argv.indexOf('--writes') + 1]) || 5000;
  /** @type {net.Socket[]} */
  const sockets = [];
  /** @type {() => void} */
  let allConnected = () => {};
  const connected = new Promise((resolve) => {
    allConnected = () => resolve(undefined);
  });
  const server = net.createServer((socket) => {
    socket.setNoDelay(true);
    sockets.push(socket);
    if (sockets.length === CONNECTIONS) allConnected();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  const address = /** @type {net.AddressInfo} */ (server.address());
  const reader = fork(fileURLToPath(import.meta.url), ['reader', String(address.port)]);
  await connected;
  await new Promise((r) => setTimeout(r, 500));

  /** CPU µs of this process per write, `perSecond` writes a second (0: back to back). @param {number} perSecond */
  const measure = async (perSecond) => {
    const start = process.cpuUsage();
    const began = performance.now();
    for (let i = 0; i < writes; i++) {
      /** @type {net.Socket} */ (sockets[i % CONNECTIONS]).write(FRAME);
      if (perSecond > 0) {
        const due = began + ((i + 1) * 1000) / perSecond;
        const wait = due - performance.now();
        if (wait >= 1) await new Promise((r) => setTimeout(r, wait));
      }
    }
    await new Promise((r) => setTimeout(r, 50));
    const used = process.cpuUsage(start);
    return (used.user + used.system) / writes;
  };
  console.log(
    `${writes} writes of ${FRAME.length} bytes over ${CONNECTIONS} loopback connections (node ${process.version}):`,
  );
  for (const [label, rate] of [
    ['back to back', 0],
    ['5,000 writes/s', 5000],
    ['500 writes/s (reader asleep between writes)', 500],
  ]) {
    const perWrite = await measure(Number(rate));
    console.log(`  ${String(label).padEnd(46)} ${perWrite.toFixed(1).padStart(7)} µs CPU of the writer per write`);
  }
  reader.kill();
  server.close();
  for (const socket of sockets) socket.destroy();
}
