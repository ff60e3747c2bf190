/**
 * Shared readers for the deployment checks: YAML documents, a small kustomize renderer,
 * an nginx config parser, a Dockerfile parser, and the routes and metrics of a real hub.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { CONFIG_VARIABLES, loadConfig } from '../../src/config';
import { STREAM_ROUTES } from '../../src/http/stream-routes';
import { createLogger } from '../../src/log';
import { HubMetrics } from '../../src/metrics';
import { HubServer } from '../../src/server';

export const ROOT = resolve(__dirname, '..', '..');

export type Obj = Record<string, any>;

export function repoPath(...parts: string[]): string {
  return join(ROOT, ...parts);
}

export function readText(...parts: string[]): string {
  return readFileSync(repoPath(...parts), 'utf8');
}

export function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function clone<T>(value: T): T {
  return structuredClone(value);
}

/** Every non-empty document of a YAML file; throws on YAML errors (and on duplicate keys). */
export function readYamlDocs(file: string): Obj[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { merge: true, uniqueKeys: true });
  const out: Obj[] = [];
  for (const doc of docs) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS({ maxAliasCount: 100 }) as unknown;
    if (value === null || value === undefined) continue;
    if (!isObject(value)) throw new Error(`${file}: a document is not a mapping`);
    out.push(value);
  }
  return out;
}

export function readYaml(...parts: string[]): Obj {
  return parse(readText(...parts), { merge: true, uniqueKeys: true }) as Obj;
}

// ---------------------------------------------------------------------------------------
// The hub's configuration and routes, as the code defines them.

export const CONFIG_VARIABLE_SET: ReadonlySet<string> = new Set(CONFIG_VARIABLES);

export const DEFAULT_PORT = loadConfig({}).port;

/** GET paths mounted in a router source file (`router.get('/x', ...)`). */
export function routerPaths(file: string, method = 'get'): string[] {
  const source = readText(file);
  const pattern = new RegExp(`router\\.${method}\\(\\s*'([^']+)'`, 'g');
  return [...source.matchAll(pattern)].map((m) => m[1] as string);
}

/** Stream paths from the hub's route table. */
export function streamPaths(): string[] {
  return STREAM_ROUTES.map((route) => route.path);
}

/** Names of every metric the hub defines (with no prefix). */
export function hubMetricNames(): string[] {
  const metrics = new HubMetrics({
    connections: () => 0,
    connectedUsers: () => 0,
    transportListening: () => false,
    outboundBytes: () => 0,
  });
  return metrics.registry.getMetricsAsArray().map((metric) => metric.name);
}

// ---------------------------------------------------------------------------------------
// A small kustomize: resources, components, config map / secret generators, strategic
// merge patches (including `$patch: delete`), labels, images and namespace. Enough for
// the files in k8s/, and compared with `kubectl kustomize` where that is installed.

export interface Kustomization extends Obj {
  kind?: string;
  resources?: string[];
  components?: string[];
  patches?: Array<{ path?: string; patch?: string; target?: Obj }>;
  configMapGenerator?: Generator[];
  secretGenerator?: Generator[];
  labels?: Array<{ pairs: Record<string, string>; includeSelectors?: boolean; includeTemplates?: boolean }>;
  images?: Array<{ name: string; newName?: string; newTag?: string; digest?: string }>;
  namespace?: string;
}

interface Generator {
  name: string;
  behavior?: 'create' | 'merge' | 'replace';
  literals?: string[];
  envs?: string[];
  files?: string[];
  type?: string;
}

export const KUSTOMIZATION_FILES = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'];

export function kustomizationFile(dir: string): string {
  for (const name of KUSTOMIZATION_FILES) {
    const file = join(dir, name);
    if (existsSync(file)) return file;
  }
  throw new Error(`no kustomization file in ${dir}`);
}

export function readKustomization(dir: string): Kustomization {
  const docs = readYamlDocs(kustomizationFile(dir));
  if (docs.length !== 1) throw new Error(`${dir}: expected one kustomization document`);
  return docs[0] as Kustomization;
}

const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'CustomResourceDefinition',
  'PriorityClass',
  'StorageClass',
  'IngressClass',
  'GatewayClass',
  'PersistentVolume',
]);

const WORKLOADS = new Set(['Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'Job']);

export function resourceKey(r: Obj): string {
  return `${r.kind}/${r.metadata?.name}`;
}

function mergeKeyFor(items: Obj[]): string | undefined {
  for (const key of ['name', 'containerPort', 'port', 'mountPath', 'ip']) {
    if (items.length > 0 && items.every((item) => isObject(item) && item[key] !== undefined)) return key;
  }
  return undefined;
}

/** Strategic merge: maps merge, lists of named items merge by name, null deletes, the rest replaces. */
export function strategicMerge(target: Obj, patch: Obj): Obj {
  for (const [key, value] of Object.entries(patch)) {
    if (key === '$patch') continue;
    const current = target[key];
    if (value === null) {
      delete target[key];
    } else if (isObject(value) && isObject(current)) {
      strategicMerge(current, value);
    } else if (Array.isArray(value) && Array.isArray(current)) {
      const mergeKey = mergeKeyFor(value as Obj[]);
      if (mergeKey !== undefined && mergeKeyFor(current as Obj[]) === mergeKey) {
        for (const item of value as Obj[]) {
          const existing = (current as Obj[]).find((c) => c[mergeKey] === item[mergeKey]);
          if (existing) strategicMerge(existing, item);
          else current.push(clone(item));
        }
      } else {
        target[key] = clone(value);
      }
    } else {
      target[key] = clone(value);
    }
  }
  return target;
}

function generatorData(dir: string, g: Generator): Record<string, string> {
  const data: Record<string, string> = {};
  const put = (line: string, where: string): void => {
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`${where}: "${line}" is not KEY=VALUE`);
    data[line.slice(0, eq)] = line.slice(eq + 1);
  };
  for (const literal of g.literals ?? []) put(literal, `${dir} ${g.name} literals`);
  for (const envFile of g.envs ?? []) {
    for (const line of readFileSync(join(dir, envFile), 'utf8').split('\n')) {
      if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
      put(line, join(dir, envFile));
    }
  }
  for (const file of g.files ?? []) {
    const eq = file.indexOf('=');
    const key = eq > 0 ? file.slice(0, eq) : (file.split('/').pop() as string);
    data[key] = readFileSync(join(dir, eq > 0 ? file.slice(eq + 1) : file), 'utf8');
  }
  return data;
}

function runGenerators(dir: string, k: Kustomization, resources: Obj[]): void {
  const kinds: Array<['ConfigMap' | 'Secret', Generator[] | undefined]> = [
    ['ConfigMap', k.configMapGenerator],
    ['Secret', k.secretGenerator],
  ];
  for (const [kind, generators] of kinds) {
    for (const g of generators ?? []) {
      const plain = generatorData(dir, g);
      const data =
        kind === 'Secret'
          ? Object.fromEntries(Object.entries(plain).map(([key, v]) => [key, Buffer.from(v).toString('base64')]))
          : plain;
      const existing = resources.find((r) => r.kind === kind && r.metadata?.name === g.name);
      const behavior = g.behavior ?? 'create';
      if (behavior === 'create') {
        if (existing) throw new Error(`${dir}: ${kind} ${g.name} generated twice (use behavior: merge)`);
        const generated: Obj = { apiVersion: 'v1', kind, metadata: { name: g.name }, data };
        if (kind === 'Secret') generated.type = g.type ?? 'Opaque';
        resources.push(generated);
      } else {
        if (!existing) throw new Error(`${dir}: ${kind} ${g.name} has behavior ${behavior} but nothing to ${behavior}`);
        existing.data = behavior === 'merge' ? { ...existing.data, ...data } : data;
      }
    }
  }
}

function readPatch(dir: string, p: { path?: string; patch?: string }): Obj[] {
  if (p.path !== undefined) return readYamlDocs(join(dir, p.path));
  if (p.patch !== undefined) return [parse(p.patch) as Obj];
  throw new Error(`${dir}: a patch has neither path nor patch`);
}

function matchesTarget(r: Obj, target: Obj | undefined, patch: Obj): boolean {
  if (target === undefined) return r.kind === patch.kind && r.metadata?.name === patch.metadata?.name;
  if (target.kind !== undefined && r.kind !== target.kind) return false;
  if (target.name !== undefined && r.metadata?.name !== target.name) return false;
  return true;
}

function podTemplateContainers(r: Obj): Obj[] {
  const spec = r.spec?.template?.spec;
  if (!isObject(spec)) return [];
  return [...((spec.containers as Obj[]) ?? []), ...((spec.initContainers as Obj[]) ?? [])];
}

export function splitImage(image: string): { name: string; tag?: string; digest?: string } {
  let rest = image;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) return { name: rest.slice(0, colon), tag: rest.slice(colon + 1), digest };
  return { name: rest, digest };
}

function runTransformers(dir: string, k: Kustomization, input: Obj[]): Obj[] {
  let resources = input;
  for (const p of k.patches ?? []) {
    for (const patch of readPatch(dir, p)) {
      const targets = resources.filter((r) => matchesTarget(r, p.target, patch));
      if (targets.length === 0) throw new Error(`${dir}: patch for ${resourceKey(patch)} matches no resource`);
      if (patch.$patch === 'delete') {
        resources = resources.filter((r) => !targets.includes(r));
      } else {
        for (const t of targets) strategicMerge(t, patch);
      }
    }
  }
  for (const entry of k.labels ?? []) {
    for (const r of resources) {
      r.metadata.labels = { ...r.metadata.labels, ...entry.pairs };
      if (WORKLOADS.has(r.kind)) {
        if (entry.includeTemplates || entry.includeSelectors) {
          r.spec.template.metadata ??= {};
          r.spec.template.metadata.labels = { ...r.spec.template.metadata.labels, ...entry.pairs };
        }
        if (entry.includeSelectors) r.spec.selector.matchLabels = { ...r.spec.selector.matchLabels, ...entry.pairs };
      }
      if (entry.includeSelectors && r.kind === 'Service') r.spec.selector = { ...r.spec.selector, ...entry.pairs };
      if (entry.includeSelectors && r.kind === 'PodDisruptionBudget') {
        r.spec.selector.matchLabels = { ...r.spec.selector.matchLabels, ...entry.pairs };
      }
    }
  }
  for (const image of k.images ?? []) {
    for (const r of resources) {
      for (const c of podTemplateContainers(r)) {
        const current = splitImage(c.image as string);
        if (current.name !== image.name) continue;
        const name = image.newName ?? current.name;
        const tag = image.newTag ?? current.tag;
        const digest = image.digest ?? current.digest;
        c.image = `${name}${tag !== undefined && image.digest === undefined ? `:${tag}` : ''}${digest !== undefined ? `@${digest}` : ''}`;
      }
    }
  }
  if (k.namespace !== undefined) {
    for (const r of resources) if (!CLUSTER_SCOPED.has(r.kind)) r.metadata.namespace = k.namespace;
  }
  return resources;
}

/** Own resources added to `base`, then components, generators and transformers, as kustomize orders them. */
function build(dir: string, k: Kustomization, base: Obj[]): Obj[] {
  let resources = [...base];
  for (const entry of k.resources ?? []) {
    const path = resolve(dir, entry);
    if (statSync(path).isDirectory()) resources.push(...kustomize(path));
    else resources.push(...readYamlDocs(path).map(clone));
  }
  for (const component of (k.components ?? []).map((c) => resolve(dir, c))) {
    const ck = readKustomization(component);
    if (ck.kind !== 'Component')
      throw new Error(`${component} is used as a component but its kind is ${String(ck.kind)}`);
    resources = build(component, ck, resources);
  }
  runGenerators(dir, k, resources);
  return runTransformers(dir, k, resources);
}

/**
 * Renders a kustomization directory, optionally inside `wrapper`: an overlay whose only
 * resource is the directory (components, namespace, ... as in any kustomization).
 */
export function kustomize(dir: string, wrapper?: Kustomization): Obj[] {
  const k = readKustomization(dir);
  if (k.kind === 'Component') throw new Error(`${dir} is a component, not a kustomization`);
  const rendered = build(dir, k, []);
  return wrapper === undefined ? rendered : build(dir, { ...wrapper, resources: [] }, rendered);
}

export function findResource(resources: Obj[], kind: string, name?: string): Obj {
  const found = resources.filter((r) => r.kind === kind && (name === undefined || r.metadata?.name === name));
  if (found.length !== 1) throw new Error(`expected one ${kind}${name ? ` ${name}` : ''}, found ${found.length}`);
  return found[0] as Obj;
}

// ---------------------------------------------------------------------------------------
// nginx configuration: a tree of directives and blocks.

export interface NginxDirective {
  name: string;
  args: string[];
  block?: NginxDirective[];
}

export function parseNginx(text: string): NginxDirective[] {
  const tokens: string[] = [];
  let i = 0;
  while (i < text.length) {
    const ch = text[i] as string;
    if (/\s/.test(ch)) {
      i++;
    } else if (ch === '#') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (ch === '{' || ch === '}' || ch === ';') {
      tokens.push(ch);
      i++;
    } else if (ch === '"' || ch === "'") {
      let j = i + 1;
      let value = '';
      while (j < text.length && text[j] !== ch) {
        if (text[j] === '\\') j++;
        value += text[j];
        j++;
      }
      if (j >= text.length) throw new Error('unterminated string in nginx config');
      tokens.push(`\u0000${value}`);
      i = j + 1;
    } else {
      let j = i;
      while (j < text.length && !/[\s{};]/.test(text[j] as string)) j++;
      tokens.push(text.slice(i, j));
      i = j;
    }
  }
  let pos = 0;
  const unquote = (t: string): string => (t.startsWith('\u0000') ? t.slice(1) : t);
  const block = (nested: boolean): NginxDirective[] => {
    const out: NginxDirective[] = [];
    while (pos < tokens.length) {
      const token = tokens[pos] as string;
      if (token === '}') {
        if (!nested) throw new Error('unbalanced } in nginx config');
        pos++;
        return out;
      }
      if (token === '{' || token === ';') throw new Error(`unexpected ${token} in nginx config`);
      const name = token;
      pos++;
      const args: string[] = [];
      while (pos < tokens.length && tokens[pos] !== ';' && tokens[pos] !== '{') {
        if (tokens[pos] === '}') throw new Error(`directive ${name} is missing its ;`);
        args.push(unquote(tokens[pos] as string));
        pos++;
      }
      if (pos >= tokens.length) throw new Error(`directive ${name} is not terminated`);
      if (tokens[pos] === ';') {
        pos++;
        out.push({ name, args });
      } else {
        pos++;
        out.push({ name, args, block: block(true) });
      }
    }
    if (nested) throw new Error('unbalanced { in nginx config');
    return out;
  };
  return block(false);
}

export function nginxChildren(directives: NginxDirective[] | undefined, name: string): NginxDirective[] {
  return (directives ?? []).filter((d) => d.name === name);
}

export function nginxOne(directives: NginxDirective[] | undefined, name: string): NginxDirective | undefined {
  const found = nginxChildren(directives, name);
  if (found.length > 1) throw new Error(`directive ${name} appears ${found.length} times in one block`);
  return found[0];
}

// ---------------------------------------------------------------------------------------
// Dockerfile: instructions with continuation lines joined, grouped into stages.

export interface DockerInstruction {
  keyword: string;
  args: string;
  line: number;
}

export interface DockerStage {
  from: string;
  name?: string;
  instructions: DockerInstruction[];
}

export function parseDockerfile(text: string): { args: Map<string, string>; stages: DockerStage[] } {
  const instructions: DockerInstruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = (lines[i] as string).trim();
    if (line === '' || line.startsWith('#')) continue;
    const start = i + 1;
    while (line.endsWith('\\') && i + 1 < lines.length) {
      i++;
      const next = (lines[i] as string).trim();
      if (next.startsWith('#')) continue;
      line = `${line.slice(0, -1).trimEnd()} ${next}`;
    }
    const match = /^(\S+)\s*(.*)$/.exec(line);
    if (!match) continue;
    instructions.push({ keyword: (match[1] as string).toUpperCase(), args: match[2] as string, line: start });
  }
  const args = new Map<string, string>();
  const stages: DockerStage[] = [];
  for (const ins of instructions) {
    if (ins.keyword === 'FROM') {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(ins.args);
      if (!m) throw new Error(`cannot read FROM on line ${ins.line}`);
      const from = (m[1] as string).replace(/\$\{?(\w+)\}?/g, (_, name: string) => args.get(name) ?? `$${name}`);
      stages.push({ from, name: m[2], instructions: [] });
    } else if (stages.length === 0) {
      if (ins.keyword === 'ARG') {
        const [name, value] = ins.args.split('=', 2);
        if (name !== undefined && value !== undefined) args.set(name.trim(), value.trim());
      }
    } else {
      (stages[stages.length - 1] as DockerStage).instructions.push(ins);
    }
  }
  return { args, stages };
}

/** The argv of an exec-form (JSON array) instruction argument, e.g. CMD ["node", "x.js"]. */
export function execForm(args: string): string[] {
  const value = JSON.parse(args) as unknown;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new Error(`not an exec form: ${args}`);
  return value as string[];
}

// ---------------------------------------------------------------------------------------
// A real hub in this process (memory transport, random port) for live route and metric checks.

export interface LiveHub {
  url: string;
  port: number;
  secret: string;
  close(): Promise<void>;
}

export async function startHub(env: Record<string, string> = {}): Promise<LiveHub> {
  const secret = env.SSEHUB_JWT_SECRET ?? 'deploy-checks-only-secret-0123456789abcdef';
  const config = loadConfig({ ...env, SSEHUB_JWT_SECRET: secret, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent' });
  const server = new HubServer({ config, log: createLogger('silent') });
  const address = await server.listen();
  return {
    url: `http://127.0.0.1:${address.port}`,
    port: address.port,
    secret,
    close: () => server.shutdown(0),
  };
}

export interface ScrapedMetric {
  type: string;
  /** Label names seen on any sample of the metric (histograms: per sample name). */
  labels: Set<string>;
}

/** Sample names (e.g. foo_bucket, foo_count) of a Prometheus text exposition, with their label names. */
export function parseExposition(text: string): Map<string, ScrapedMetric> {
  const types = new Map<string, string>();
  const samples = new Map<string, ScrapedMetric>();
  for (const line of text.split('\n')) {
    const typeMatch = /^# TYPE (\S+) (\S+)/.exec(line);
    if (typeMatch) {
      types.set(typeMatch[1] as string, typeMatch[2] as string);
      continue;
    }
    if (line.startsWith('#') || line.trim() === '') continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!m) throw new Error(`cannot read exposition line: ${line}`);
    const name = m[1] as string;
    const family = [...types.keys()].find(
      (t) => name === t || (/^_(bucket|sum|count)$/.test(name.slice(t.length)) && name.startsWith(t)),
    );
    const entry = samples.get(name) ?? { type: types.get(family ?? name) ?? 'untyped', labels: new Set<string>() };
    for (const pair of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) entry.labels.add(pair[1] as string);
    samples.set(name, entry);
  }
  return samples;
}
