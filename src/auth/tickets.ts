import { createHash, randomBytes } from 'node:crypto';
import type { EventKind } from '../routing';
import type { TicketStore } from '../transport/transport';
import type { Principal } from './verifier';

/** What a redeemed ticket grants: the principal that asked for it, and the kinds it may stream. */
export interface TicketGrant {
  principal: Principal;
  kinds: readonly EventKind[];
}

interface StoredGrant {
  userId: string;
  roles: string[];
  /** Epoch ms; null for a principal that never expires (JSON has no Infinity). */
  expiresAt: number | null;
  kinds: EventKind[];
}

/** 256 bits: unguessable, and short enough for a URL. */
const TICKET_BYTES = 32;

/**
 * Single-use stream tickets: `EventSource` cannot send headers, so a page trades its credentials
 * for a ticket (POST, with headers) and opens the stream with `?ticket=`. The store holds only a
 * hash of each ticket, so neither it nor a log line can replay one.
 */
export class StreamTickets {
  constructor(
    private readonly store: TicketStore,
    readonly ttlMs: number,
  ) {}

  async issue(principal: Principal, kinds: readonly EventKind[]): Promise<{ ticket: string; ttlMs: number }> {
    const ticket = randomBytes(TICKET_BYTES).toString('base64url');
    const grant: StoredGrant = {
      userId: principal.userId,
      roles: [...principal.roles],
      expiresAt: Number.isFinite(principal.expiresAt) ? principal.expiresAt : null,
      kinds: [...kinds],
    };
    // A ticket never outlives the credentials it was issued for.
    const ttlMs = Math.max(1, Math.min(this.ttlMs, principal.expiresAt - Date.now()));
    await this.store.putTicket(ticketKey(ticket), JSON.stringify(grant), ttlMs);
    return { ticket, ttlMs };
  }

  /** The grant, once; undefined for an unknown, expired or already redeemed ticket. */
  async redeem(ticket: string): Promise<TicketGrant | undefined> {
    if (ticket.length === 0 || ticket.length > 128) return undefined;
    const stored = await this.store.takeTicket(ticketKey(ticket));
    if (stored === undefined) return undefined;
    const grant = JSON.parse(stored) as StoredGrant;
    const expiresAt = grant.expiresAt ?? Number.POSITIVE_INFINITY;
    if (expiresAt <= Date.now()) return undefined;
    return { principal: { userId: grant.userId, roles: new Set(grant.roles), expiresAt }, kinds: grant.kinds };
  }
}

function ticketKey(ticket: string): string {
  return createHash('sha256').update(ticket).digest('base64url');
}

/** Tickets for a transport without a shared store (the memory transport: one process). */
export class MemoryTicketStore implements TicketStore {
  private readonly entries = new Map<string, { value: string; expiresAt: number }>();

  async putTicket(key: string, value: string, ttlMs: number): Promise<void> {
    this.sweep();
    this.entries.set(key, { value, expiresAt: Date.now() + ttlMs });
  }

  async takeTicket(key: string): Promise<string | undefined> {
    const entry = this.entries.get(key);
    this.entries.delete(key);
    return entry !== undefined && entry.expiresAt > Date.now() ? entry.value : undefined;
  }

  /** Unredeemed tickets go at the next issue after they expire; the map never outgrows a TTL's worth. */
  private sweep(): void {
    const now = Date.now();
    for (const [key, entry] of this.entries) if (entry.expiresAt <= now) this.entries.delete(key);
  }
}
