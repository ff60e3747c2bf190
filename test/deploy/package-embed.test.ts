/**
 * The published package as an embedder gets it: `npm pack` of this repository installed into
 * copies of examples/koa-embed and examples/express-embed, each run as its own process and
 * checked end to end over HTTP, plus the package's shape (files, exports, optional peers).
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startNodeApp, type NodeApp } from '../helpers/node-app';
import { openStream, type SseStream } from '../helpers/sse-client';
import { uid, until } from '../helpers/wait';
import { ROOT, repoPath } from './helpers';

const run = promisify(execFile);

/** The subpaths README.md and package.json document; nothing else may be importable. */
const DOCUMENTED_EXPORTS = [
  '.',
  './koa',
  './redis',
  './postgres',
  './publisher',
  './client',
  './client/worker',
  './package.json',
];

/**
 * npm's own variables from an enclosing `npm test` would point a nested `npm install` at this
 * repository (npm_config_local_prefix); only where npm finds its cache and registry is kept.
 */
function npmEnv(): NodeJS.ProcessEnv {
  const keep = /^npm_config_(cache|userconfig|globalconfig|cafile|registry|https?_proxy|proxy|noproxy|strict_ssl)$/i;
  return Object.fromEntries(
    Object.entries(process.env).filter(([key]) => !(/^npm_/i.test(key) || key === 'INIT_CWD') || keep.test(key)),
  );
}

async function npm(cwd: string, args: string[]): Promise<string> {
  const { stdout } = await run('npm', args, { cwd, env: npmEnv(), maxBuffer: 16 * 1024 * 1024 });
  return stdout;
}

/** Runs an ES module script with node in `cwd` (where the package is installed); its stdout parsed as JSON. */
async function nodeJson<T>(cwd: string, script: string): Promise<T> {
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd });
  return JSON.parse(stdout) as T;
}

async function login(app: NodeApp, user: string): Promise<string> {
  const res = await fetch(`${app.url}/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ user }),
  });
  expect(res.status).toBe(204);
  const [cookie] = res.headers.getSetCookie();
  if (cookie === undefined) throw new Error('login set no cookie');
  return cookie.split(';')[0] as string;
}

interface Todo {
  id: string;
  title: string;
  eventId: string;
}

async function addTodo(app: NodeApp, cookie: string, title: string): Promise<Todo> {
  const res = await fetch(`${app.url}/todos`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Cookie: cookie },
    body: JSON.stringify({ title }),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as Todo;
}

/** The frame exactly as the wire contract writes it, and as the client parsed it. */
async function expectFrame(stream: SseStream, id: string, data: string): Promise<void> {
  const [event] = await stream.waitForEvents(1);
  expect(event).toMatchObject({ id, data });
  expect(stream.raw()).toContain(`id:${id}\ndata:${data}\n\n`);
}

let work: string;
let koaDir: string;
let expressDir: string;
let bareDir: string;
let packedFiles: string[];

beforeAll(async () => {
  // The pack below skips `prepack` (the build) to stay quick: `npm test` has just built dist/.
  if (!existsSync(repoPath('dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  work = mkdtempSync(join(tmpdir(), 'ssehub-embed-'));
  const [packed] = JSON.parse(
    await npm(ROOT, ['pack', '--ignore-scripts', '--json', '--pack-destination', work]),
  ) as Array<{ filename: string; files: Array<{ path: string }> }>;
  if (packed === undefined) throw new Error('npm pack reported no package');
  packedFiles = packed.files.map((file) => file.path);
  const tarball = join(work, packed.filename);

  koaDir = join(work, 'koa-embed');
  expressDir = join(work, 'express-embed');
  bareDir = join(work, 'bare');
  cpSync(repoPath('examples', 'koa-embed'), koaDir, { recursive: true });
  cpSync(repoPath('examples', 'express-embed'), expressDir, { recursive: true });
  mkdirSync(bareDir);
  writeFileSync(join(bareDir, 'package.json'), JSON.stringify({ name: 'bare', private: true }));
  const install = ['install', tarball, '--no-audit', '--no-fund', '--prefer-offline', '--no-package-lock'];
  await Promise.all([koaDir, expressDir, bareDir].map((dir) => npm(dir, install)));
}, 120_000);

afterAll(() => {
  if (work !== undefined) rmSync(work, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('holds the build, README.md, LICENSE and CHANGELOG.md, and no sources, tests or source maps', () => {
    for (const file of ['dist/index.js', 'dist/index.d.ts', 'dist/koa.js', 'README.md', 'LICENSE', 'CHANGELOG.md']) {
      expect(packedFiles).toContain(file);
    }
    expect(packedFiles.filter((file) => /^(src|test)\//.test(file) || file.endsWith('.map'))).toEqual([]);
    // Packed without scripts above; a real `npm pack` / `npm publish` must still build first.
    const manifest = JSON.parse(readFileSync(repoPath('package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(manifest.scripts.prepack).toBe('npm run build');
  });

  it('exposes only the documented subpaths, to require and to import', async () => {
    const result = await nodeJson<{ exports: string[]; resolved: string[]; refused: Record<string, string> }>(
      koaDir,
      `
      import { createRequire } from 'node:module';
      import { readFileSync } from 'node:fs';
      const require = createRequire(process.cwd() + '/');
      const manifest = JSON.parse(readFileSync('node_modules/ssehub/package.json', 'utf8'));
      const resolved = ['ssehub', 'ssehub/koa', 'ssehub/redis', 'ssehub/postgres', 'ssehub/publisher']
        .map((id) => require.resolve(id).replace(/^.*node_modules\\/ssehub\\//, ''));
      const refused = {};
      for (const id of ['ssehub/dist/hub', 'ssehub/dist/index.js', 'ssehub/dist/koa']) {
        try { require(id); refused['require ' + id] = 'loaded'; } catch (err) { refused['require ' + id] = err.code; }
        try { await import(id); refused['import ' + id] = 'loaded'; } catch (err) { refused['import ' + id] = err.code; }
      }
      console.log(JSON.stringify({ exports: Object.keys(manifest.exports), resolved, refused }));
      `,
    );
    expect(result.exports.sort()).toEqual([...DOCUMENTED_EXPORTS].sort());
    expect(result.resolved).toEqual([
      'dist/index.js',
      'dist/koa.js',
      'dist/redis.js',
      'dist/postgres.js',
      'dist/publisher.js',
    ]);
    expect(Object.values(result.refused)).toEqual(Array(6).fill('ERR_PACKAGE_PATH_NOT_EXPORTED'));
  });

  it('loads no Redis client in a memory-only host, where ioredis is not installed', async () => {
    const result = await nodeJson<{ installed: boolean; loaded: string[]; names: string[] }>(
      koaDir,
      `
      import { createRequire } from 'node:module';
      const require = createRequire(process.cwd() + '/');
      let installed = true;
      try { require.resolve('ioredis'); } catch { installed = false; }
      const ssehub = require('ssehub');
      require('ssehub/koa');
      const loaded = Object.keys(require.cache).filter((file) => /node_modules[\\\\/]ioredis[\\\\/]/.test(file));
      // Named ESM imports of the CommonJS build must work too.
      const { createHub, MemoryTransport, AuthError, EventRejectedError } = await import('ssehub');
      const names = [createHub, MemoryTransport, AuthError, EventRejectedError].map((value) => typeof value);
      console.log(JSON.stringify({ installed, loaded, names, keys: Object.keys(ssehub).length }));
      `,
    );
    expect(result).toMatchObject({ installed: false, loaded: [], names: Array(4).fill('function') });
  });

  it('loads with neither ioredis nor pg installed, and loads neither', async () => {
    const script = `
      import { createRequire } from 'node:module';
      const require = createRequire(process.cwd() + '/');
      require('ssehub');
      const loaded = Object.keys(require.cache).filter((file) => /node_modules[\\\\/](ioredis|pg)[\\\\/]/.test(file));
      console.log(JSON.stringify({ loaded }));
      `;
    // The bare host has neither peer; the example has pg (the workaround), which must stay unloaded.
    expect(await nodeJson(bareDir, script)).toEqual({ loaded: [] });
    expect(await nodeJson(koaDir, script)).toEqual({ loaded: [] });
  });
});

describe('examples/koa-embed from the tarball', () => {
  it('delivers the AG-UI event a route publishes to the logged-in user, byte for byte', async () => {
    const app = await startNodeApp(koaDir, 'server.mjs', /koa-embed listening/, { SESSION_SECRET: uid('secret') });
    try {
      const anonymous = await openStream(app.url, '/api/v1/stream/agui');
      expect(anonymous.status).toBe(401);
      await anonymous.ended;
      expect(JSON.parse(anonymous.raw())).toEqual({ error: expect.any(String) });

      const cookie = await login(app, uid('koa'));
      const stream = await openStream(app.url, '/api/v1/stream/agui', { cookie });
      try {
        expect(stream.status).toBe(200);
        expect(stream.headers['content-type']).toMatch(/^text\/event-stream/);
        const todo = await addTodo(app, cookie, 'buy "milk" ✓');
        await expectFrame(
          stream,
          todo.eventId,
          JSON.stringify({
            type: 'STATE_DELTA',
            delta: [{ op: 'add', path: '/todos/-', value: { id: todo.id, title: todo.title } }],
          }),
        );
      } finally {
        stream.close();
      }
      expect(await app.stop()).toBe(0);
    } finally {
      await app.stop();
    }
  });
});

describe('examples/express-embed from the tarball', () => {
  it('serves the stream through hub.serveStream, delivers a published event and closes it on logout', async () => {
    const app = await startNodeApp(expressDir, 'server.mjs', /express-embed listening/);
    try {
      const cookie = await login(app, uid('express'));
      const stream = await openStream(app.url, '/events', { cookie });
      try {
        expect(stream.status).toBe(200);
        const todo = await addTodo(app, cookie, 'eggs');
        await expectFrame(
          stream,
          todo.eventId,
          JSON.stringify({ type: 'CUSTOM', name: 'todo_added', value: { id: todo.id, title: 'eggs' } }),
        );
        const me = await fetch(`${app.url}/me`, { headers: { Cookie: cookie } });
        expect(((await me.json()) as { streams: number }).streams).toBe(1);

        const logout = await fetch(`${app.url}/logout`, { method: 'POST', headers: { Cookie: cookie } });
        expect(logout.status).toBe(204);
        await stream.ended;
        await until(() => /closed: host_closed/.test(app.output()), 2000, 'the app to log the closed stream');
        expect((await fetch(`${app.url}/me`, { headers: { Cookie: cookie } })).status).toBe(401);
      } finally {
        stream.close();
      }
      expect(await app.stop()).toBe(0);
    } finally {
      await app.stop();
    }
  });
});
