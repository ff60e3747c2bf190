import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { isAtOrAfter, rssMb, startStore, WebhookPublisher } from './harness';
import {
  HEAP_SLOPE_LIMIT_MB,
  RSS_SLOPE_LIMIT_MB,
  SOAK_RESULT_PATH,
  type SoakReplicaFigures,
  type SoakResult,
  withSoakSection,
} from './soak-report';
import { type HubProcess, startReadyHub } from '../test/helpers/hub-process';
import { ResumingClient } from '../test/helpers/resuming-client';
import { sleep } from '../test/helpers/sse-client';
import { mintToken } from '../test/helpers/tokens';

/**
 * The soak: two replicas on a Redis of their own under steady load for `SOAK_MINUTES` (set by
 * `npm run soak -- --minutes N` through faults/run-soak.js), sampled every 10 s. It proves that
 * memory stays flat while streams come and go and that no stream loses or repeats an event.
 */
const MINUTES = Number(process.env.SOAK_MINUTES ?? '30');
const STREAMS = 200;
/** Initial users holding two streams (two tabs); the rest hold one. */
const TWO_STREAM_USERS = 30;
const EVENTS_PER_SECOND = 200;
const SAMPLE_MS = 10_000;
const CHURN = { close: 20, returning: 12, secondTabs: 2 };
/**
 * Users whose last stream closed keep receiving events (into their history) until they come
 * back; past this many the longest gone stop being published to, so the published-to set stays
 * the size of the connected one and each stream's event rate stays steady.
 */
const AWAY_MAX = 40;
const PATH = '/api/v1/stream/agui';

interface SoakStream {
  user: string;
  client: ResumingClient;
  /** When the hub answered the stream's first request: events published after it must arrive. */
  openedAt: number;
  /** The Last-Event-ID it opened with: events after it must arrive too (replayed from history). */
  resumeFrom: string | undefined;
}

interface ReplicaSample {
  rssMb: number;
  heapMb: number;
  streams: number;
  users: number;
  userChannels: number;
  delivered: number;
}

interface Sample {
  atS: number;
  acknowledged: number;
  replicas: ReplicaSample[];
}

/** A fixed seed: two runs churn the same streams, so their figures compare. */
function seededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A series summed over its labels (`sse_active_connections` has one per stream kind). */
function metricSum(text: string, name: string): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name} `) && !line.startsWith(`${name}{`)) continue;
    sum += Number(line.slice(line.lastIndexOf(' ') + 1));
    found = true;
  }
  if (!found) throw new Error(`metric ${name} not found`);
  return sum;
}

async function sampleReplica(hub: HubProcess): Promise<ReplicaSample> {
  const text = await (await fetch(`${hub.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
  return {
    rssMb: rssMb(hub.child.pid),
    heapMb: metricSum(text, 'nodejs_heap_size_used_bytes') / 1024 / 1024,
    streams: metricSum(text, 'sse_active_connections'),
    users: metricSum(text, 'ssehub_connected_users'),
    userChannels: metricSum(text, 'ssehub_redis_user_channels'),
    delivered: metricSum(text, 'ssehub_frames_delivered_total'),
  };
}

/** Least-squares slope of `values` over `minutes`, in MB per 10 minutes. */
function slopePer10Min(minutes: number[], values: number[]): number {
  const n = minutes.length;
  if (n < 2) return 0;
  const mx = minutes.reduce((a, b) => a + b, 0) / n;
  const my = values.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  minutes.forEach((x, i) => {
    num += (x - mx) * ((values[i] as number) - my);
    den += (x - mx) ** 2;
  });
  return den === 0 ? 0 : (num / den) * 10;
}

const out = (line: string): void => {
  // Straight to stdout: jest's console would wrap every line in a stack trace.
  process.stdout.write(`${line}\n`);
};

const pair = (values: number[], digits = 0): string => values.map((v) => v.toFixed(digits)).join(' / ');

function sampleRow(sample: Sample): string {
  const r = sample.replicas;
  return `| ${(sample.atS / 60).toFixed(1)} | ${sample.acknowledged} | ${pair(r.map((x) => x.streams))} | ${pair(r.map((x) => x.users))} | ${pair(r.map((x) => x.userChannels))} | ${pair(r.map((x) => x.delivered))} | ${pair(
    r.map((x) => x.rssMb),
    1,
  )} | ${pair(
    r.map((x) => x.heapMb),
    1,
  )} |`;
}

const SAMPLE_HEADER =
  '| min | acknowledged | streams r1 / r2 | users r1 / r2 | user channels r1 / r2 | delivered r1 / r2 | RSS MB r1 / r2 | heap MB r1 / r2 |\n|---:|---:|---:|---:|---:|---:|---:|---:|';

describe('soak', () => {
  it(
    `${MINUTES} minutes of steady load keep memory flat and lose nothing`,
    async () => {
      if (!(MINUTES > 0)) throw new Error(`SOAK_MINUTES must be a positive number, not ${process.env.SOAK_MINUTES}`);
      const store = await startStore('single', 'none');
      const env = { ...store.env, SSEHUB_DRAIN_MS: '1000' };
      const hubs: HubProcess[] = [];
      const active: SoakStream[] = [];
      try {
        for (let i = 0; i < 2; i++) hubs.push(await startReadyHub(env));
        const urls = hubs.map((hub) => hub.url);
        const webhooks = await WebhookPublisher.create();
        const random = seededRandom(20_261_203);
        const tokens = new Map<string, string>();
        let nextUser = 0;
        let nextStream = 0;
        let duplicatedInClosed = 0;
        let reconnectsInClosed = 0;
        let opened = 0;
        let closed = 0;
        const away: Array<{ user: string; lastId: string | undefined }> = [];

        const open = async (user: string, resumeFrom?: string): Promise<SoakStream> => {
          const token = tokens.get(user) ?? (await mintToken(user));
          tokens.set(user, token);
          // Half the streams prefer each replica, as a balancer spreads them.
          const order = nextStream++ % 2 === 0 ? urls : [...urls].reverse();
          const client = new ResumingClient({
            path: resumeFrom === undefined ? PATH : `${PATH}?last_event_id=${encodeURIComponent(resumeFrom)}`,
            token,
            replicas: () => order,
            name: user,
          });
          await client.opened(15_000);
          opened++;
          return { user, client, openedAt: client.connections[0]?.at ?? Date.now(), resumeFrom };
        };

        const expectedFor = (stream: SoakStream): string[] => {
          const from = stream.resumeFrom;
          return webhooks
            .acknowledgedFor(stream.user)
            .filter(
              (event) =>
                event.sentAt >= stream.openedAt ||
                (from !== undefined && event.id !== from && isAtOrAfter(event.id, from)),
            )
            .map((event) => event.id);
        };

        // Initial streams: users 0..29 with two each, the rest with one.
        const initial: string[] = [];
        while (initial.length < STREAMS) {
          const user = `soak-user-${nextUser++}`;
          initial.push(user);
          if (nextUser <= TWO_STREAM_USERS && initial.length < STREAMS) initial.push(user);
        }
        active.push(...(await Promise.all(initial.map((user) => open(user)))));

        let targets: string[] = [];
        const retarget = (): void => {
          targets = [...new Set([...active.map((s) => s.user), ...away.map((a) => a.user)])];
        };
        retarget();

        const churn = async (): Promise<void> => {
          for (let i = 0; i < CHURN.close && active.length > 0; i++) {
            const [gone] = active.splice(Math.floor(random() * active.length), 1);
            if (gone === undefined) continue;
            gone.client.close();
            closed++;
            const ids = gone.client.events().map((event) => event.id);
            duplicatedInClosed += ids.length - new Set(ids).size;
            reconnectsInClosed += gone.client.reconnects;
            if (!active.some((s) => s.user === gone.user)) away.push({ user: gone.user, lastId: ids[ids.length - 1] });
          }
          const returning = away.splice(0, Math.min(CHURN.returning, away.length));
          // Beyond AWAY_MAX the longest gone never come back: nothing is published to them any more.
          if (away.length > AWAY_MAX) away.splice(0, away.length - AWAY_MAX);
          const single = [...new Set(active.map((s) => s.user))].filter(
            (user) => active.filter((s) => s.user === user).length === 1,
          );
          const secondTabs = Array.from(
            { length: Math.min(CHURN.secondTabs, single.length) },
            () => single.splice(Math.floor(random() * single.length), 1)[0] as string,
          );
          const fresh = Array.from(
            { length: CHURN.close - returning.length - secondTabs.length },
            () => `soak-user-${nextUser++}`,
          );
          const opening = [
            ...returning.map((a) => open(a.user, a.lastId)),
            ...secondTabs.map((user) => open(user)),
            ...fresh.map((user) => open(user)),
          ];
          active.push(...(await Promise.all(opening)));
          retarget();
        };

        // The publisher: a schedule, not a sleep per event, so timer slack does not lower the rate.
        let publishing = true;
        const inFlight = new Set<Promise<void>>();
        let sequence = 0;
        const publisher = (async () => {
          const started = Date.now();
          while (publishing) {
            const due = Math.floor(((Date.now() - started) / 1000) * EVENTS_PER_SECOND);
            while (sequence < due) {
              const seq = ++sequence;
              const user = targets[Math.floor(random() * targets.length)] as string;
              // Alternate the replica tried first, as a balancer in front of the webhooks would.
              const order = seq % 2 === 0 ? urls : [...urls].reverse();
              const call = webhooks.publish(order, user, { type: 'SOAK', seq });
              inFlight.add(call);
              void call.finally(() => inFlight.delete(call));
            }
            await sleep(10);
          }
        })();

        const samples: Sample[] = [];
        const acknowledgedTotal = (): number =>
          [...tokens.keys()].reduce((sum, user) => sum + webhooks.acknowledgedFor(user).length, 0);
        const sample = async (atS: number): Promise<Sample> => ({
          atS,
          acknowledged: acknowledgedTotal(),
          replicas: await Promise.all(hubs.map(sampleReplica)),
        });

        out(
          `\nSoak: ${MINUTES} min, 2 replicas, ${STREAMS} streams, ${EVENTS_PER_SECOND} events/s, every ${SAMPLE_MS / 1000} s ${CHURN.close} streams close and ${CHURN.close} open\n`,
        );
        out(SAMPLE_HEADER);
        const start = Date.now();
        const ticks = Math.max(1, Math.round((MINUTES * 60_000) / SAMPLE_MS));
        samples.push(await sample(0));
        out(sampleRow(samples[0] as Sample));
        for (let tick = 1; tick <= ticks; tick++) {
          await sleep(Math.max(0, start + tick * SAMPLE_MS - Date.now()));
          // Sampled before the churn, so each sample sees the steady STREAMS streams.
          const taken = await sample((tick * SAMPLE_MS) / 1000);
          samples.push(taken);
          if (taken.atS % 60 === 0 || tick === ticks) out(sampleRow(taken));
          if (tick < ticks) await churn();
        }

        publishing = false;
        await publisher;
        await Promise.all(inFlight);
        // Every acknowledged event reaches the open streams within a moment; a loss is one still missing after this.
        const deadline = Date.now() + 15_000;
        const missing = (stream: SoakStream): number => {
          const got = new Set(stream.client.events().map((event) => event.id));
          return expectedFor(stream).filter((id) => !got.has(id)).length;
        };
        while (Date.now() < deadline && active.some((stream) => missing(stream) > 0)) await sleep(200);

        let lost = 0;
        let duplicated = duplicatedInClosed;
        let reconnects = reconnectsInClosed;
        const lostExamples: string[] = [];
        for (const stream of active) {
          const ids = stream.client.events().map((event) => event.id);
          duplicated += ids.length - new Set(ids).size;
          reconnects += stream.client.reconnects;
          const count = missing(stream);
          lost += count;
          if (count > 0 && lostExamples.length < 3) lostExamples.push(`${stream.user} (${stream.client.describe()})`);
        }

        // Memory is judged after warm-up: the second half of the run.
        const half = samples.filter((s) => s.atS >= (ticks * SAMPLE_MS) / 1000 / 2);
        const minutesOf = half.map((s) => s.atS / 60);
        const figures: SoakReplicaFigures[] = hubs.map((_, i) => {
          const rss = half.map((s) => s.replicas[i]?.rssMb ?? 0);
          const heap = half.map((s) => s.replicas[i]?.heapMb ?? 0);
          return {
            replica: `replica ${i + 1}`,
            rssSlope: slopePer10Min(minutesOf, rss),
            heapSlope: slopePer10Min(minutesOf, heap),
            rssStartMb: rss[0] ?? 0,
            rssEndMb: rss[rss.length - 1] ?? 0,
            heapStartMb: heap[0] ?? 0,
            heapEndMb: heap[heap.length - 1] ?? 0,
          };
        });
        const problems: string[] = [];
        if (lost > 0) problems.push(`${lost} lost: ${lostExamples.join('; ')}`);
        if (duplicated > 0) problems.push(`${duplicated} duplicated`);
        for (const f of figures) {
          if (f.rssSlope >= RSS_SLOPE_LIMIT_MB)
            problems.push(`${f.replica} RSS ${f.rssSlope.toFixed(1)} MB / 10 min (limit ${RSS_SLOPE_LIMIT_MB})`);
          if (f.heapSlope >= HEAP_SLOPE_LIMIT_MB)
            problems.push(`${f.replica} heap ${f.heapSlope.toFixed(1)} MB / 10 min (limit ${HEAP_SLOPE_LIMIT_MB})`);
        }
        const result: SoakResult = {
          date: new Date().toISOString().slice(0, 10),
          minutes: MINUTES,
          streams: STREAMS,
          eventsPerSecond: EVENTS_PER_SECOND,
          acknowledged: acknowledgedTotal(),
          unknown: webhooks.unknown,
          checkedStreams: active.length,
          lost,
          duplicated,
          reconnects,
          opened,
          closed,
          replicas: figures,
          pass: problems.length === 0,
          why: problems.join('; '),
        };

        out(
          `\n${result.acknowledged} acknowledged (${result.unknown} unknown, ${sequence} sent), ${opened} streams opened, ${closed} closed, ${reconnects} reconnects`,
        );
        out(
          `${active.length} streams open at the end: ${lost} lost, ${duplicated} duplicated (closed streams included)`,
        );
        out(`Second half (${half.length} samples from minute ${(minutesOf[0] ?? 0).toFixed(1)}):`);
        for (const f of figures) {
          out(
            `  ${f.replica}: RSS ${f.rssStartMb.toFixed(1)} → ${f.rssEndMb.toFixed(1)} MB, slope ${f.rssSlope.toFixed(1)} MB / 10 min; heap ${f.heapStartMb.toFixed(1)} → ${f.heapEndMb.toFixed(1)} MB, slope ${f.heapSlope.toFixed(1)} MB / 10 min`,
          );
        }
        if (half.length < 30) {
          out(`  (${half.length} samples: a run of 10 minutes or more gives a slope that GC sawtooth does not swamp)`);
        }
        out(`\n${result.pass ? 'PASS' : `FAIL: ${result.why}`}\n`);

        if (process.env.SOAK_WRITE === '1') {
          writeFileSync(SOAK_RESULT_PATH, `${JSON.stringify(result, null, 2)}\n`);
          const faults = join(__dirname, '..', 'FAULTS.md');
          writeFileSync(faults, withSoakSection(readFileSync(faults, 'utf8'), result));
        }
        expect(result.why).toBe('');
      } finally {
        for (const stream of active) stream.client.close();
        await Promise.all(hubs.map((hub) => hub.stop()));
        await store.destroy();
      }
    },
    (MINUTES * 60 + 300) * 1000,
  );
});
