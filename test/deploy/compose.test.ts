import { existsSync } from 'node:fs';
import { loadConfig } from '../../src/config';
import {
  CONFIG_VARIABLE_SET,
  DEFAULT_PORT,
  findResource,
  kustomize,
  nginxChildren,
  nginxOne,
  parseNginx,
  readText,
  readYaml,
  repoPath,
  routerPaths,
  splitImage,
  streamPaths,
  type NginxDirective,
  type Obj,
} from './helpers';

const compose = readYaml('docker-compose.yml');
const services = compose.services as Record<string, Obj>;
const packageVersion = (JSON.parse(readText('package.json')) as { version: string }).version;
const hubImage = splitImage(
  findResource(kustomize(repoPath('k8s/base')), 'Deployment', 'ssehub').spec.template.spec.containers[0].image,
);
const hubServices = Object.entries(services).filter(
  ([, s]) => splitImage(String(s.image ?? '')).name === hubImage.name,
);
const hubNames = hubServices.map(([name]) => name);

function envOf(service: Obj): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(
      env.map((entry: string) => {
        const eq = entry.indexOf('=');
        return eq === -1 ? [entry, ''] : [entry.slice(0, eq), entry.slice(eq + 1)];
      }),
    );
  }
  return Object.fromEntries(Object.entries(env as Obj).map(([k, v]) => [k, String(v)]));
}

function portMapping(service: Obj, containerPort: number): number | undefined {
  for (const entry of (service.ports ?? []) as Array<string | Obj>) {
    if (typeof entry === 'string') {
      const m = /^(?:[\d.]+:)?(\d+):(\d+)(?:\/tcp)?$/.exec(entry);
      if (m && Number(m[2]) === containerPort) return Number(m[1]);
    } else if (Number(entry.target) === containerPort) {
      return Number(entry.published);
    }
  }
  return undefined;
}

function bindMounts(service: Obj): Array<{ host: string; container: string }> {
  return ((service.volumes ?? []) as string[])
    .filter((v) => typeof v === 'string' && v.startsWith('./'))
    .map((v) => {
      const [host, container] = v.split(':');
      return { host: host as string, container: container as string };
    });
}

describe('docker-compose.yml', () => {
  it('runs at least three hub replicas of the image the Kubernetes manifests use', () => {
    expect(hubNames.length).toBeGreaterThanOrEqual(3);
    for (const [, service] of hubServices) {
      expect(service.image).toBe(`${hubImage.name}:${packageVersion}`);
      expect(service.build).toBeDefined();
    }
    expect(hubImage.tag).toBe(packageVersion);
  });

  it('has Redis and Postgres, and every depends_on names a service', () => {
    expect(String(services.redis?.image)).toMatch(/^redis:/);
    expect(String(services.postgres?.image)).toMatch(/^postgres:/);
    for (const [name, service] of Object.entries(services)) {
      const deps = Array.isArray(service.depends_on) ? service.depends_on : Object.keys(service.depends_on ?? {});
      for (const dep of deps as string[])
        expect({ name, dep, exists: dep in services }).toEqual({ name, dep, exists: true });
    }
  });

  it('sets only variables the hub reads on hub containers', () => {
    for (const [name, service] of hubServices) {
      for (const key of Object.keys(envOf(service))) {
        expect({ service: name, key, known: CONFIG_VARIABLE_SET.has(key) }).toEqual({
          service: name,
          key,
          known: true,
        });
      }
      expect(service.env_file).toBeUndefined();
    }
  });

  it('gives every replica a configuration the hub accepts: production, Redis transport, one shared key', () => {
    const secrets = new Set<string>();
    for (const [, service] of hubServices) {
      const env = envOf(service);
      const config = loadConfig(env);
      expect(config.production).toBe(true);
      expect(config.transport).toBe('redis');
      expect(config.port).toBe(DEFAULT_PORT);
      const redisHost = new URL(config.redisUrl as string).hostname;
      expect(services[redisHost]?.image).toMatch(/^redis:/);
      expect(Buffer.byteLength(config.jwt.secret ?? '')).toBeGreaterThanOrEqual(32);
      secrets.add(config.jwt.secret as string);
      expect(service.depends_on?.redis?.condition).toBe('service_healthy');
    }
    expect(secrets.size).toBe(1);
    // The example key is marked as local-only, in the value and next to it.
    const [secret] = [...secrets];
    expect(secret).toMatch(/local/i);
    expect(readText('docker-compose.yml')).toMatch(/LOCAL USE ONLY[^\n]*\n[^\n]*\n\s*SSEHUB_JWT_SECRET:/);
  });

  it('switches every replica to the Postgres outbox with the override file, on the compose database', () => {
    const override = readYaml('docker-compose.postgres.yml').services as Record<string, Obj>;
    expect(Object.keys(override).sort()).toEqual([...hubNames].sort());
    const database = services.postgres?.environment as Record<string, string>;
    for (const name of hubNames) {
      // Compose merges an override's environment and depends_on into the base service's.
      const env = { ...envOf(services[name] as Obj), ...envOf(override[name] as Obj) };
      for (const key of Object.keys(env))
        expect({ key, known: CONFIG_VARIABLE_SET.has(key) }).toEqual({ key, known: true });
      const config = loadConfig(env);
      expect(config.transport).toBe('postgres');
      const url = new URL(config.databaseUrl as string);
      expect(services[url.hostname]?.image).toMatch(/^postgres:/);
      expect([url.username, decodeURIComponent(url.password), url.pathname.slice(1)]).toEqual([
        database.POSTGRES_USER,
        database.POSTGRES_PASSWORD,
        database.POSTGRES_DB,
      ]);
      expect(override[name]?.depends_on?.postgres?.condition).toBe('service_healthy');
    }
  });

  it('gives SIGTERM more time than the drain window', () => {
    for (const [, service] of hubServices) {
      const config = loadConfig(envOf(service));
      const grace = /^(\d+)s$/.exec(String(service.stop_grace_period ?? '10s'));
      expect(grace).not.toBeNull();
      expect(Number(grace?.[1]) * 1000).toBeGreaterThan(config.drainMs + 5000);
    }
  });

  it('bind-mounts files that exist', () => {
    const mounts = Object.values(services).flatMap(bindMounts);
    expect(mounts.length).toBeGreaterThan(0);
    for (const { host } of mounts) expect({ host, exists: existsSync(repoPath(host)) }).toEqual({ host, exists: true });
  });
});

describe('deploy/nginx/nginx.conf', () => {
  const nginxService = services.nginx as Obj;
  const mount = bindMounts(nginxService).find((m) => m.container === '/etc/nginx/nginx.conf');
  const conf = parseNginx(readText(mount?.host ?? 'deploy/nginx/nginx.conf'));
  const http = nginxOne(conf, 'http')?.block;
  const upstreams = nginxChildren(http, 'upstream');
  const server = nginxOne(http, 'server')?.block;
  const locations = nginxChildren(server, 'location');
  const proxied = locations.filter((l) => nginxOne(l.block, 'proxy_pass') !== undefined);

  /** A directive's effective value in a location: its own, else the server's, else http's. */
  function effective(location: NginxDirective, name: string): string[] | undefined {
    for (const scope of [location.block, server, http]) {
      const found = nginxOne(scope, name);
      if (found) return found.args;
    }
    return undefined;
  }

  it('is the file compose mounts', () => {
    expect(mount?.host).toBe('./deploy/nginx/nginx.conf');
  });

  it('balances over exactly the compose hub replicas on the hub port', () => {
    expect(upstreams).toHaveLength(1);
    const servers = nginxChildren(upstreams[0]?.block, 'server').map((s) => s.args[0]);
    expect(servers.sort()).toEqual(hubNames.map((n) => `${n}:${DEFAULT_PORT}`).sort());
    for (const location of proxied) {
      expect(nginxOne(location.block, 'proxy_pass')?.args).toEqual([`http://${upstreams[0]?.args[0]}`]);
    }
  });

  it('listens on the port compose publishes', () => {
    const listen = Number(nginxOne(server, 'listen')?.args[0]);
    expect(portMapping(nginxService, listen)).toBe(8080);
  });

  it('streams SSE unbuffered, uncompressed, over keep-alive HTTP/1.1 with hour-long timeouts', () => {
    expect(proxied.length).toBeGreaterThan(0);
    const seconds = (v: string[] | undefined): number => {
      const m = /^(\d+)(s|m|h)?$/.exec(v?.[0] ?? '');
      if (!m) return 0;
      return Number(m[1]) * ({ s: 1, m: 60, h: 3600 }[m[2] ?? 's'] as number);
    };
    for (const location of proxied) {
      expect(effective(location, 'proxy_buffering')).toEqual(['off']);
      expect(effective(location, 'proxy_cache')).toEqual(['off']);
      expect(effective(location, 'proxy_http_version')).toEqual(['1.1']);
      expect(effective(location, 'gzip')).toEqual(['off']);
      expect(seconds(effective(location, 'proxy_read_timeout'))).toBeGreaterThanOrEqual(3600);
      expect(seconds(effective(location, 'proxy_send_timeout'))).toBeGreaterThanOrEqual(3600);
      const headers = nginxChildren(location.block, 'proxy_set_header').map((h) => h.args);
      expect(headers).toContainEqual(['Connection', '']);
    }
    // Compression must not be switched back on for event streams anywhere.
    const gzipTypes = [http, server, ...locations.map((l) => l.block)].flatMap((b) => nginxChildren(b, 'gzip_types'));
    expect(gzipTypes.flatMap((d) => d.args)).not.toContain('text/event-stream');
    expect(nginxOne(upstreams[0]?.block, 'keepalive')).toBeDefined();
  });

  it('routes every stream and webhook path to the hub and keeps /metrics private', () => {
    const prefixOf = (l: NginxDirective): string => (l.args.length === 1 ? (l.args[0] as string) : '');
    const exactMetrics = locations.find((l) => l.args[0] === '=' && l.args[1] === '/metrics');
    expect(nginxOne(exactMetrics?.block, 'return')?.args[0]).toBe('404');
    const prefixes = proxied.map(prefixOf);
    for (const path of [...streamPaths(), '/api/v1/webhook/agui']) {
      expect(prefixes.some((p) => p !== '' && path.startsWith(p))).toBe(true);
    }
    expect(routerPaths('src/http/ops.ts')).toContain('/metrics');
  });

  it('serves the browser example from the directory compose mounts', () => {
    const demo = locations.find((l) => l.args[0] === '/demo/');
    const root = nginxOne(demo?.block, 'root')?.args[0];
    const mountPoint = bindMounts(nginxService).find((m) => m.host === './examples/browser')?.container;
    expect(`${root}/demo`).toBe(mountPoint);
    expect(existsSync(repoPath('examples/browser/index.html'))).toBe(true);
  });
});

describe('deploy/prometheus/prometheus.yml', () => {
  const prometheus = services.prometheus as Obj;
  const mount = bindMounts(prometheus).find((m) => m.container === '/etc/prometheus/prometheus.yml');
  const config = readYaml((mount?.host ?? '').replace(/^\.\//, ''));

  it('is the file compose mounts and the one --config.file names', () => {
    expect(mount?.host).toBe('./deploy/prometheus/prometheus.yml');
    expect(prometheus.command).toContain(`--config.file=${mount?.container}`);
  });

  it('scrapes /metrics on every hub replica directly', () => {
    const jobs = config.scrape_configs as Obj[];
    const hubJob = jobs.find((j) => j.job_name === 'ssehub') as Obj;
    expect(routerPaths('src/http/ops.ts')).toContain(hubJob.metrics_path ?? '/metrics');
    const targets = (hubJob.static_configs as Obj[]).flatMap((c) => c.targets as string[]);
    expect(targets.sort()).toEqual(hubNames.map((n) => `${n}:${DEFAULT_PORT}`).sort());
  });
});

describe('Grafana provisioning', () => {
  const grafana = services.grafana as Obj;
  const mounts = bindMounts(grafana);

  it('provisions the Prometheus service as data source and deploy/grafana/dashboards as dashboards', () => {
    const provisioning = mounts.find((m) => m.container === '/etc/grafana/provisioning')?.host as string;
    const datasources = readYaml(provisioning, 'datasources', 'prometheus.yml').datasources as Obj[];
    const url = new URL(datasources[0]?.url as string);
    expect(services[url.hostname]).toBe(services.prometheus);
    expect(portMapping(services.prometheus as Obj, Number(url.port))).toBe(Number(url.port));
    const providers = readYaml(provisioning, 'dashboards', 'ssehub.yml').providers as Obj[];
    const dashboardsPath = providers[0]?.options.path as string;
    const dashboardsMount = mounts.find((m) => m.container === dashboardsPath);
    expect(dashboardsMount?.host).toBe('./deploy/grafana/dashboards');
    expect(existsSync(repoPath('deploy/grafana/dashboards/ssehub.json'))).toBe(true);
  });
});
