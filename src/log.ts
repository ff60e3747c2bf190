import pino from 'pino';

type LogFn = {
  (fields: object, message?: string): void;
  (message: string): void;
};

/** What the hub logs through: pino, or anything with pino's shape (child loggers and leveled calls). */
export interface HubLogger {
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  child(bindings: Record<string, unknown>): HubLogger;
}

const ignore = (): void => undefined;

/** Logs nothing: what a transport uses until the hub it is started by hands it the hub's logger. */
export const NOOP_LOGGER: HubLogger = {
  debug: ignore,
  info: ignore,
  warn: ignore,
  error: ignore,
  child: () => NOOP_LOGGER,
};

/** The stand-alone server's logger; embedders pass their own. */
export function createLogger(level: string): HubLogger {
  return pino({
    level,
    base: { service: 'ssehub' },
    // Tokens must never reach the logs, whatever a caller passes in.
    redact: { paths: ['token', '*.token', 'authorization', '*.authorization', 'headers.cookie'], censor: '[redacted]' },
  });
}

/**
 * Lets through at most `limit` messages per key per window and reports how many were held
 * back, so a flood of bad input cannot flood the logs too.
 */
export class LogRateLimiter {
  private readonly windows = new Map<string, { startedAt: number; logged: number; suppressed: number }>();

  constructor(
    private readonly limit = 5,
    private readonly windowMs = 10_000,
  ) {}

  /** Returns undefined when this occurrence should not be logged, else the count suppressed since the last one. */
  admit(key: string, now = Date.now()): { suppressed: number } | undefined {
    let window = this.windows.get(key);
    if (!window || now - window.startedAt >= this.windowMs) {
      const suppressed = window?.suppressed ?? 0;
      window = { startedAt: now, logged: 0, suppressed: 0 };
      this.windows.set(key, window);
      window.logged++;
      return { suppressed };
    }
    if (window.logged < this.limit) {
      window.logged++;
      return { suppressed: 0 };
    }
    window.suppressed++;
    return undefined;
  }
}
