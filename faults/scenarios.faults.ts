import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Criteria, FaultBench, type FaultRow, TABLE_HEADER, type Topology, formatRow } from './harness';
import { LOAD_SCENARIOS } from './load-scenarios';
import { readSoakResult, soakMarkdown } from './soak-report';
import { userKeys } from '../src/transport/redis/library';
import { keySlot } from '../src/transport/redis/slot';
import { connectPg } from '../test/helpers/postgres-server';
import { sleep } from '../test/helpers/sse-client';

/**
 * The published fault suite: each scenario injects one fault into two replicas (three on a
 * cluster) on a Redis of their own (reached through a TCP proxy for the network faults), or on
 * the Postgres outbox on a Postgres of their own, under 50 events/s to 20 users each holding one
 * stream that follows the replicas like a browser, and prints one row. `FAULTS=quick` runs the subset CI runs, with shorter faults;
 * `FAULTS_WRITE=1` writes the table to FAULTS.md. The scenarios that add load of their own rather than
 * break a dependency (bursts, storms, stalled readers, heavy users) are in load-scenarios.ts.
 */
const quick = process.env.FAULTS === 'quick';
const rows: FaultRow[] = [];
const STRICT: Criteria = { resetAllowed: false, recoverWithinMs: 15_000, maxRssMb: 400 };
const DATA_LOSS: Criteria = { ...STRICT, resetAllowed: true };

interface Scenario {
  name: string;
  inQuick: boolean;
  persistence?: 'none' | 'aof';
  topology?: Topology;
  /** The replicas reach Redis through the suite's TCP proxy (bench.proxy). */
  proxied?: boolean;
  /** Hub replicas under load (default 2). */
  replicas?: number;
  criteria: Criteria;
  fault: (bench: FaultBench) => Promise<void>;
}

const FREEZE_MS = quick ? 4000 : 10_000;
/** How long a network fault between the replicas and Redis, or a stalled outbox, lasts. */
const NETWORK_FAULT_MS = quick ? 4000 : 10_000;

const SCENARIOS: Scenario[] = [
  {
    name: `Redis SIGSTOP ${FREEZE_MS / 1000} s`,
    inQuick: true,
    criteria: { ...STRICT, detectWithinMs: 3000 },
    fault: async (bench) => {
      bench.redis.signal('SIGSTOP');
      await sleep(FREEZE_MS);
      bench.redis.signal('SIGCONT');
    },
  },
  {
    name: 'subscriber CLIENT KILL',
    inQuick: true,
    criteria: STRICT,
    fault: async (bench) => {
      await bench.redisCommand('CLIENT', 'KILL', 'TYPE', 'pubsub');
    },
  },
  {
    name: 'CLIENT PAUSE 3 s',
    inQuick: false,
    criteria: STRICT,
    fault: async (bench) => {
      await bench.redisCommand('CLIENT', 'PAUSE', '3000');
      await sleep(3000);
    },
  },
  {
    name: 'FLUSHALL',
    inQuick: false,
    criteria: DATA_LOSS,
    fault: async (bench) => {
      await bench.redisCommand('FLUSHALL');
    },
  },
  {
    name: 'FUNCTION DELETE',
    inQuick: false,
    criteria: STRICT,
    fault: async (bench) => {
      await bench.redisCommand('FUNCTION', 'DELETE', 'ssehub');
    },
  },
  {
    name: 'Redis restart, no persistence',
    inQuick: false,
    criteria: DATA_LOSS,
    fault: async (bench) => {
      await bench.redis.stop();
      await bench.redis.restart();
    },
  },
  {
    // AOF keeps the data, but the restarted Redis is another run than the one that wrote each
    // user's history, and cannot prove it holds every acknowledged write: every history gets a
    // new epoch, and every resuming stream a reset (history_lost). What a reset does not cover
    // must still arrive.
    name: 'Redis restart, AOF',
    inQuick: false,
    persistence: 'aof',
    criteria: DATA_LOSS,
    fault: async (bench) => {
      await bench.redis.stop();
      await bench.redis.restart();
    },
  },
  {
    // Every round trip to Redis slows down, the self-check's probe included (its timeout is a
    // second): the replicas must stay ready and lose nothing, only deliver later.
    name: `Redis link +200 ms each way, ${NETWORK_FAULT_MS / 1000} s`,
    inQuick: false,
    proxied: true,
    criteria: { ...STRICT, staysReady: true, recoverWithinMs: 5000 },
    fault: async (bench) => {
      bench.proxy.setLatency(200);
      await sleep(NETWORK_FAULT_MS);
      bench.proxy.setLatency(0);
    },
  },
  {
    // A partition that heals: sockets stay open and nothing answers, which only the self-check's
    // probe can tell from a quiet Redis. What was held on the wire arrives once it heals.
    name: `Redis link blackholed ${NETWORK_FAULT_MS / 1000} s`,
    inQuick: true,
    proxied: true,
    criteria: { ...STRICT, detectWithinMs: 3000, recoverWithinMs: 5000 },
    fault: async (bench) => {
      bench.proxy.setBlackhole(true);
      await sleep(NETWORK_FAULT_MS);
      bench.proxy.setBlackhole(false);
    },
  },
  {
    // The replicas' sockets to Redis go dead without a word while Redis itself is fine and new
    // connections work (a dropped NAT or conntrack entry): they must notice and reconnect.
    name: 'Redis link: open connections silent for good',
    inQuick: false,
    proxied: true,
    // The history connection is given up on after its PING goes unanswered for 10 s (a long
    // read may hold it that long), and its socket 2 s later (ioredis waits that long for the FIN
    // that never comes back): streams catch up only after that.
    criteria: { ...STRICT, detectWithinMs: 3000, recoverWithinMs: 20_000 },
    fault: async (bench) => {
      bench.proxy.silenceOpenConnections();
    },
  },
  {
    // Every connection to Redis reset, and every reconnect for 3 s after: a flapping link, not
    // one blip (which the CLIENT KILL row covers).
    name: 'Redis link reset, reconnects reset for 3 s',
    inQuick: false,
    proxied: true,
    criteria: { ...STRICT, recoverWithinMs: 5000 },
    fault: async (bench) => {
      bench.proxy.reset(3000);
      await sleep(3000);
    },
  },
  {
    name: 'replica SIGKILL under load',
    inQuick: true,
    criteria: STRICT,
    fault: async (bench) => {
      await bench.replaceHub(0, 'SIGKILL');
    },
  },
  {
    // Replication is asynchronous: the newest acknowledged events may not have reached the replica
    // that takes over. Every stream must then get them or a reset, never a silent gap.
    name: 'Cluster: primary SIGKILL, replica promoted',
    inQuick: true,
    topology: 'cluster',
    replicas: 3,
    criteria: { ...DATA_LOSS, recoverWithinMs: 20_000 },
    fault: async (bench) => {
      const port = await bench.cluster.primaryForKey(userKeys('ssehub', bench.users[0] as string).meta);
      await bench.cluster.kill(port);
      await bench.cluster.waitForFailover(port);
    },
  },
  {
    name: 'Cluster: slot migration under load',
    inQuick: true,
    topology: 'cluster',
    replicas: 3,
    criteria: STRICT,
    fault: async (bench) => {
      // Every slot that holds one of the users moves to another primary, keys and all.
      const nodes = (await bench.cluster.nodes()).filter((node) => node.role === 'primary');
      const slots = new Set(bench.users.map((user) => keySlot(userKeys('ssehub', user).meta)));
      for (const slot of [...slots].slice(0, 6)) {
        const owner = await bench.cluster.primaryForSlot(slot);
        const target = nodes.find((node) => node.port !== owner) as (typeof nodes)[number];
        await bench.cluster.migrateSlot(slot, target.port);
      }
    },
  },
  {
    name: 'Sentinel: primary SIGKILL, failover',
    inQuick: true,
    topology: 'sentinel',
    criteria: { ...DATA_LOSS, recoverWithinMs: 20_000 },
    fault: async (bench) => {
      await bench.sentinel.failover();
    },
  },
  {
    // A crash as clients see it: every backend killed, no checkpoint; the WAL keeps every
    // committed row, so nothing acknowledged may be missing.
    name: 'Postgres outbox: restart (immediate stop)',
    inQuick: true,
    topology: 'postgres',
    criteria: { ...STRICT, detectWithinMs: 3000, recoverWithinMs: 10_000 },
    fault: async (bench) => {
      await bench.postgres.stop('immediate');
      await bench.postgres.start();
    },
  },
  {
    // The reader only reads below the oldest running transaction (rows commit out of id order),
    // so a session idle in a transaction that holds an xid stalls every replica's delivery, while
    // publishes still commit. When it ends, everything held must arrive, once.
    name: `Postgres outbox: idle in transaction ${NETWORK_FAULT_MS / 1000} s`,
    inQuick: false,
    topology: 'postgres',
    // Readiness says whether a replica can serve, not how far behind the outbox is (the lag metric does).
    criteria: { ...STRICT, staysReady: true, recoverWithinMs: 5000 },
    fault: async (bench) => {
      const session = await connectPg(bench.postgres.url);
      try {
        await session.query('BEGIN');
        await session.query('SELECT pg_current_xact_id()');
        // What committed before the xid was taken is read within the first second; after that
        // nothing may arrive, or the session did not stall the outbox and the row proves nothing.
        await sleep(1000);
        const held = bench.delivered();
        await sleep(NETWORK_FAULT_MS - 1000);
        if (bench.delivered() !== held) throw new Error('delivery went on behind the open transaction');
        await session.query('COMMIT');
      } finally {
        await session.end();
      }
    },
  },
  {
    name: 'rolling restart of all replicas',
    inQuick: false,
    criteria: STRICT,
    fault: async (bench) => {
      for (let i = 0; i < bench.hubs.length; i++) await bench.replaceHub(i, 'SIGTERM');
    },
  },
];

describe('fault suite', () => {
  afterAll(() => {
    const table = [TABLE_HEADER, ...rows.map(formatRow)].join('\n');
    console.log(`\n${table}\n`);
    if (process.env.FAULTS_WRITE === '1') {
      writeFileSync(join(__dirname, '..', 'FAULTS.md'), faultsMarkdown(table));
    }
  });

  for (const scenario of SCENARIOS.filter((s) => !quick || s.inQuick)) {
    it(scenario.name, async () => {
      const bench = await FaultBench.start({
        replicas: scenario.replicas ?? 2,
        users: 20,
        persistence: scenario.persistence,
        topology: scenario.topology,
        proxied: scenario.proxied,
      });
      try {
        const row = await bench.run(scenario.name, scenario.criteria, () => scenario.fault(bench));
        rows.push(row);
        console.log(formatRow(row));
        expect(row.why).toBe('');
      } finally {
        await bench.close();
      }
    });
  }

  for (const scenario of LOAD_SCENARIOS.filter((s) => !quick || s.inQuick)) {
    it(scenario.name, async () => {
      const bench = await FaultBench.start({ replicas: 2, users: 20, env: scenario.env });
      const staged = await scenario.stage(bench).catch(async (err: unknown) => {
        await bench.close();
        throw err;
      });
      try {
        const row = await bench.run(scenario.name, scenario.criteria, staged.fault, staged.outcome);
        rows.push(row);
        console.log(formatRow(row));
        expect(row.why).toBe('');
      } finally {
        await staged.close();
        await bench.close();
      }
    });
  }
});

function faultsMarkdown(table: string): string {
  return `# Fault suite

The latest full run of \`FAULTS_WRITE=1 npm run faults\` on ${new Date().toISOString().slice(0, 10)}: two replicas on a
Redis of their own (started by the suite; the Cluster scenarios run three replicas on a cluster of three primaries
with a replica each, the Sentinel one two replicas on a primary, a replica and three sentinels; the \`Redis link\` rows put
a TCP proxy the suite controls, test/helpers/tcp-proxy.ts, between the replicas and Redis; the \`Postgres outbox\` rows
run the replicas on the Postgres outbox transport, on a Postgres cluster of their own), 20 users each holding one \`/api/v1/stream/agui\` stream through a
client that reconnects to any live replica with \`Last-Event-ID\` (as a browser behind a balancer does), and a
publisher sending 50 events/s through the webhooks (a \`service\` token), to whichever replica answers.

- **acknowledged**: webhooks answered 202 with an id; **unknown**: 504 (Redis took the call, no answer came);
  neither 503s nor refused calls count, since the publisher was told the event was not published.
- **lost**: acknowledged events a stream never showed; **duplicated**: shown twice; **resets**: in-band
  \`reset\` events the streams received.
- **detect ms**: from the fault to the first replica answering \`/readyz\` with 503 (\`-\`: none did).
- **recover ms**: from the end of the fault until every replica is ready and every stream has taken an
  event published after it.
- **PASS**: no duplicate; no loss (where the store itself lost data, FLUSHALL and a restart without
  persistence, or cannot prove it kept all of it, a restart with AOF, which starts every user's history in
  a new epoch, a loss is allowed only if the stream got a \`reset\`); recovery within 15 s; every replica's
  RSS under 400 MB, unless the scenario states its own bound. Where a fault leaves a replica unable to serve (a freeze, a black hole, silent connections, a
  Postgres restart) it must also report not ready within 3 s; after a network fault that heals and after an outbox
  stall, recovery must take under 5 s, after a Postgres restart under 10 s, after connections that went silent for good
  under 20 s (the history connection is given up on after 10 s without an answer to its PING).
- **notes**: what a scenario measured besides the columns, and the bounds it was held to.

The last five rows load the same bench rather than break a dependency; their own streams (held by a
separate client process) are counted in the columns with the bench's:

- **pub/sub output buffer overflow**: Redis's \`client-output-buffer-limit pubsub\` is set to 256 KB
  and a backend publishes 1,000 events of 4 KiB to the bench's users in one MULTI (straight into Redis,
  through \`ssehub_publish\`). Redis cuts the subscriber the burst was for; the replica must notice,
  resubscribe and catch every stream up from history. PASS also needs the cut to have happened.
- **reconnect storm**: 5,000 more streams (1,000 users, five each) on one replica, each holding an id;
  the replica is SIGKILLed and an event is published to every one of those users at once (batch webhook).
  All 5,000 reconnect at once, with \`Last-Event-ID\`, to the other replica, and must get that event
  exactly once; the notes say when the last stream was back and when the last had it.
- **stalled streams**: 2,000 more streams (20 users, 50 per replica each) that never read, with
  \`SSEHUB_BUFFER_MAX_BYTES\` 128 KiB; events of 64 KB go to them 100 streams at a time until every one
  was cut as \`slow_consumer\`. The RSS bound is a replica's own 150 MB plus, for each of its 1,000
  stalled streams, a full buffer and the frame that overflowed it; every webhook of the steady load must
  answer 202. Batches of 100, because before a replica queues anything, the kernel takes up to a few MB
  into a stalled connection's socket buffers (both ends, on one machine): 2,000 at once pass the kernel's
  TCP memory pressure threshold on a small machine, which then slows every connection on it.
- **maximal history**: a plain user fills its history to \`SSEHUB_HISTORY_MAX_BYTES\` (the default
  16 MiB) with events of 64 KB through its own webhook, then resumes all of it from
  \`Last-Event-ID: <epoch>:0-0\` on four streams at once, replicas as shipped. PASS also needs every
  webhook of the steady load answered 202 with a p99 under 50 ms, and Redis's \`used_memory\` (INFO,
  every 100 ms) to grow less than twice the history budget plus 8 MB.
- **one user publishing flat out**: a plain user's token posts 2 KB events to its own webhook with 16
  requests in flight on each replica, against a quota of 2,000 events and 1 MiB per minute. PASS needs at
  most the quota accepted across both replicas, the rest answered 429, and the steady load's webhook p99
  under 50 ms.

CI runs \`FAULTS=quick npm run faults\` (a 4 s freeze, CLIENT KILL, a 4 s black hole between the replicas and
Redis, replica SIGKILL, the Cluster and Sentinel scenarios, a Postgres restart, the output buffer overflow, and
the reconnect storm with 1,000 streams) on every change.

${table}

${soakMarkdown(readSoakResult())}`;
}
