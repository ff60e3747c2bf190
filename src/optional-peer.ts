/** The optional peer dependency each lazily loaded part of ssehub needs. */
const PEERS = {
  redis: 'ioredis',
  postgres: 'pg',
} as const;

export type OptionalPart = keyof typeof PEERS;

export class MissingPeerDependencyError extends Error {
  constructor(part: OptionalPart, cause: unknown) {
    super(`ssehub's ${part} support needs the "${PEERS[part]}" package: npm install ${PEERS[part]}`, { cause });
    this.name = 'MissingPeerDependencyError';
  }
}

/**
 * Loads one of ssehub's own modules that depends on an optional peer, only when it is first
 * needed, so that a memory-only or Koa-only host never loads (or installs) ioredis or pg.
 */
export function loadOptional<T>(part: OptionalPart, load: () => T): T {
  try {
    return load();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 'MODULE_NOT_FOUND' && String((err as Error).message).includes(`'${PEERS[part]}'`)) {
      throw new MissingPeerDependencyError(part, err);
    }
    throw err;
  }
}
