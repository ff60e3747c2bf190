// @ts-check
/**
 * The results table (terminal and Markdown), the issue's targets evaluated against the results
 * (informational: never an exit status), and the machine description.
 */
import os from 'node:os';
import { execFileSync } from 'node:child_process';

/** @param {number} n @param {number} [digits] */
function num(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return '-';
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

/** @param {number} n */
function ms(n) {
  if (n === undefined || Number.isNaN(n)) return '-';
  return n >= 100 ? num(n, 0) : n >= 10 ? num(n, 1) : num(n, 2);
}

const COLUMNS = [
  'target',
  'scen',
  'conns',
  'published',
  'pub/s',
  'deliveries',
  'deliv/s',
  'p50 ms',
  'p90 ms',
  'p99 ms',
  'max ms',
  'lost',
  'dup',
  'ooo',
  'reconn',
  'RSS/conn KB',
  'open s',
  'CPU µs/open',
  'CPU µs/dlv',
  'redis µs/dlv',
  'CPU µs/hb',
];

/** @param {any} r */
function row(r) {
  if (r.skipped) return [r.target, r.scenario, `skipped: ${r.skipped}`];
  if (!r.ok && r.error) return [r.target, r.scenario, `FAILED: ${r.error.split('\n')[0]}`];
  const l = r.latencyMs ?? {};
  return [
    r.target,
    r.scenario,
    r.opened === r.conns ? num(r.conns) : `${num(r.opened)}/${num(r.conns)}`,
    r.idle ? '-' : num(r.published),
    r.idle ? '-' : num(r.publishPerSec),
    r.idle ? '-' : num(r.deliveries),
    r.idle ? '-' : num(r.deliveriesPerSec),
    r.idle ? '-' : ms(l.p50),
    r.idle ? '-' : ms(l.p90),
    r.idle ? '-' : ms(l.p99),
    r.idle ? '-' : ms(l.max),
    r.idle ? '-' : num(r.lost),
    r.idle ? '-' : num(r.dups),
    r.idle ? '-' : num(r.ooo),
    r.idle ? '-' : num(r.reconnects),
    num(r.rssPerConnBytes / 1024, 1),
    num(r.openMs / 1000, 2),
    num(r.openCpuUsPerConn, 0),
    r.idle ? '-' : num(r.cpuUsPerDelivery, 1),
    r.idle ? '-' : num(r.redisCpuUsPerDelivery, 1),
    r.heartbeats === undefined ? '-' : num(r.cpuUsPerHeartbeat, 1),
  ];
}

/** @param {any[]} results */
export function textTable(results) {
  const rows = results.map(row);
  const widths = COLUMNS.map((c, i) =>
    Math.max(c.length, ...rows.filter((r) => r.length > 3).map((r) => String(r[i] ?? '').length)),
  );
  const fmt = (/** @type {string[]} */ cells) =>
    cells.length <= 3
      ? `${cells[0].padEnd(widths[0])}  ${cells[1].padEnd(widths[1])}  ${cells[2]}`
      : cells.map((c, i) => (i < 2 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
  const lines = [fmt(COLUMNS), widths.map((w) => '-'.repeat(w)).join('  ')];
  for (const r of rows) lines.push(fmt(r));
  return lines.join('\n');
}

/** @param {any[]} results */
export function markdownTable(results) {
  const lines = [`| ${COLUMNS.join(' | ')} |`, `|${COLUMNS.map((_, i) => (i < 2 ? '---' : '---:')).join('|')}|`];
  for (const r of results) {
    const cells = row(r);
    if (cells.length <= 3) lines.push(`| ${cells[0]} | ${cells[1]} | ${cells[2]} |${' |'.repeat(COLUMNS.length - 3)}`);
    else lines.push(`| ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/**
 * The issue's targets, checked against whatever results exist.
 * @param {any[]} results
 * @returns {string[]}
 */
export function targetChecks(results) {
  /** @param {string} t @param {string} s */
  const get = (t, s) => results.find((r) => r.target === t && r.scenario === s && r.ok && !r.skipped);
  /** @type {string[]} */
  const out = [];
  const mark = (/** @type {boolean} */ pass) => (pass ? 'met' : 'NOT met');
  for (const s of ['B1', 'B3']) {
    const base = get('baseline', s);
    for (const t of ['ssehub1', 'ssehub2']) {
      const hub = get(t, s);
      if (hub && base) {
        const ratio = hub.deliveriesPerSec / base.deliveriesPerSec;
        out.push(`${s} ${t} deliveries/s = ${num(ratio, 2)}x baseline (target >= 1.5x): ${mark(ratio >= 1.5)}`);
      }
    }
  }
  for (const t of ['ssehub1', 'ssehub2']) {
    const b2 = get(t, 'B2');
    if (b2)
      out.push(
        `B2 ${t} lost ${num(b2.lost)}, duplicated ${num(b2.dups)}, out of order ${num(b2.ooo)} (target: zero loss): ${mark(b2.lost === 0)}`,
      );
  }
  const nchanB4 = get('nchan', 'B4');
  for (const t of ['ssehub1', 'ssehub2']) {
    const b4 = get(t, 'B4');
    if (b4 && nchanB4) {
      out.push(
        `B4 ${t} p99 ${ms(b4.latencyMs.p99)} ms vs Nchan ${ms(nchanB4.latencyMs.p99)} ms (target <= Nchan): ${mark(b4.latencyMs.p99 <= nchanB4.latencyMs.p99)}`,
      );
    }
  }
  for (const t of ['ssehub1', 'ssehub2']) {
    const b5 = get(t, 'B5');
    if (b5)
      out.push(
        `B5 ${t} ${num(b5.rssPerConnBytes / 1024, 2)} KB RSS per idle connection (target <= 8 KB): ${mark(b5.rssPerConnBytes <= 8192)}`,
      );
  }
  for (const t of ['ssehub1', 'ssehub2']) {
    const b7 = get(t, 'B7');
    const b1 = get(t, 'B1');
    if (b7)
      out.push(
        `B7 ${t} batch webhook ${num(b7.publishPerSec)} events/s published${b1 ? ` vs FCALL pipelines (B1) ${num(b1.publishPerSec)} events/s` : ''}`,
      );
  }
  for (const t of ['ssehub1', 'ssehub2']) {
    const b6 = get(t, 'B6');
    if (b6?.heartbeats > 0)
      out.push(
        `B6 ${t} ${num(b6.cpuUsPerHeartbeat, 1)} µs server CPU per heartbeat over ${num(b6.heartbeats)} heartbeats (target <= 10 µs): ${mark(b6.cpuUsPerHeartbeat <= 10)}`,
      );
  }
  const baseB1L = get('baseline', 'B1L');
  for (const t of ['ssehub1', 'ssehub2']) {
    const b1l = get(t, 'B1L');
    if (!b1l) continue;
    const ratio = baseB1L ? b1l.deliveriesPerSec / baseB1L.deliveriesPerSec : NaN;
    out.push(
      `B1L ${t} ${num(b1l.cpuUsPerDelivery, 1)} µs hub CPU per event (target <= 10 µs; baseline ${num(baseB1L?.cpuUsPerDelivery, 1)} µs): ${mark(b1l.cpuUsPerDelivery <= 10)}; deliveries/s ${num(ratio, 2)}x baseline (target >= 1.5x): ${mark(ratio >= 1.5)}`,
    );
  }
  const baseB2L = get('baseline', 'B2L');
  for (const t of ['ssehub1', 'ssehub2']) {
    const b2l = get(t, 'B2L');
    if (!b2l) continue;
    const pct = (/** @type {any} */ r) => `${num((100 * r.lost) / Math.max(1, r.expectedDeliveries), 1)} %`;
    out.push(
      `B2L ${t} burst of ${num(b2l.published)} plain PUBLISHes at ${num(b2l.publishPerSec)}/s: ${num(b2l.lost)} lost (${pct(b2l)}), Redis cut the subscriber ${num(b2l.redisOutputBufferDisconnects)} time(s)` +
        (baseB2L
          ? `; baseline at ${num(baseB2L.publishPerSec)}/s: ${num(baseB2L.lost)} lost (${pct(baseB2L)}), cut ${num(baseB2L.redisOutputBufferDisconnects)} time(s)`
          : ''),
    );
  }
  for (const t of ['ssehub1', 'ssehub2']) {
    const b4w = get(t, 'B4W');
    if (!b4w) continue;
    const cpuPerEvent = (b4w.serverCpuSeconds * 1e6) / Math.max(1, b4w.published);
    out.push(
      `B4W ${t} webhook at ${num(b4w.publishPerSec)} events/s: ${num(cpuPerEvent, 0)} µs hub CPU per event (target <= 150 µs): ${mark(cpuPerEvent <= 150)}; p99 ${ms(b4w.latencyMs.p99)} ms (target <= 3 ms): ${mark(b4w.latencyMs.p99 <= 3)}`,
    );
  }
  const baseB8 = get('baseline', 'B8');
  const nchanB8 = get('nchan', 'B8');
  for (const t of ['ssehub1', 'ssehub2']) {
    const b8 = get(t, 'B8');
    if (!b8) continue;
    const ratio = baseB8 ? b8.openMs / baseB8.openMs : NaN;
    out.push(
      `B8 ${t} ${num(b8.opened)} streams: first-seen tokens ${num(b8.openCpuUsPerConn, 0)} µs hub CPU each (target <= 250 µs): ${mark(b8.openCpuUsPerConn <= 250)}; ` +
        `tokens seen before ${num(b8.reopenCpuUsPerConn, 0)} µs (target <= 150 µs): ${mark(b8.reopenCpuUsPerConn <= 150)}; ` +
        `all open in ${num(b8.openMs / 1000, 2)} s (seen: ${num(b8.reopenMs / 1000, 2)} s) = ${num(ratio, 2)}x baseline ${num((baseB8?.openMs ?? NaN) / 1000, 2)} s (target <= 1.2x): ${mark(ratio <= 1.2)}` +
        (baseB8 ? `; baseline ${num(baseB8.openCpuUsPerConn, 0)} µs per stream` : '') +
        (nchanB8 ? `; Nchan ${num(nchanB8.openCpuUsPerConn, 0)} µs, ${num(nchanB8.openMs / 1000, 2)} s` : ''),
    );
  }
  for (const t of ['ssehub1', 'ssehub2', 'baseline', 'nchan']) {
    const b9 = get(t, 'B9');
    if (!b9) continue;
    out.push(
      `B9 ${t} reconnect storm: ${num(b9.deliveries)}/${num(b9.expectedDeliveries)} missed events delivered, ${num(b9.lost)} lost, ${num(b9.dups)} duplicated, ${num(b9.resets)} resets; ` +
        `all reconnected in ${num(b9.allOpenMs / 1000, 2)} s, ${b9.lost === 0 ? `caught up in ${num(b9.stormMs / 1000, 2)} s` : 'never caught up'}; ${num(b9.stormCpuUsPerConn, 0)} µs server CPU per stream` +
        (t.startsWith('ssehub')
          ? ` (target: 0 lost): ${mark(b9.lost === 0)}`
          : t === 'baseline'
            ? ' (no history: loss expected)'
            : ''),
    );
  }
  for (const s of ['B1', 'B2', 'B3', 'B4']) {
    const one = get('ssehub1', s);
    const two = get('ssehub2', s);
    if (one && two)
      out.push(
        `${s} scaling 1 -> 2 replicas: ${num(two.deliveriesPerSec / one.deliveriesPerSec, 2)}x deliveries/s (${num(one.deliveriesPerSec)} -> ${num(two.deliveriesPerSec)})`,
      );
  }
  return out;
}

/** @param {string} cmd @param {string[]} args */
function tryRun(cmd, args) {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  } catch (err) {
    const e = /** @type {any} */ (err);
    return String(e.stderr ?? '').trim() || 'n/a';
  }
}

export function machine() {
  const cpus = os.cpus();
  return {
    cpu: `${cpus[0]?.model ?? 'unknown'} x ${cpus.length}`,
    memory: `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    redis: tryRun('redis-server', ['--version']).replace(/^Redis server /, ''),
    nginx: tryRun('sh', ['-c', 'nginx -v 2>&1']).replace(/^nginx version: /, ''),
    nchan: tryRun('dpkg-query', ['-W', '-f=${Version}', 'libnginx-mod-nchan']),
    openFilesLimit: tryRun('sh', ['-c', 'ulimit -Hn']),
    clkTck: tryRun('getconf', ['CLK_TCK']),
  };
}
