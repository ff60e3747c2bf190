import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Redis } from 'ioredis';
import { parse } from 'yaml';
import { TOKEN_COOKIE } from '../../src/auth/token';
import { createVerifier } from '../../src/auth/verifier';
import { loadConfig } from '../../src/config';
import { parseEventId, type EventId } from '../../src/history/event-id';
import { EVENT_KINDS, routesFor, type EventKind, type StreamKind } from '../../src/routing';
import { HEARTBEAT_FRAME } from '../../src/sse/frame';
import { RedisEvents } from '../../src/transport/redis/events';
import { DEFAULT_HISTORY_SETTINGS, PUBLISH_FUNCTION, REDIS_LIBRARY, userKeys } from '../../src/transport/redis/library';
import { STREAM_ROUTES } from '../../src/http/stream-routes';
import { parseEnvelope, parseWebhookBody } from '../../src/wire/envelope';
import {
  CONFIG_VARIABLE_SET,
  ROOT,
  findResource,
  kustomize,
  readKustomization,
  readText,
  readYaml,
  repoPath,
  routerPaths,
  startHub,
  streamPaths,
  type LiveHub,
  type Obj,
} from './helpers';

import { SHARED_REDIS_URL } from '../helpers/hub-process';
import { userEpoch, userHistory, watchUserChannels } from '../helpers/redis-user';
import { mintToken } from '../helpers/tokens';
import { until } from '../helpers/wait';
const run = promisify(execFile);
/** The README's deployment sections, from "Run with Docker Compose" to the heading after "Deploy on Kubernetes". */
function deploySections(readme: string): string {
  const start = readme.indexOf('\n## Run with Docker Compose\n');
  const kubernetes = readme.indexOf('\n## Deploy on Kubernetes\n', start);
  if (start === -1 || kubernetes === -1) throw new Error('README.md lacks the deployment sections');
  const next = readme.indexOf('\n## ', kubernetes + 1);
  return readme.slice(start + 1, next === -1 ? undefined : next + 1);
}

const docs = deploySections(readText('README.md'));
const compose = readYaml('docker-compose.yml');
const services = compose.services as Record<string, Obj>;
const composeEnv = services['ssehub-1']?.environment as Record<string, string>;
const DEFAULT_PREFIX = loadConfig({}).channelPrefix;

const STREAM_OF_PATH = new Map<string, StreamKind>(STREAM_ROUTES.map((route) => [route.path, route.stream]));

/** Fenced code blocks with their language. */
function codeBlocks(markdown: string): Array<{ lang: string; code: string }> {
  return [...markdown.matchAll(/```(\w*)\n([\s\S]*?)```/g)].map((m) => ({
    lang: m[1] as string,
    code: m[2] as string,
  }));
}

/** The `node -e "..." args` commands in a text, as argv after `node`. */
function nodeOneLiners(text: string): Array<{ script: string; args: string[]; line: string }> {
  return [...text.matchAll(/node -e "([^"]+)"((?: [a-z][a-z-]*)*)\)?\s*$/gm)].map((m) => ({
    script: m[1] as string,
    args: (m[2] as string).trim().split(/\s+/).filter(Boolean),
    line: m[0],
  }));
}

describe('README deployment sections', () => {
  let hub: LiveHub;

  beforeAll(async () => {
    hub = await startHub({ SSEHUB_JWT_SECRET: composeEnv.SSEHUB_JWT_SECRET as string });
  });

  afterAll(async () => {
    await hub.close();
  });

  it('are the two sections, in order', () => {
    expect([...docs.matchAll(/^## (.+)$/gm)].map((m) => m[1])).toEqual([
      'Run with Docker Compose',
      'Deploy on Kubernetes',
    ]);
    expect(docs).not.toMatch(/^# /m);
  });

  it('names only files and directories that exist', () => {
    const paths = new Set(
      [...docs.matchAll(/`((?:k8s|deploy|examples|docs)\/[^`\s]*|Dockerfile|docker-compose\.yml)`/g)].map(
        (m) => m[1] as string,
      ),
    );
    expect(paths.size).toBeGreaterThan(10);
    for (const path of paths) expect({ path, exists: existsSync(repoPath(path)) }).toEqual({ path, exists: true });
    for (const m of docs.matchAll(/kubectl apply -k ([^\s`]+)/g))
      expect(existsSync(repoPath(m[1] as string, 'kustomization.yaml'))).toBe(true);
  });

  it('names only compose services that exist and host ports that compose publishes', () => {
    for (const m of docs.matchAll(/docker compose (?:exec|restart)(?: -T)? ([a-z0-9-]+)/g))
      expect(Object.keys(services)).toContain(m[1]);
    const published = Object.values(services).flatMap((s) =>
      ((s.ports ?? []) as string[]).map((p) => Number(p.split(':')[0])),
    );
    for (const m of docs.matchAll(/localhost:(\d+)/g)) expect(published).toContain(Number(m[1]));
    for (const m of docs.matchAll(/`(ssehub-\d):(\d+)`/g)) {
      expect(services[m[1] as string]).toBeDefined();
      expect(Number(m[2])).toBe(loadConfig({}).port);
    }
    expect(docs).toContain(`\`${services['ssehub-1']?.image}\``);
  });

  it('names only variables the hub reads', () => {
    const names = new Set(
      [...docs.matchAll(/\b(SSEHUB_[A-Z_]+|REDIS_URL|NODE_ENV|LOG_LEVEL|DATABASE_URL)\b/g)].map((m) => m[1] as string),
    );
    for (const name of names) expect({ name, known: CONFIG_VARIABLE_SET.has(name) }).toEqual({ name, known: true });
  });

  it('shows only API paths the hub serves', async () => {
    const paths = new Set([...docs.matchAll(/\/api\/v1\/[a-z0-9/]+[a-z0-9]/g)].map((m) => m[0]));
    expect(paths.size).toBeGreaterThanOrEqual(5);
    for (const path of paths) {
      if (path === '/api/v1') continue;
      const post = path.includes('/webhook/');
      const res = await fetch(`${hub.url}${path}`, { method: post ? 'POST' : 'GET' });
      // Known route, no token: 401 (an unknown one would be 404).
      expect({ path, status: res.status }).toEqual({ path, status: 401 });
    }
    for (const path of streamPaths()) expect(docs).toContain(path);
  });

  it('mints working tokens with the documented node one-liners', async () => {
    const oneLiners = nodeOneLiners(docs);
    expect(oneLiners.length).toBeGreaterThanOrEqual(3);
    const verifier = createVerifier(loadConfig(composeEnv).jwt);
    for (const { script, args, line } of oneLiners) {
      const { stdout } = await run(process.execPath, ['-e', script, ...args], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '', SSEHUB_JWT_SECRET: composeEnv.SSEHUB_JWT_SECRET },
        timeout: 10_000,
      });
      const principal = await verifier.verify(stdout.trim());
      expect({ line, user: principal.userId, roles: [...principal.roles] }).toEqual({
        line,
        user: args[0],
        roles: args.slice(1),
      });
    }
  });

  it('publishes with commands the hub accepts', async () => {
    const publish = /redis-cli PUBLISH (\S+) '([^']+)'/.exec(docs);
    expect(publish?.[1]).toBe(`${DEFAULT_PREFIX}:agui`);
    const envelope = parseEnvelope(Buffer.from(publish?.[2] as string), 1 << 20);
    expect(envelope.ok).toBe(true);
    const webhook = /-d '([^']+)' \\\n\s+http:\/\/localhost:8080(\/api\/v1\/webhook\/[a-z0-9]+)/.exec(docs);
    expect(parseWebhookBody(Buffer.from(webhook?.[1] as string), 1 << 20).ok).toBe(true);
    expect(EVENT_KINDS).toContain(webhook?.[2]?.split('/').pop());
  });

  it('states the probe, drain and grace values the manifests use', () => {
    // Line breaks in the prose do not matter.
    const flat = docs.replace(/\s+/g, ' ');
    const resources = kustomize(repoPath('k8s/overlays/production'));
    const baseHpa = findResource(kustomize(repoPath('k8s/base')), 'HorizontalPodAutoscaler', 'ssehub');
    expect(flat).toContain(`between ${baseHpa.spec.minReplicas} and ${baseHpa.spec.maxReplicas} replicas`);
    const deployment = findResource(resources, 'Deployment', 'ssehub');
    const container = deployment.spec.template.spec.containers[0] as Obj;
    const secretExample = readYaml('k8s/overlays/production/secret.example.yaml');
    const config = loadConfig({
      ...findResource(resources, 'ConfigMap', 'ssehub-config').data,
      ...secretExample.stringData,
    });
    expect(flat).toContain(
      `\`terminationGracePeriodSeconds\` is ${deployment.spec.template.spec.terminationGracePeriodSeconds}`,
    );
    expect(flat).toContain(`\`preStop\` sleeps ${container.lifecycle.preStop.sleep.seconds} s`);
    expect(flat).toContain(`\`SSEHUB_DRAIN_MS\` (${config.drainMs / 1000} s)`);
    expect(flat).toContain(`\`SSEHUB_HEARTBEAT_MS\`, ${config.heartbeatMs / 1000} s`);
    expect(flat).toContain(
      `The container port is \`${container.ports[0].containerPort}\`, named \`${container.ports[0].name}\``,
    );
    expect(flat).toContain(`\`maxSurge: ${deployment.spec.strategy.rollingUpdate.maxSurge}\``);
    const hpa = findResource(resources, 'HorizontalPodAutoscaler', 'ssehub');
    const window = hpa.spec.behavior.scaleDown.stabilizationWindowSeconds as number;
    expect(flat).toContain(`a ${window / 60}-minute stabilization window`);
    expect(flat).toContain(`(${hpa.spec.minReplicas} to ${hpa.spec.maxReplicas} in production)`);
  }, 10_000);

  it('shows the same ingress-nginx annotations as the component, and the KEDA query and overlay that are tested', () => {
    const ingress = readYaml('k8s/components/ingress-nginx/ingress.yaml');
    const block = codeBlocks(docs).find((b) => b.code.includes('nginx.ingress.kubernetes.io/'));
    expect(parse(block?.code as string)).toEqual(ingress.metadata.annotations);

    const scaled = readYaml('k8s/components/autoscaling-keda/scaledobject.yaml');
    const trigger = (scaled.spec.triggers as Obj[])[0] as Obj;
    expect(docs).toContain(`\`${trigger.metadata.query}\``);
    expect(docs).toMatch(new RegExp(`\\b${trigger.metadata.threshold}\\s+streams per pod`));

    const overlay = parse(codeBlocks(docs).find((b) => b.code.includes('autoscaling-keda'))?.code as string) as Obj;
    expect(overlay).toEqual({
      apiVersion: 'kustomize.config.k8s.io/v1beta1',
      kind: 'Kustomization',
      namespace: readKustomization(repoPath('k8s/overlays/production')).namespace,
      resources: ['../production'],
      components: ['../../components/autoscaling-keda'],
    });
    // Relative to a sibling of the production overlay, the paths resolve.
    expect(existsSync(join(repoPath('k8s/overlays/production'), '..', '..', 'components', 'autoscaling-keda'))).toBe(
      true,
    );
  });
});

describe('examples', () => {
  let hub: LiveHub;
  let redis: Redis;
  const prefixes: string[] = [];

  /** A channel prefix of this test's own on the shared Redis; its keys are deleted afterwards. */
  function examplePrefix(): string {
    const prefix = `examples-${randomBytes(6).toString('hex')}`;
    prefixes.push(prefix);
    return prefix;
  }

  beforeAll(async () => {
    hub = await startHub();
    redis = new Redis(SHARED_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 1 });
    await redis.connect();
    // What a replica with the default prefix does when it connects. Never FUNCTION LOAD REDIS_LIBRARY
    // here: it holds the default prefix only, and would drop the limits of every other test's hubs.
    await new RedisEvents(redis, 'ssehub', { settings: DEFAULT_HISTORY_SETTINGS }).prepare();
  });

  afterAll(async () => {
    try {
      for (const prefix of prefixes) {
        const keys: string[] = [];
        for await (const batch of redis.scanStream({ match: `${prefix}:*`, count: 1000 }))
          keys.push(...(batch as string[]));
        if (keys.length > 0) await redis.del(...keys);
      }
    } finally {
      redis.disconnect();
      await hub.close();
    }
  });

  /** A recorded client call (`method, ...args`) as the Redis command it sends. */
  function asCommand([method, ...args]: unknown[]): string[] {
    const command = method === 'call' || method === 'execute_command' ? args : [method, ...args];
    return command.map((part, i) => (i === 0 ? String(part).toUpperCase() : String(part)));
  }

  /**
   * Checks a recorded publish (`FCALL ssehub_publish 2 <meta> <history> <kind> <event>`, with the
   * user's keys under its hash tag), then sends those exact arguments to the real Redis, after
   * loading the library with the prefix's limits as a replica does: the reply must be a valid id of the user's epoch, the
   * user's history must hold the event's bytes under that id, and the user's channel must carry
   * the event as a record the replicas admit.
   */
  async function replay(
    command: string[],
    expected: { kind: EventKind; userId: string; prefix: string; event: object },
  ): Promise<string> {
    const { kind, userId, prefix, event } = expected;
    const { meta, history } = userKeys(prefix, userId);
    expect(command.slice(0, 6)).toEqual(['FCALL', PUBLISH_FUNCTION, '2', meta, history, kind]);
    expect(command).toHaveLength(7);
    const eventJson = command[6] as string;
    expect(JSON.parse(eventJson)).toEqual(event);
    await new RedisEvents(redis, prefix, { settings: DEFAULT_HISTORY_SETTINGS }).prepare();

    const channel = await watchUserChannels(redis, prefix, [userId], 1 << 20);
    try {
      const [name, ...args] = command as [string, ...string[]];
      const id = await redis.call(name, ...args);
      expect(typeof id).toBe('string');
      const parsed = parseEventId(id as string);
      expect({ id, parsed: parsed !== undefined }).toEqual({ id, parsed: true });
      const { epoch, ms, seq } = parsed as EventId;
      expect(await userEpoch(redis, prefix, userId)).toBe(epoch);
      expect(await userHistory(redis, prefix, userId)).toEqual([
        [`${ms}-${seq}`, ['k', kind, 'e', eventJson, 'o', '0']],
      ]);

      await until(() => channel.messages.length > 0, 5000, "the event on the user's channel");
      expect(channel.messages).toEqual([
        { admitted: [{ kind, userId, id: parsed, event: Buffer.from(eventJson) }], rejected: [] },
      ]);
      return id as string;
    } finally {
      channel.close();
    }
  }

  it('README maps every kind to the streams the hub routes it to', () => {
    const readme = readText('examples/README.md');
    for (const kind of EVENT_KINDS) {
      const row = new RegExp(`^\\| \`${kind}\`\\s*\\|([^|]+)\\|`, 'm').exec(readme);
      const paths = [...(row?.[1] ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1] as string);
      const streams = paths.map((p) => STREAM_OF_PATH.get(p));
      expect({ kind, streams: streams.sort() }).toEqual({
        kind,
        streams: routesFor(kind)
          .map((r) => r.stream)
          .sort(),
      });
    }
  });

  it('README shows the FCALL form the function library defines', () => {
    const readme = readText('examples/README.md');
    const form = `FCALL ${PUBLISH_FUNCTION} 2 <prefix>:{<tag>}:m <prefix>:{<tag>}:h <kind> <event-json>`;
    expect(readme).toContain(form);
    expect(readText('README.md')).toContain(form);
    // The form the library's own header documents, and the one the helper computes keys for.
    expect(REDIS_LIBRARY).toContain(form);
    expect(userKeys('<prefix>', '<tag>')).toMatchObject({ meta: '<prefix>:{<tag>}:m', history: '<prefix>:{<tag>}:h' });
    expect(readme).toContain(`\`${DEFAULT_PREFIX}\` by default`);
  });

  it('Node: publishes with FCALL, which the real Redis accepts, and returns the id (client stubbed, call replayed)', async () => {
    const script = [
      "import { publish } from './examples/node/publish.mjs';",
      'const calls = [];',
      // Records whatever method the example calls and answers as Redis would.
      "const fake = new Proxy({}, { get: (_, method) => method === 'then' ? undefined : async (...args) => { calls.push([method, ...args]); return '0:1-1'; } });",
      "const id = await publish(fake, 'agui', 'alice', { type: 'TEXT_MESSAGE_CONTENT', delta: 'hi \\u00e9 \"q\"' });",
      "await publish(fake, 'bogus', 'alice', {}).then(() => calls.push(['accepted bogus kind']), () => {});",
      'console.log(JSON.stringify({ id, calls }));',
    ].join('\n');
    const event = { type: 'TEXT_MESSAGE_CONTENT', delta: 'hi é "q"' };
    for (const prefix of [undefined, examplePrefix()]) {
      const env: Record<string, string> = { PATH: process.env.PATH ?? '' };
      if (prefix) env.SSEHUB_CHANNEL_PREFIX = prefix;
      const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
        cwd: ROOT,
        env,
        timeout: 10_000,
      });
      const { id, calls } = JSON.parse(stdout) as { id: string; calls: unknown[][] };
      expect(id).toBe('0:1-1');
      expect(calls).toHaveLength(1);
      const command = asCommand(calls[0] as unknown[]);
      if (prefix === undefined) {
        expect(command.slice(3, 5)).toEqual([
          userKeys(DEFAULT_PREFIX, 'alice').meta,
          userKeys(DEFAULT_PREFIX, 'alice').history,
        ]);
        continue;
      }
      await replay(command, { kind: 'agui', userId: 'alice', prefix, event });
    }
  });

  it('Node: the script publishes to a real Redis and prints the id', async () => {
    const prefix = examplePrefix();
    // A replica of the prefix's deployment has connected: the library holds its limits.
    await new RedisEvents(redis, prefix, { settings: DEFAULT_HISTORY_SETTINGS }).prepare();
    const { stdout } = await run(process.execPath, ['examples/node/publish.mjs', 'dave', 'hello dave'], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', REDIS_URL: SHARED_REDIS_URL, SSEHUB_CHANNEL_PREFIX: prefix },
      timeout: 10_000,
    });
    const id = /^published (\S+)$/.exec(stdout.trim())?.[1] as string;
    const parsed = parseEventId(id ?? '');
    expect({ stdout, parsed: parsed !== undefined }).toEqual({ stdout, parsed: true });
    const { ms, seq } = parsed as EventId;
    const entries = await userHistory(redis, prefix, 'dave');
    expect(entries.map(([entryId]) => entryId)).toEqual([`${ms}-${seq}`]);
    const fields = (entries[0] as [string, string[]])[1];
    expect(JSON.parse(fields[fields.indexOf('e') + 1] as string)).toMatchObject({
      type: 'TEXT_MESSAGE_CONTENT',
      delta: 'hello dave',
    });
  });

  const python = ((): boolean => {
    try {
      execFileSync('python3', ['--version'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  (python ? it : it.skip)(
    'Python: publishes with FCALL, which the real Redis accepts, and returns the id (redis module stubbed, call replayed)',
    async () => {
      const prefix = examplePrefix();
      const script = [
        'import importlib.util, json, os, sys, types',
        "stub = types.ModuleType('redis')",
        'class Redis: pass',
        'stub.Redis = Redis',
        "sys.modules['redis'] = stub",
        "spec = importlib.util.spec_from_file_location('publish', 'examples/python/publish.py')",
        'mod = importlib.util.module_from_spec(spec)',
        'spec.loader.exec_module(mod)',
        'calls = []',
        'class Fake:',
        '    """Records whatever method the example calls; answers as redis-py does (bytes)."""',
        '    def __getattr__(self, method):',
        '        def record(*args):',
        '            calls.append([method, *args])',
        "            return b'0:1-1'",
        '        return record',
        'ids = []',
        "event = {'kind': 'task', 'id': 't1', 'text': 'h\\u00e9'}",
        "os.environ.pop('SSEHUB_CHANNEL_PREFIX', None)",
        "ids.append(mod.publish(Fake(), 'a2a', 'bob', event))",
        "os.environ['SSEHUB_CHANNEL_PREFIX'] = sys.argv[1]",
        "ids.append(mod.publish(Fake(), 'a2a', 'bob', event))",
        'try:',
        "    mod.publish(Fake(), 'bogus', 'bob', {})",
        "    calls.append(['accepted bogus kind'])",
        'except ValueError:',
        '    pass',
        "print(json.dumps({'ids': ids, 'calls': calls}))",
      ].join('\n');
      const { stdout } = await run('python3', ['-c', script, prefix], {
        cwd: ROOT,
        // No __pycache__ next to the example.
        env: { PATH: process.env.PATH ?? '', PYTHONDONTWRITEBYTECODE: '1' },
        timeout: 10_000,
      });
      const { ids, calls } = JSON.parse(stdout) as { ids: unknown[]; calls: unknown[][] };
      expect(ids).toEqual(['0:1-1', '0:1-1']);
      expect(calls).toHaveLength(2);
      expect(asCommand(calls[0] as unknown[]).slice(3, 4)).toEqual([userKeys(DEFAULT_PREFIX, 'bob').meta]);
      await replay(asCommand(calls[1] as unknown[]), {
        kind: 'a2a',
        userId: 'bob',
        prefix,
        event: { kind: 'task', id: 't1', text: 'hé' },
      });
      // The module docstring's one-line form is the documented contract.
      expect(readText('examples/python/publish.py')).toContain(
        `r.fcall("${PUBLISH_FUNCTION}", 2, *user_keys(user_id), kind, json.dumps(event))`,
      );
    },
  );

  it('shell: redis-cli FCALL and curl send what Redis and the hub accept (tools stubbed, calls replayed)', async () => {
    const bin = mkdtempSync(join(tmpdir(), 'ssehub-shell-'));
    try {
      for (const tool of ['redis-cli', 'curl']) {
        const file = join(bin, tool);
        writeFileSync(file, `#!/bin/sh\nprintf '%s\\0' "$@" > "${join(bin, `${tool}.args`)}"\n`);
        chmodSync(file, 0o755);
      }
      const token = 'stub-token';
      const prefix = examplePrefix();
      await run('sh', [repoPath('examples/shell/publish.sh'), 'carol'], {
        cwd: ROOT,
        env: {
          PATH: `${bin}:${process.env.PATH ?? ''}`,
          REDIS_URL: 'redis://redis.test:6379',
          SSEHUB_CHANNEL_PREFIX: prefix,
          SSEHUB_TOKEN: token,
          SSEHUB_URL: hub.url,
        },
        timeout: 10_000,
      });
      const args = (tool: string): string[] =>
        readFileSync(join(bin, `${tool}.args`), 'utf8')
          .split('\0')
          .slice(0, -1);

      const redisArgs = args('redis-cli');
      expect(redisArgs.slice(0, 2)).toEqual(['-u', 'redis://redis.test:6379']);
      const event = { type: 'TEXT_MESSAGE_CONTENT', messageId: 'm1', delta: 'hello from redis-cli' };
      await replay(asCommand(redisArgs.slice(2)), { kind: 'agui', userId: 'carol', prefix, event });

      const curlArgs = args('curl');
      const url = curlArgs.find((a) => a.startsWith('http')) as string;
      expect(url).toBe(`${hub.url}/api/v1/webhook/agui`);
      const headers = curlArgs.flatMap((a, i) => (curlArgs[i - 1] === '-H' ? [a] : []));
      expect(headers).toContain(`Authorization: Bearer ${token}`);
      const body = curlArgs[curlArgs.indexOf('-d') + 1] as string;
      expect(curlArgs[curlArgs.indexOf('-X') + 1]).toBe('POST');

      // Replay the request with a real token for carol: the hub publishes it and answers with its id.
      const real = await mintToken('carol', { secret: hub.secret });
      const res = await fetch(url, {
        method: 'POST',
        headers: {
          ...Object.fromEntries(headers.map((h) => h.split(/:\s*/, 2) as [string, string])),
          Authorization: `Bearer ${real}`,
        },
        body,
      });
      expect(res.status).toBe(202);
      const answer = (await res.json()) as { status: string; id: string };
      expect(parseEventId(answer.id)).toBeDefined();
      // The script's comment shows the answer's shape.
      expect(readText('examples/shell/publish.sh')).toContain(
        `202 {"status":"${answer.status}","id":"<epoch>:<ms>-<seq>",...}`,
      );
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it('shell: refuses to run with nothing to do', async () => {
    await expect(
      run('sh', [repoPath('examples/shell/publish.sh')], {
        cwd: ROOT,
        env: { PATH: process.env.PATH ?? '' },
        timeout: 10_000,
      }),
    ).rejects.toMatchObject({ code: 2 });
  });

  it('browser: subscribes with EventSource to real streams, with the cookie the hub reads, and handles heartbeats', () => {
    const html = readText('examples/browser/index.html');
    expect(html).toContain('new EventSource(');
    const options = [...html.matchAll(/<option value="([^"]+)"/g)].map((m) => m[1]);
    expect(options.sort()).toEqual(streamPaths().sort());
    expect(html).toContain(`document.cookie = \`${TOKEN_COOKIE}=`);
    const heartbeatEvent = /^event:(\S+)$/m.exec(HEARTBEAT_FRAME.toString())?.[1];
    expect(html).toContain(`addEventListener('${heartbeatEvent}'`);
    const webhook = /fetch\('([^']+)'/.exec(html)?.[1] as string;
    expect(routerPaths('src/http/webhook.ts', 'post').map((p) => p.replace(':kind', 'agui'))).toContain(webhook);
    // Event data is shown as text, never parsed as HTML.
    expect(html).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
  });
});
