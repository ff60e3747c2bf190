/**
 * What the fault suite and its crowd process (crowd-worker.ts) say to each other over IPC. Types
 * only: the worker is compiled on its own, so nothing here may hold code.
 */

/** One SSE stream the crowd holds. */
export interface StreamSpec {
  user: string;
  token: string;
  /** e.g. `/api/v1/stream/agui`. */
  path: string;
  /** Replica base URLs; each (re)connection goes to the first that answers 200, as a balancer would. */
  replicas: string[];
  lastEventId?: string;
  /** Never read the response once it has started: the socket's buffers fill and the hub sees a stalled reader. */
  stall: boolean;
  /** Reconnect at once, with the last id seen, when the stream ends (no reconnect delay: a storm). */
  reconnect: boolean;
}

/** Webhook publishes as fast as `concurrency` requests in flight allow. */
export interface HammerSpec {
  replica: string;
  token: string;
  kind: string;
  /** Event i goes to users[i % users.length]. */
  users: string[];
  /** Size of each event body as delivered (without `user_id`). */
  eventBytes: number;
  concurrency: number;
  /** Stop after this many publishes, or after durationMs, whichever comes first. */
  count?: number;
  durationMs?: number;
}

export interface HammerResult {
  statuses: Record<string, number>;
  /** Event bytes of the publishes answered 202. */
  acceptedBytes: number;
  /** Acknowledged ids by user, in answer order. */
  ids: Record<string, string[]>;
  elapsedMs: number;
}

export interface StreamReport {
  user: string;
  /** Ids of the message events received, in order, across connections. */
  ids: string[];
  resets: number;
  /** Streams that started (status 200), the first included. */
  connections: number;
  /** When the latest stream started (ms since the epoch), 0 if none. */
  lastConnectedAt: number;
}

export type CrowdCommand =
  | { cmd: 'open'; streams: StreamSpec[]; concurrency: number }
  | { cmd: 'progress' }
  | { cmd: 'report' }
  | { cmd: 'hammer'; spec: HammerSpec }
  /** Closes the streams of these users for good. */
  | { cmd: 'drop'; users: string[] }
  | { cmd: 'close' };

/** A command and the number its reply comes back under (commands run concurrently). */
export interface CrowdRequest {
  seq: number;
  command: CrowdCommand;
}

export interface CrowdResponse {
  seq: number;
  reply: CrowdReply;
}

export type CrowdReply =
  | { type: 'opened'; opened: number; statuses: Record<string, number> }
  | {
      type: 'progress';
      open: number;
      /** Message events received per stream, in the order the streams were opened. */
      events: number[];
    }
  | { type: 'report'; streams: StreamReport[] }
  | { type: 'hammered'; result: HammerResult }
  | { type: 'closed' }
  | { type: 'dropped'; streams: number }
  | { type: 'error'; message: string };
