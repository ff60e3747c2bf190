import type { PublishQuotaLimits } from '../limits';
import { hasQuotaStore, type Transport } from '../transport/transport';

/** How much one principal may publish per window: events and bytes, counted when admitted. */
export interface PublishQuota {
  /** 0 when a publish of `bytes` is admitted (and counted), else the milliseconds until the window ends. */
  take(principal: string, bytes: number): Promise<number>;
}

interface Window {
  endsAt: number;
  events: number;
  bytes: number;
}

/** Counts in this process: each replica admits the quota on its own. */
export class LocalPublishQuota implements PublishQuota {
  private readonly windows = new Map<string, Window>();
  private nextSweep = 0;

  constructor(private readonly limits: PublishQuotaLimits) {}

  async take(principal: string, bytes: number, now = Date.now()): Promise<number> {
    this.sweep(now);
    let window = this.windows.get(principal);
    if (window === undefined || now >= window.endsAt) {
      window = { endsAt: now + this.limits.windowMs, events: 0, bytes: 0 };
      this.windows.set(principal, window);
    }
    if (window.events + 1 > this.limits.events || window.bytes + bytes > this.limits.bytes) return window.endsAt - now;
    window.events++;
    window.bytes += bytes;
    return 0;
  }

  /** Forgets ended windows once per window length, so idle principals cost nothing. */
  private sweep(now: number): void {
    if (now < this.nextSweep) return;
    this.nextSweep = now + this.limits.windowMs;
    for (const [principal, window] of this.windows) if (now >= window.endsAt) this.windows.delete(principal);
  }
}

/** Where the transport shares a quota store (Redis) one counter per principal serves every replica; elsewhere each replica counts. */
export function createPublishQuota(limits: PublishQuotaLimits, transport: Transport): PublishQuota {
  if (hasQuotaStore(transport)) {
    return { take: (principal, bytes) => transport.takeQuota(principal, limits, bytes) };
  }
  return new LocalPublishQuota(limits);
}
