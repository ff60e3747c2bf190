import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import {
  DEFAULT_PORT,
  execForm,
  parseDockerfile,
  readText,
  repoPath,
  routerPaths,
  startHub,
  type DockerInstruction,
  type DockerStage,
} from './helpers';

const run = promisify(execFile);
const dockerfile = parseDockerfile(readText('Dockerfile'));
const finalStage = dockerfile.stages[dockerfile.stages.length - 1] as DockerStage;
const packageJson = JSON.parse(readText('package.json')) as {
  scripts: Record<string, string>;
  engines: { node: string };
  main: string;
};

function instructions(stage: DockerStage, keyword: string): DockerInstruction[] {
  return stage.instructions.filter((i) => i.keyword === keyword);
}

function healthcheckArgv(): string[] {
  const [healthcheck] = instructions(finalStage, 'HEALTHCHECK');
  const cmd = /\bCMD\s+(\[.*\])\s*$/.exec(healthcheck?.args ?? '');
  if (!cmd) throw new Error('HEALTHCHECK has no exec-form CMD');
  return execForm(cmd[1] as string);
}

describe('Dockerfile', () => {
  it('is multi-stage, on a Node LTS alpine or slim image that satisfies the engines field', () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    const minimum = /(\d+)\.(\d+)/.exec(packageJson.engines.node);
    expect(minimum).not.toBeNull();
    for (const stage of dockerfile.stages) {
      const m = /^node:(\d+)(?:\.\d+){0,2}-(alpine|slim|bookworm-slim|trixie-slim|alpine\d+\.\d+)$/.exec(stage.from);
      expect(m).not.toBeNull();
      const major = Number(m?.[1]);
      // Even majors are the LTS lines; 22 and 24 are the current ones.
      expect(major % 2).toBe(0);
      expect(major).toBeGreaterThanOrEqual(Math.max(22, Number(minimum?.[1])));
    }
  });

  it('installs dependencies and runs the build script, and copies dist/ from a named earlier stage', () => {
    const names = dockerfile.stages.map((s) => s.name);
    const build = dockerfile.stages.find((s) => instructions(s, 'RUN').some((r) => /\bnpm run build\b/.test(r.args)));
    expect(build).toBeDefined();
    expect(build).not.toBe(finalStage);
    expect(instructions(build as DockerStage, 'RUN').some((r) => /\bnpm (ci|install)\b/.test(r.args))).toBe(true);
    expect(packageJson.scripts.build).toMatch(/tsc -p tsconfig\.build\.json/);
    const tsconfigBuild = JSON.parse(readText('tsconfig.build.json')) as { compilerOptions: { outDir: string } };
    expect(tsconfigBuild.compilerOptions.outDir).toBe('dist');

    const copies = instructions(finalStage, 'COPY').filter((c) => c.args.includes('--from='));
    expect(copies.length).toBeGreaterThan(0);
    for (const copy of copies) {
      const from = /--from=(\S+)/.exec(copy.args)?.[1];
      expect(names).toContain(from);
      expect(from).not.toBe(finalStage.name);
    }
    expect(copies.some((c) => /\/dist\s+\.\/dist$/.test(c.args) || /\/dist\s+\/app\/dist$/.test(c.args))).toBe(true);
  });

  it('installs production dependencies only in the final stage', () => {
    const runs = instructions(finalStage, 'RUN').map((r) => r.args);
    expect(runs.some((r) => /\bnpm (ci|install)\b/.test(r) && /--omit=dev\b/.test(r))).toBe(true);
    expect(runs.some((r) => /\bnpm (ci|install)\b(?!.*--omit=dev)/.test(r))).toBe(false);
    // Sources are compiled in the build stage, never shipped.
    expect(
      instructions(finalStage, 'COPY').some((c) => /(^|\s)src\b/.test(c.args) && !c.args.includes('--from=')),
    ).toBe(false);
  });

  it('runs as a numeric non-root user with NODE_ENV=production', () => {
    const users = instructions(finalStage, 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = (users[users.length - 1] as DockerInstruction).args.trim();
    const [uid] = user.split(':');
    // Numeric, so that Kubernetes' runAsNonRoot can verify it.
    expect(uid).toMatch(/^\d+$/);
    expect(Number(uid)).not.toBe(0);
    const envs = instructions(finalStage, 'ENV').map((e) => e.args);
    expect(envs.some((e) => /(^|\s)NODE_ENV=production(\s|$)/.test(e))).toBe(true);
  });

  it('exposes the default port and starts dist/main.js, which src/main.ts compiles to', () => {
    expect(instructions(finalStage, 'EXPOSE').map((e) => e.args.trim())).toEqual([String(DEFAULT_PORT)]);
    const [cmd] = instructions(finalStage, 'CMD');
    expect(execForm(cmd?.args ?? '')).toEqual(['node', 'dist/main.js']);
    expect(packageJson.scripts.start).toBe('node dist/main.js');
    expect(existsSync(repoPath('src/main.ts'))).toBe(true);
    const workdirs = instructions(finalStage, 'WORKDIR');
    expect(workdirs.length).toBeGreaterThan(0);
  });

  it('has a HEALTHCHECK that asks node for a liveness path the app serves', () => {
    const argv = healthcheckArgv();
    expect(argv[0]).toBe('node');
    expect(argv[1]).toBe('-e');
    // The path is the one string literal in the script that starts with a slash.
    const paths = [...(argv[2] ?? '').matchAll(/'(\/[^']*)'/g)].map((m) => m[1]);
    expect(paths).toEqual(['/livez']);
    expect(routerPaths('src/http/ops.ts')).toContain('/livez');
  });

  it('HEALTHCHECK command succeeds against a running hub and fails when nothing listens', async () => {
    const argv = healthcheckArgv();
    const hub = await startHub();
    try {
      const ok = await run(argv[0] as string, argv.slice(1), {
        env: { ...process.env, PORT: String(hub.port) },
        timeout: 10_000,
      });
      expect(ok.stderr).toBe('');
    } finally {
      await hub.close();
    }
    // A port that was just free: the check must fail, not hang or pass.
    const free = await new Promise<number>((resolve) => {
      const probe = createServer().listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as { port: number };
        probe.close(() => resolve(port));
      });
    });
    await expect(
      run(argv[0] as string, argv.slice(1), { env: { ...process.env, PORT: String(free) }, timeout: 10_000 }),
    ).rejects.toMatchObject({ code: 1 });
  });
});

/** Docker's matching, simplified: `*` within a path segment, `**` across them, a match on any leading segments. */
function ignores(pattern: string, path: string): boolean {
  const regex = new RegExp(
    `^${pattern
      .replace(/^\//, '')
      .replace(/[.+^${}()|[\]\\]/g, '\\$&')
      .replace(/\*\*/g, '\u0000')
      .replace(/\*/g, '[^/]*')
      .replace(/\?/g, '[^/]')
      // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL stands in for "**" while single "*" is rewritten
      .replace(/\u0000/g, '.*')}(/.*)?$`,
  );
  return regex.test(path);
}

describe('.dockerignore', () => {
  const patterns = readFileSync(repoPath('.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));

  it('keeps local builds, dependencies, VCS data and tests out of the context', () => {
    for (const path of [
      'node_modules/jose/package.json',
      'dist/main.js',
      '.git/HEAD',
      'test/deploy/helpers.ts',
      'README.md',
    ]) {
      expect({ path, ignored: patterns.some((p) => ignores(p, path)) }).toEqual({ path, ignored: true });
    }
  });

  it('keeps every file the Dockerfile copies from the context', () => {
    const copied = dockerfile.stages
      .flatMap((s) => instructions(s, 'COPY'))
      .filter((c) => !c.args.includes('--from='))
      .flatMap((c) => c.args.split(/\s+/).slice(0, -1));
    expect(copied.length).toBeGreaterThan(0);
    for (const source of copied) {
      expect(existsSync(repoPath(source.replace(/\/$/, '')))).toBe(true);
      const ignored = patterns.some((p) => !p.startsWith('!') && ignores(p, source.replace(/\/$/, '')));
      expect({ source, ignored }).toEqual({ source, ignored: false });
    }
  });
});
