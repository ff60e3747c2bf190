import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { loadConfig } from '../../src/config';
import { EVENT_KINDS } from '../../src/routing';
import {
  CONFIG_VARIABLE_SET,
  DEFAULT_PORT,
  KUSTOMIZATION_FILES,
  findResource,
  isObject,
  kustomize,
  readKustomization,
  readText,
  readYamlDocs,
  repoPath,
  resourceKey,
  routerPaths,
  splitImage,
  streamPaths,
  hubMetricNames,
  type Kustomization,
  type Obj,
} from './helpers';
import { validateObject } from './k8s-schema';

const K8S = repoPath('k8s');
const BASE = join(K8S, 'base');
const DEV = join(K8S, 'overlays', 'dev');
const PRODUCTION = join(K8S, 'overlays', 'production');
const COMPONENTS = join(K8S, 'components');
const OPTIONAL_COMPONENTS = ['autoscaling-keda', 'ingress-nginx'].map((c) => join(COMPONENTS, c));
const PRODUCTION_SECRET_EXAMPLE = join(PRODUCTION, 'secret.example.yaml');

interface Render {
  name: string;
  dir: string;
  /** An overlay around `dir`, as README.md shows for the optional components. */
  wrapper?: Kustomization;
  resources: Obj[];
}

/** The overlay README.md suggests for KEDA (and ingress-nginx) on top of production. */
const productionWrapper: Kustomization = {
  namespace: readKustomization(PRODUCTION).namespace,
  components: OPTIONAL_COMPONENTS,
};

const renders: Render[] = [
  { name: 'base', dir: BASE },
  { name: 'dev', dir: DEV },
  { name: 'production', dir: PRODUCTION },
  { name: 'production + keda + ingress-nginx', dir: PRODUCTION, wrapper: productionWrapper },
].map((r) => ({ ...r, resources: kustomize(r.dir, r.wrapper) }));
const deployable = renders.filter((r) => r.name !== 'base');

const ops = routerPaths('src/http/ops.ts');
const _hubSelector = (r: Obj[]): Record<string, string> =>
  findResource(r, 'Deployment', 'ssehub').spec.selector.matchLabels;

function kustomizationDirs(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir)) {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) out.push(...kustomizationDirs(path));
  }
  if (KUSTOMIZATION_FILES.some((f) => existsSync(join(dir, f)))) out.push(dir);
  return out;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((entry) => {
    const path = join(dir, entry);
    if (statSync(path).isDirectory()) return yamlFiles(path);
    return /\.ya?ml$/.test(entry) ? [path] : [];
  });
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  return Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);
}

function hubContainer(resources: Obj[]): Obj {
  const containers = findResource(resources, 'Deployment', 'ssehub').spec.template.spec.containers as Obj[];
  return containers.find((c) => c.name === 'ssehub') as Obj;
}

/**
 * The environment the hub container sees: envFrom ConfigMaps and Secrets of the render, and
 * env. A Secret the render does not create (base, production) is production's example.
 */
function containerEnv(resources: Obj[], container: Obj): Record<string, string> {
  const env: Record<string, string> = {};
  const secretExample = readYamlDocs(PRODUCTION_SECRET_EXAMPLE)[0] as Obj;
  for (const from of (container.envFrom ?? []) as Obj[]) {
    if (from.configMapRef) {
      Object.assign(env, findResource(resources, 'ConfigMap', from.configMapRef.name).data);
    } else if (from.secretRef) {
      const secret =
        resources.find((r) => r.kind === 'Secret' && r.metadata.name === from.secretRef.name) ?? secretExample;
      expect(secret.metadata.name).toBe(from.secretRef.name);
      for (const [k, v] of Object.entries((secret.data ?? {}) as Record<string, string>))
        env[k] = Buffer.from(v, 'base64').toString();
      Object.assign(env, secret.stringData);
    }
  }
  for (const e of (container.env ?? []) as Obj[]) env[e.name] = e.value ?? '<from elsewhere>';
  return env;
}

describe('kustomizations', () => {
  const dirs = kustomizationDirs(K8S);

  it('finds the base, both overlays and the components', () => {
    expect(dirs.map((d) => relative(K8S, d)).sort()).toEqual(
      ['base', 'overlays/dev', 'overlays/production', ...readdirSync(COMPONENTS).map((c) => `components/${c}`)].sort(),
    );
    expect(readdirSync(COMPONENTS).sort()).toEqual(['autoscaling-keda', 'gateway-api', 'ingress-nginx', 'monitoring']);
  });

  it.each(dirs.map((d) => [relative(K8S, d), d]))(
    '%s references files that exist and no deprecated fields',
    (_, dir) => {
      const k = readKustomization(dir);
      const isComponent = dir.startsWith(COMPONENTS);
      expect(k.apiVersion).toBe(isComponent ? 'kustomize.config.k8s.io/v1alpha1' : 'kustomize.config.k8s.io/v1beta1');
      expect(k.kind).toBe(isComponent ? 'Component' : 'Kustomization');
      for (const deprecated of [
        'commonLabels',
        'patchesStrategicMerge',
        'patchesJson6902',
        'bases',
        'vars',
        'imageTags',
      ]) {
        expect(k[deprecated]).toBeUndefined();
      }
      const referenced = [
        ...(k.resources ?? []),
        ...(k.components ?? []),
        ...(k.patches ?? []).flatMap((p) => (p.path ? [p.path] : [])),
        ...[...(k.configMapGenerator ?? []), ...(k.secretGenerator ?? [])].flatMap((g) => [
          ...(g.envs ?? []),
          ...(g.files ?? []).map((f) => f.split('=').pop() as string),
        ]),
      ];
      for (const ref of referenced) {
        const path = resolve(dir, ref);
        expect({ ref, exists: existsSync(path), inside: path.startsWith(K8S) }).toEqual({
          ref,
          exists: true,
          inside: true,
        });
      }
      for (const c of k.components ?? []) expect(readKustomization(resolve(dir, c)).kind).toBe('Component');
      for (const l of k.labels ?? []) expect(l.includeSelectors).toBe(false);
    },
  );

  it('uses every YAML file under k8s/ (or documents why not)', () => {
    const used = new Set<string>([PRODUCTION_SECRET_EXAMPLE]);
    for (const dir of dirs) {
      for (const f of KUSTOMIZATION_FILES) used.add(join(dir, f));
      const k = readKustomization(dir);
      for (const ref of [...(k.resources ?? []), ...(k.patches ?? []).flatMap((p) => (p.path ? [p.path] : []))]) {
        used.add(resolve(dir, ref));
      }
    }
    expect(yamlFiles(K8S).filter((f) => !used.has(f))).toEqual([]);
  });

  it('renders every component in some tested overlay', () => {
    const applied = new Set(
      deployable.flatMap((r) => [
        ...(readKustomization(r.dir).components ?? []).map((c) => resolve(r.dir, c)),
        ...(r.wrapper?.components ?? []),
      ]),
    );
    for (const component of readdirSync(COMPONENTS)) expect(applied).toContain(join(COMPONENTS, component));
  });
});

describe.each(renders.map((r) => [r.name, r] as const))('rendered %s', (_, render) => {
  const { resources } = render;

  it('passes the Kubernetes and CRD schemas', () => {
    expect(resources.length).toBeGreaterThan(0);
    for (const r of resources) {
      expect(() => validateObject(r)).not.toThrow();
    }
    const keys = resources.map((r) => `${r.kind}/${r.metadata.namespace ?? ''}/${r.metadata.name}`);
    expect(new Set(keys).size).toBe(keys.length);
  });

  it('has a Deployment whose selector, probes, ports and shutdown timing agree with the app', () => {
    const deployment = findResource(resources, 'Deployment', 'ssehub');
    const pod = deployment.spec.template;
    expect(matches(deployment.spec.selector.matchLabels, pod.metadata.labels)).toBe(true);
    expect(deployment.spec.replicas).toBeUndefined();
    expect(deployment.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);

    const container = hubContainer(resources);
    const env = containerEnv(resources, container);
    const portName = 'http';
    const port = (container.ports as Obj[]).find((p) => p.name === portName);
    const config = loadConfig(env);
    expect(port?.containerPort).toBe(config.port);
    expect(config.port).toBe(DEFAULT_PORT);

    expect(container.livenessProbe.httpGet).toEqual({ path: '/livez', port: portName });
    expect(container.readinessProbe.httpGet).toEqual({ path: '/readyz', port: portName });
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
      const path = container[probe]?.httpGet?.path;
      if (path !== undefined) expect(ops).toContain(path);
    }

    const preStop = container.lifecycle.preStop;
    expect(Object.keys(preStop)).toEqual(['sleep']);
    expect(preStop.sleep.seconds).toBe(5);
    const { drainMs } = config;
    const grace = pod.spec.terminationGracePeriodSeconds as number;
    // preStop, then the drain, then closing the server and Redis: at least 10 s of margin.
    expect(grace).toBeGreaterThanOrEqual(preStop.sleep.seconds + drainMs / 1000 + 10);
  });

  it('runs the hub locked down, with requests and limits, spread across zones and nodes', () => {
    for (const deployment of resources.filter((r) => r.kind === 'Deployment')) {
      const spec = deployment.spec.template.spec;
      expect(spec.securityContext.runAsNonRoot).toBe(true);
      expect(spec.securityContext.seccompProfile).toEqual({ type: 'RuntimeDefault' });
      for (const c of spec.containers as Obj[]) {
        expect(c.securityContext).toMatchObject({
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ['ALL'] },
        });
        for (const key of ['requests', 'limits']) {
          expect(c.resources[key].cpu).toBeDefined();
          expect(c.resources[key].memory).toBeDefined();
        }
      }
    }
    const hubPod = findResource(resources, 'Deployment', 'ssehub').spec.template;
    expect(hubPod.spec.securityContext.runAsUser).toBeGreaterThan(0);
    const dockerUser = /^USER\s+(\d+)/m.exec(readText('Dockerfile'))?.[1];
    expect(String(hubPod.spec.securityContext.runAsUser)).toBe(dockerUser);
    const spread = hubPod.spec.topologySpreadConstraints as Obj[];
    expect(spread.map((s) => s.topologyKey).sort()).toEqual(['kubernetes.io/hostname', 'topology.kubernetes.io/zone']);
    for (const s of spread) expect(matches(s.labelSelector.matchLabels, hubPod.metadata.labels)).toBe(true);
  });

  it('sets only variables the hub reads, and a configuration the hub accepts', () => {
    const container = hubContainer(resources);
    const env = containerEnv(resources, container);
    expect(Object.keys(env).length).toBeGreaterThan(0);
    for (const key of Object.keys(env))
      expect({ key, known: CONFIG_VARIABLE_SET.has(key) }).toEqual({ key, known: true });
    for (const cm of resources.filter((r) => r.kind === 'ConfigMap' || r.kind === 'Secret')) {
      for (const key of Object.keys({ ...cm.data, ...cm.stringData })) {
        expect({ key, known: CONFIG_VARIABLE_SET.has(key) }).toEqual({ key, known: true });
      }
    }
    const config = loadConfig(env);
    expect(config.production).toBe(true);
    expect(config.transport).toBe('redis');
  });

  it('selects the hub pods from the Service, PDB, autoscaler and monitoring', () => {
    const deployment = findResource(resources, 'Deployment', 'ssehub');
    const podLabels = deployment.spec.template.metadata.labels as Record<string, string>;
    const container = hubContainer(resources);
    const service = findResource(resources, 'Service', 'ssehub');
    expect(matches(service.spec.selector, podLabels)).toBe(true);
    const containerPorts = (container.ports as Obj[]).map((p) => p.name);
    for (const p of service.spec.ports as Obj[]) expect(containerPorts).toContain(p.targetPort);
    expect((service.spec.ports as Obj[]).find((p) => p.name === 'http')?.port).toBe(80);
    expect((service.spec.ports as Obj[]).map((p) => p.name)).toContain('metrics');

    const pdb = findResource(resources, 'PodDisruptionBudget', 'ssehub');
    expect(pdb.apiVersion).toBe('policy/v1');
    expect(pdb.spec.maxUnavailable).toBe(1);
    expect(matches(pdb.spec.selector.matchLabels, podLabels)).toBe(true);

    const autoscalers = resources.filter((r) => r.kind === 'HorizontalPodAutoscaler' || r.kind === 'ScaledObject');
    // Exactly one owner of the replica count: KEDA brings its own HPA.
    expect(autoscalers).toHaveLength(1);
    const autoscaler = autoscalers[0] as Obj;
    expect(autoscaler.spec.scaleTargetRef).toMatchObject({ kind: 'Deployment', name: deployment.metadata.name });
    const behavior =
      autoscaler.kind === 'ScaledObject'
        ? autoscaler.spec.advanced.horizontalPodAutoscalerConfig.behavior
        : autoscaler.spec.behavior;
    expect(behavior.scaleDown.stabilizationWindowSeconds).toBeGreaterThanOrEqual(900);
    if (autoscaler.kind === 'HorizontalPodAutoscaler') expect(autoscaler.apiVersion).toBe('autoscaling/v2');

    for (const monitor of resources.filter((r) => r.kind === 'ServiceMonitor')) {
      expect(matches(monitor.spec.selector.matchLabels, service.metadata.labels)).toBe(true);
      const servicePorts = (service.spec.ports as Obj[]).map((p) => p.name);
      for (const endpoint of monitor.spec.endpoints as Obj[]) {
        expect(servicePorts).toContain(endpoint.port);
        expect(ops).toContain(endpoint.path);
      }
      expect(monitor.metadata.labels.release).toBeDefined();
    }
  });

  it('names the image compose builds, tagged with the package version', () => {
    const { version } = JSON.parse(readText('package.json')) as { version: string };
    const image = splitImage(hubContainer(resources).image as string);
    expect(image.tag).toBe(version);
    const composeImage = /^\s+image:\s*(ssehub:\S+)/m.exec(readText('docker-compose.yml'))?.[1];
    const baseImage = splitImage(hubContainer(renders[0]?.resources as Obj[]).image as string);
    expect(`${baseImage.name}:${baseImage.tag}`).toBe(composeImage);
    if (render.dir === PRODUCTION) expect(image.name).not.toBe(baseImage.name);
  });

  it('routes streams with no request timeout and keeps ops endpoints private', () => {
    const service = findResource(resources, 'Service', 'ssehub');
    const servicePorts = service.spec.ports as Obj[];
    const publicPaths = [...streamPaths(), ...EVENT_KINDS.map((k) => `/api/v1/webhook/${k}`)];
    const underPrefix = (prefix: string, path: string): boolean =>
      path === prefix || path.startsWith(`${prefix.replace(/\/$/, '')}/`);
    for (const route of resources.filter((r) => r.kind === 'HTTPRoute')) {
      expect(route.apiVersion).toBe('gateway.networking.k8s.io/v1');
      for (const rule of route.spec.rules as Obj[]) {
        expect(rule.timeouts).toEqual({ request: '0s', backendRequest: '0s' });
        for (const ref of rule.backendRefs as Obj[]) {
          expect(ref.name).toBe(service.metadata.name);
          expect(servicePorts.find((p) => p.name === 'http')?.port).toBe(ref.port);
        }
      }
      const prefixes = (route.spec.rules as Obj[]).flatMap((r) =>
        (r.matches as Obj[]).map((m) => m.path.value as string),
      );
      for (const path of publicPaths) expect(prefixes.some((p) => underPrefix(p, path))).toBe(true);
      for (const path of ops) expect(prefixes.some((p) => underPrefix(p, path))).toBe(false);
    }
    for (const ingress of resources.filter((r) => r.kind === 'Ingress')) {
      expect(ingress.metadata.annotations).toMatchObject({
        'nginx.ingress.kubernetes.io/proxy-buffering': 'off',
        'nginx.ingress.kubernetes.io/proxy-read-timeout': '3600',
        'nginx.ingress.kubernetes.io/proxy-send-timeout': '3600',
      });
      const paths = (ingress.spec.rules as Obj[]).flatMap((r) => r.http.paths as Obj[]);
      for (const p of paths) {
        expect(p.backend.service.name).toBe(service.metadata.name);
        expect(servicePorts.map((sp) => sp.name)).toContain(p.backend.service.port.name);
      }
      for (const path of publicPaths) expect(paths.some((p) => underPrefix(p.path, path))).toBe(true);
      for (const path of ops) expect(paths.some((p) => underPrefix(p.path, path))).toBe(false);
    }
  });

  it('scales on a metric the hub exports (KEDA)', () => {
    const metricNames = hubMetricNames();
    for (const scaled of resources.filter((r) => r.kind === 'ScaledObject')) {
      for (const trigger of scaled.spec.triggers as Obj[]) {
        expect(trigger.type).toBe('prometheus');
        const names = [...String(trigger.metadata.query).matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)\{/g)].map((m) => m[1]);
        expect(names).toEqual(['sse_active_connections']);
        expect(metricNames).toContain(names[0]);
        expect(Number(trigger.metadata.threshold)).toBeGreaterThan(0);
        const namespace = /namespace="([^"]+)"/.exec(trigger.metadata.query)?.[1];
        if (namespace !== undefined) expect(namespace).toBe(scaled.metadata.namespace);
      }
    }
  });
});

describe('overlays', () => {
  const dev = renders.find((r) => r.name === 'dev')?.resources as Obj[];
  const production = renders.find((r) => r.name === 'production')?.resources as Obj[];

  it('dev runs its own Redis, which the generated Secret points at', () => {
    const env = containerEnv(dev, hubContainer(dev));
    const redisService = findResource(dev, 'Service', new URL(env.REDIS_URL as string).hostname);
    const redis = findResource(dev, 'Deployment', 'redis');
    expect(matches(redisService.spec.selector, redis.spec.template.metadata.labels)).toBe(true);
    expect(
      matches(
        redisService.spec.selector,
        hubContainer(dev) && findResource(dev, 'Deployment', 'ssehub').spec.template.metadata.labels,
      ),
    ).toBe(false);
    const redisPort = (redisService.spec.ports as Obj[])[0] as Obj;
    expect(Number(new URL(env.REDIS_URL as string).port)).toBe(redisPort.port);
    expect((redis.spec.template.spec.containers[0].ports as Obj[]).map((p) => p.name)).toContain(redisPort.targetPort);
    expect(env.SSEHUB_JWT_SECRET).toMatch(/dev/i);
  });

  it('production expects an external Redis and key in a Secret it does not create', () => {
    const container = hubContainer(production);
    const secretName = (container.envFrom as Obj[]).find((e) => e.secretRef)?.secretRef.name;
    expect(production.some((r) => r.kind === 'Secret')).toBe(false);
    expect(production.some((r) => r.metadata.name === 'redis')).toBe(false);
    const example = readYamlDocs(PRODUCTION_SECRET_EXAMPLE);
    expect(example).toHaveLength(1);
    const secret = example[0] as Obj;
    expect(() => validateObject(secret)).not.toThrow();
    expect(secret.metadata.name).toBe(secretName);
    expect(secret.metadata.namespace).toBe(readKustomization(PRODUCTION).namespace);
    expect(Object.keys(secret.stringData).sort()).toEqual(['REDIS_URL', 'SSEHUB_JWT_SECRET']);
    for (const value of Object.values(secret.stringData as Record<string, string>)) expect(value).toMatch(/REPLACE/);
  });

  it('every object lands in the overlay namespace, which the overlay creates', () => {
    for (const render of deployable) {
      const namespace = readKustomization(render.dir).namespace;
      expect(findResource(render.resources, 'Namespace').metadata.name).toBe(namespace);
      for (const r of render.resources.filter((x) => x.kind !== 'Namespace')) {
        expect({ r: resourceKey(r), ns: r.metadata.namespace }).toEqual({ r: resourceKey(r), ns: namespace });
      }
    }
  });
});

describe('schema validation', () => {
  it('rejects objects that break the schema (the validator is not a no-op)', () => {
    const deployment = structuredClone(findResource(renders[2]?.resources as Obj[], 'Deployment', 'ssehub'));
    deployment.spec.template.spec.containers[0].ports[0].containerPort = 'http';
    expect(() => validateObject(deployment)).toThrow(/containerPort/);
    const withoutSleepSeconds = structuredClone(findResource(renders[2]?.resources as Obj[], 'Deployment', 'ssehub'));
    withoutSleepSeconds.spec.template.spec.containers[0].lifecycle.preStop.sleep = {};
    expect(() => validateObject(withoutSleepSeconds)).toThrow(/seconds/);
    const route = structuredClone(findResource(renders[2]?.resources as Obj[], 'HTTPRoute'));
    route.spec.rules[0].timeouts.request = 'never';
    expect(() => validateObject(route)).toThrow(/timeouts/);
    const scaled = structuredClone(findResource(renders[3]?.resources as Obj[], 'ScaledObject'));
    delete scaled.spec.scaleTargetRef.name;
    expect(() => validateObject(scaled)).toThrow(/name/);
    expect(() => validateObject({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x' } })).toThrow(/no schema/);
  });
});

/** Where kubectl (with its built-in kustomize) is installed, the renderer above must agree with it. */
const kubectl = ((): boolean => {
  try {
    execFileSync('kubectl', ['kustomize', '--help'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
})();

(kubectl ? describe : describe.skip)('kubectl kustomize agrees with the renderer', () => {
  function normalize(resources: Obj[], generated: string[]): Obj[] {
    const hashed = new RegExp(`^(${generated.join('|')})-[a-z0-9]{10}$`);
    const walk = (value: unknown): unknown => {
      if (typeof value === 'string') return generated.length > 0 ? value.replace(hashed, '$1') : value;
      if (Array.isArray(value)) return value.map(walk);
      if (isObject(value)) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, walk(v)]));
      return value;
    };
    return resources.map((r) => walk(r) as Obj).sort((a, b) => resourceKey(a).localeCompare(resourceKey(b)));
  }

  it.each(deployable.map((r) => [r.name, r] as const))('%s', (_, render) => {
    let dir = render.dir;
    let temp: string | undefined;
    if (render.wrapper !== undefined) {
      // kustomize refuses absolute paths: refer to the repository relatively from the temp dir.
      temp = mkdtempSync(join(tmpdir(), 'ssehub-kustomize-'));
      const from = temp;
      const wrapper = {
        apiVersion: 'kustomize.config.k8s.io/v1beta1',
        kind: 'Kustomization',
        ...render.wrapper,
        resources: [relative(from, render.dir)],
        components: (render.wrapper.components ?? []).map((c) => relative(from, c)),
      };
      writeFileSync(join(temp, 'kustomization.yaml'), stringify(wrapper));
      dir = temp;
    }
    try {
      const output = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8', timeout: 20_000 });
      const theirs = parseAllDocuments(output).map((d) => d.toJS() as Obj);
      const generated = render.resources
        .filter((r) => r.kind === 'ConfigMap' || r.kind === 'Secret')
        .map((r) => r.metadata.name as string);
      expect(normalize(theirs, generated)).toEqual(normalize(render.resources, []));
    } finally {
      if (temp) rmSync(temp, { recursive: true, force: true });
    }
  });
});
