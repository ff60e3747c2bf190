#!/usr/bin/env node
// @ts-check
/**
 * ssehub benchmark: every scenario against every target, in one run, on this machine.
 *
 *   node bench/run.mjs [--quick] [--only ssehub1,ssehub2,baseline,nchan] [--scenarios B1,B3]
 *                      [--scale 0.1] [--json <path>] [--write-md [<path>]]
 *
 * Targets: ssehub1 / ssehub2 (dist/main.js, one or two replicas on one Redis), baseline
 * (bench/baselines/koa-hub.mjs, the naive hand-written hub), nchan (nginx + Nchan, 1 worker),
 * nchan2 (2 workers; not in the default set). Every target gets its own fresh redis-server per
 * scenario; the shared Redis on 6379 is never used.
 *
 * --quick      tiny sizes (CI): exits non-zero only when something is broken (a server does not
 *              start, no connection opens, nothing is delivered), never on timing or on a target.
 * --scale f    the full sizes times f (development).
 * --json p     where to write the JSON results (default bench/results/latest.json).
 * --ssehub-env NAME=VALUE   extra environment for the ssehub replicas (repeatable), e.g. to
 *              reproduce a problem with other buffer limits.
 * --profile d  write a V8 CPU profile (node --cpu-prof) of every ssehub replica into d, one
 *              file per replica and scenario (open in Chrome DevTools or speedscope).
 * --write-md   also write the table, target checks and machine description as Markdown
 *              (default path: BENCHMARKS.md in the repository root). Not with --quick.
 * --from-json p   run nothing: print the table of a saved results file (and --write-md it).
 *
 * Nchan is skipped with a note when nginx or the module is missing, unless named in --only.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { runScenario } from './load/coordinator.mjs';
import { FULL, QUICK, scaled } from './lib/scenarios.mjs';
import { DEFAULT_TARGETS, REPO, TARGETS } from './lib/targets.mjs';
import { machine, markdownTable, targetChecks, textTable } from './lib/report.mjs';

/** @param {string[]} argv */
function parseArgs(argv) {
  /** @type {{quick: boolean, only?: string[], scenarios?: string[], scale?: number, json: string, writeMd?: string, ssehubEnv: Record<string, string>, profileDir?: string, fromJson?: string}} */
  const opts = { quick: false, json: join(REPO, 'bench', 'results', 'latest.json'), ssehubEnv: {} };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--quick') opts.quick = true;
    else if (a === '--only') opts.only = value().split(',').filter(Boolean);
    else if (a === '--scenarios') opts.scenarios = value().toUpperCase().split(',').filter(Boolean);
    else if (a === '--scale') opts.scale = Number(value());
    else if (a === '--json') opts.json = resolve(value());
    else if (a === '--from-json') opts.fromJson = resolve(value());
    else if (a === '--profile') opts.profileDir = resolve(argv[++i] ?? 'bench/results/profiles');
    else if (a === '--ssehub-env') {
      const kv = value();
      const eq = kv.indexOf('=');
      if (eq < 1) throw new Error(`--ssehub-env needs NAME=VALUE, got ${kv}`);
      opts.ssehubEnv[kv.slice(0, eq)] = kv.slice(eq + 1);
    } else if (a === '--write-md') {
      const next = argv[i + 1];
      opts.writeMd = next && !next.startsWith('--') ? resolve(argv[++i]) : join(REPO, 'BENCHMARKS.md');
    } else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node bench/run.mjs [--quick] [--only ssehub1,ssehub2,baseline,nchan,nchan2] [--scenarios B1,B1L,B2,B2L,B3,B4,B4W,B5,B6,B7,B8,B9] [--scale f] [--json path] [--write-md [path]] [--ssehub-env NAME=VALUE ...] [--profile dir]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.fromJson) {
    // Re-render a saved run (table, target checks, Markdown) without running anything.
    const saved = JSON.parse(readFileSync(opts.fromJson, 'utf8'));
    const checks = targetChecks(saved.results);
    console.log(textTable(saved.results));
    for (const c of checks) console.log(`  ${c}`);
    if (opts.writeMd) {
      writeFileSync(
        opts.writeMd,
        markdown({
          mode: saved.mode,
          info: saved.machine,
          scenarios: saved.scenarios,
          results: saved.results,
          checks,
          date: saved.date,
        }),
      );
      console.log(`markdown: ${opts.writeMd}`);
    }
    return;
  }
  const table = opts.quick ? QUICK : opts.scale ? scaled(opts.scale) : FULL;
  const scenarioIds = opts.scenarios ?? Object.keys(table);
  for (const id of scenarioIds)
    if (!table[id]) throw new Error(`unknown scenario ${id} (have ${Object.keys(table).join(', ')})`);
  const targetNames = opts.only ?? DEFAULT_TARGETS;
  for (const name of targetNames)
    if (!TARGETS[name]) throw new Error(`unknown target ${name} (have ${Object.keys(TARGETS).join(', ')})`);
  const explicit = new Set(opts.only ?? []);
  const mode = opts.quick ? 'quick' : opts.scale ? `scale ${opts.scale}` : 'full';

  const log = (/** @type {string} */ line) => console.log(line);
  const started = Date.now();
  log(`ssehub benchmark (${mode}): targets ${targetNames.join(', ')}; scenarios ${scenarioIds.join(', ')}`);
  if (Object.keys(opts.ssehubEnv).length) log(`  ssehub environment: ${JSON.stringify(opts.ssehubEnv)}`);
  for (const id of scenarioIds) {
    const s = table[id];
    log(`  ${id}: ${s.users} users x ${s.connsPerUser} conn, ${describeLoad(s)}`);
  }

  /** @type {any[]} */
  const results = [];
  let broken = false;
  for (const name of targetNames) {
    const target = TARGETS[name];
    const available = target.available();
    if (!available.ok) {
      if (explicit.has(name) || !target.optional) {
        log(`${name}: not available: ${available.reason}`);
        broken = true;
        for (const id of scenarioIds) results.push({ target: name, scenario: id, ok: false, error: available.reason });
      } else {
        log(`${name}: skipped (${available.reason})`);
        for (const id of scenarioIds) results.push({ target: name, scenario: id, skipped: available.reason });
      }
      continue;
    }
    for (const id of scenarioIds) {
      const t0 = Date.now();
      log(`${name} ${id} ...`);
      const result = await runScenario(target, table[id], {
        log,
        targetOptions: { ssehubEnv: opts.ssehubEnv, profileDir: opts.profileDir },
      });
      result.wallSeconds = (Date.now() - t0) / 1000;
      results.push(result);
      if (result.skipped) {
        log(`  skipped: ${result.skipped}`);
      } else if (!result.ok) {
        broken = true;
        log(`  FAILED: ${result.error ?? 'nothing delivered'}`);
        if (result.serverLogs) log(result.serverLogs);
      } else if (result.storm) {
        log(
          `  ${result.deliveries}/${result.expectedDeliveries} missed events delivered after the storm, lost ${result.lost}, dup ${result.dups}, resets ${result.resets}; reconnected in ${(result.allOpenMs / 1000).toFixed(2)} s, caught up in ${(result.stormMs / 1000).toFixed(2)} s, ${result.stormCpuUsPerConn.toFixed(0)} µs server CPU per stream (${result.wallSeconds.toFixed(1)} s)`,
        );
      } else if (result.idle) {
        log(
          `  ${result.opened} idle connections opened in ${(result.openMs / 1000).toFixed(2)} s, ${result.openCpuUsPerConn.toFixed(0)} µs server CPU each${result.reopenMs === undefined ? '' : `, reopened in ${(result.reopenMs / 1000).toFixed(2)} s, ${result.reopenCpuUsPerConn.toFixed(0)} µs each`}, ${(result.rssPerConnBytes / 1024).toFixed(2)} KB RSS each${result.heartbeats === undefined ? '' : `, ${result.heartbeats} heartbeats in ${result.idleSeconds} s, ${result.cpuUsPerHeartbeat.toFixed(1)} µs server CPU each`} (${result.wallSeconds.toFixed(1)} s)`,
        );
      } else {
        log(
          `  ${result.deliveries}/${result.expectedDeliveries} delivered, ${Math.round(result.deliveriesPerSec)}/s, p99 ${result.latencyMs.p99.toFixed(2)} ms, lost ${result.lost}, dup ${result.dups}, ooo ${result.ooo}, reconnects ${result.reconnects} (${result.wallSeconds.toFixed(1)} s)`,
        );
        const errs = { ...result.clientErrors };
        if (Object.keys(errs).length) log(`  client notes: ${JSON.stringify(errs)}`);
        if (result.publishFailed) log(`  publish failures: ${JSON.stringify(result.publishErrors)}`);
      }
    }
  }

  const checks = targetChecks(results);
  const info = machine();
  log('');
  log(textTable(results));
  if (checks.length) {
    log('');
    log(opts.quick ? 'Targets (informational; quick sizes say nothing about them):' : 'Targets (informational):');
    for (const c of checks) log(`  ${c}`);
  }
  log('');
  log(
    `machine: ${info.cpu}, ${info.memory}, ${info.kernel}, node ${info.node}, redis ${info.redis}, nginx ${info.nginx}, nchan ${info.nchan}`,
  );
  log(`total ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const scenarios = Object.fromEntries(scenarioIds.map((id) => [id, table[id]]));
  mkdirSync(dirname(opts.json), { recursive: true });
  writeFileSync(
    opts.json,
    `${JSON.stringify(
      {
        mode,
        date: new Date().toISOString(),
        argv: process.argv.slice(2),
        ssehubEnv: opts.ssehubEnv,
        machine: info,
        scenarios,
        results,
        checks,
      },
      null,
      2,
    )}\n`,
  );
  log(`results: ${opts.json}`);

  if (opts.writeMd) {
    if (opts.quick) log('--write-md ignored with --quick (quick numbers are not benchmarks)');
    else {
      writeFileSync(opts.writeMd, markdown({ mode, info, scenarios, results, checks, date: new Date().toISOString() }));
      log(`markdown: ${opts.writeMd}`);
    }
  }
  process.exitCode = broken ? 1 : 0;
}

/** What a scenario publishes, in words. @param {import('./load/coordinator.mjs').Scenario} s */
function describeLoad(s) {
  if (s.idle) return 'idle';
  if (s.stormEventsPerUser) return `${s.stormEventsPerUser} events per user while the streams are away`;
  return s.rate ? `${s.rate} events/s for ${s.durationS} s` : `${s.events} events as fast as possible`;
}

/** @param {{mode: string, info: Record<string, string>, scenarios: Record<string, any>, results: any[], checks: string[], date: string}} r */
function markdown({ mode, info, scenarios, results, checks, date }) {
  const lines = [
    '# Benchmarks',
    '',
    `Produced by \`node bench/run.mjs${mode === 'full' ? '' : ` (${mode})`} --write-md\` on ${date.slice(0, 10)}. ` +
      'All processes (servers, their Redis, the subscriber workers and the publisher) share one machine.',
    '',
    '## Machine',
    '',
    ...Object.entries(info).map(([k, v]) => `- ${k}: ${v}`),
    '',
    '## Targets',
    '',
    '- **ssehub1**: `node dist/main.js`, Redis transport, one replica; events published with `FCALL ssehub_publish` (id + history + PUBLISH, atomically).',
    '- **ssehub2**: two `dist/main.js` replicas on the same Redis, half of the connections on each.',
    '- **baseline**: `bench/baselines/koa-hub.mjs`, the naive ~50-line Koa + ioredis hub a developer would write from a blog post (plain PUBLISH, no ids, no history, no back-pressure handling).',
    '- **nchan**: nginx + Debian `libnginx-mod-nchan`, Redis storage, EventSource subscribers, HTTP publishing (`bench/nchan/nginx.conf.template`).',
    '',
    '## Scenarios',
    '',
    ...Object.entries(scenarios).map(
      ([id, s]) => `- **${id}** ${s.title} (this run: ${s.users} users x ${s.connsPerUser}, ${describeLoad(s)})`,
    ),
    '',
    '## Results',
    '',
    markdownTable(results),
    '',
    'Columns: deliv/s counts events received by subscribers per second, from the first publish to the last delivery; ' +
      'latency is publish (send time stamped by the publisher) to receive, on one monotonic clock; lost/dup/ooo are per connection ' +
      'against the per-user sequence numbers the publisher acknowledged; reconn counts streams the server closed and the client reopened ' +
      '(with Last-Event-ID, as EventSource does); RSS/conn is (server RSS after opening and warming the connections - RSS before) / connections; ' +
      'CPU µs/dlv is server utime+stime (all server processes; nginx master + workers) during the measured phase / deliveries; redis µs/dlv the same for the Redis server; ' +
      'CPU µs/hb (idle scenarios with a CPU window) is server CPU over the idle window / heartbeats the subscribers received in it.',
    '',
    '## Targets from the issue',
    '',
    ...checks.map((c) => `- ${c}`),
    '',
    '## Where the CPU went (measured phase)',
    '',
    'Everything shares the machine, so a scenario that keeps it busy is bounded by the machine as much as by the target. Machine busy counts every process on the machine, unrelated ones included.',
    '',
    '| target | scen | machine busy | server CPU s | redis CPU s | load generator CPU s | notes |',
    '|---|---|---:|---:|---:|---:|---|',
    ...results
      .filter((r) => r.ok && !r.idle && !r.skipped)
      .map((r) => {
        const notes = [];
        if (r.redisOutputBufferDisconnects > 0) {
          notes.push(
            `Redis dropped ${r.redisOutputBufferDisconnects} subscriber connection(s) over client-output-buffer-limit; events published meanwhile were lost`,
          );
        }
        if (r.reconnects > 0) notes.push(`${r.reconnects} streams closed by the server and resumed`);
        if (r.publishFailed > 0) notes.push(`${r.publishFailed} publishes failed`);
        const f = (/** @type {number | undefined} */ n, /** @type {number} */ d) =>
          typeof n === 'number' && Number.isFinite(n) ? n.toFixed(d) : '-';
        return `| ${r.target} | ${r.scenario} | ${f(r.machineBusyPct, 0)} % | ${f(r.serverCpuSeconds, 2)} | ${f(r.redisCpuSeconds, 2)} | ${f(r.loadGeneratorCpuSeconds, 2)} | ${notes.join('; ')} |`;
      }),
    '',
  ];
  // The hand-written reading of the figures (profiles, what moved them, unmet targets) travels with every regenerated file.
  const analysis = join(REPO, 'bench', 'analysis.md');
  if (existsSync(analysis)) lines.push(readFileSync(analysis, 'utf8').trimEnd(), '');
  return lines.join('\n');
}

main().catch((err) => {
  console.error(err instanceof Error ? err.stack : String(err));
  process.exit(1);
});
