import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Registry } from 'prom-client';
import type { Principal } from './auth/verifier';
import type { EventInput } from './events/types';
import { serializeEvent } from './events/serialize';
import { createEventValidator, type ValidationSwitches } from './events/validate';
import { HubCore } from './hub/core';
import { type ServeStreamOptions, type StreamGuard, serveStream } from './http/stream-routes';
import { type HubLimits, publishQuotaLimits, replayBounds, resolveLimits } from './limits';
import { createPublishQuota, type PublishQuota } from './http/publish-quota';
import { createLogger, type HubLogger } from './log';
import { HubMetrics, type MetricsOptions } from './metrics';
import { routesFor, type EventKind, type StreamKind, STREAM_KINDS } from './routing';
import { MemoryTransport } from './transport/memory/transport';
import { hasTicketStore, type Published, type TicketStore, type Transport } from './transport/transport';
import { MemoryTicketStore, StreamTickets } from './auth/tickets';
import { toEventBytes } from './wire/publishable';

export interface CreateHubOptions {
  /** Carries events between replicas and keeps their history; the in-process memory transport by default. */
  transport?: Transport;
  limits?: Partial<HubLimits>;
  /** pino, or any logger of its shape; a pino logger at `info` by default. */
  logger?: HubLogger;
  /** Where the hub's Prometheus metrics go (the host's registry, a name prefix); a registry of its own by default. */
  metrics?: MetricsOptions;
  /**
   * Kinds whose events `publish` checks against the official schema (AG-UI's, A2A's) before
   * sending, e.g. `{ agui: true }`. Off by default: the schemas load only for a kind switched on.
   */
  validate?: ValidationSwitches;
}

/** One event family's side of the hub (the seed's typed broadcasters). */
export interface Broadcaster<K extends EventKind> {
  readonly kind: K;
  publish(userId: string, event: EventInput<K>): Promise<Published>;
  /** This replica's open streams of the user that this family's events reach. */
  connectionCount(userId: string): number;
  /** This replica's open streams that this family's events reach. */
  totalConnections(): number;
}

export type Readiness =
  | { ready: true }
  | { ready: false; reason: 'not_started' | 'draining' | 'transport_not_listening' };

export interface Hub {
  readonly transport: Transport;
  readonly limits: Readonly<HubLimits>;
  /** The registry the hub's metrics are in (the one passed in, or its own). */
  readonly metricsRegistry: Registry;
  readonly agui: Broadcaster<'agui'>;
  readonly a2a: Broadcaster<'a2a'>;
  readonly system: Broadcaster<'system'>;
  readonly analytics: Broadcaster<'analytics'>;
  /** Starts the transport and the hub's timers. Streams can be served once it resolves. */
  start(): Promise<void>;
  /**
   * Gives the event the user's next id, records it in the user's history and delivers it to
   * every open stream of the user on every replica. Rejects with EventRejectedError for an
   * event the hub would refuse, and TransportUnavailableError while the transport is down.
   */
  publish<K extends EventKind>(kind: K, userId: string, event: EventInput<K>): Promise<Published>;
  /** This replica's open streams of one user: on one stream kind, or on all of them. */
  connectionCount(userId: string, stream?: StreamKind): number;
  /** This replica's open streams: of one stream kind, or all. */
  totalConnections(stream?: StreamKind): number;
  /** Users with at least one stream open on this replica. */
  connectedUsers(): string[];
  /**
   * Serves a stream on a node:http response for a principal the host has authenticated.
   * Refusals (405, 403 for analytics without the admin role, 429 over the per-user cap, 503
   * while draining) are answered here and return undefined.
   */
  serveStream(
    req: IncomingMessage,
    res: ServerResponse,
    principal: Principal,
    stream: StreamKind,
    options?: ServeStreamOptions,
  ): StreamGuard | undefined;
  readiness(): Readiness;
  /** Stops taking streams and closes the open ones over `drainMs`, each told when to reconnect (to another replica). */
  drain(drainMs: number): Promise<void>;
  /** Closes every stream and the transport. */
  close(): Promise<void>;
}

/** What the mounts in this package reach behind the public Hub; never exported from the package. */
export interface HubInternals {
  core: HubCore;
  metrics: HubMetrics;
  log: HubLogger;
  tickets: StreamTickets;
  /** Publish quota of principals without the service role (the webhook's). */
  quota: PublishQuota;
}

const internals = new WeakMap<Hub, HubInternals>();

export function internalsOf(hub: Hub): HubInternals {
  const found = internals.get(hub);
  if (!found) throw new TypeError('not a hub made by createHub()');
  return found;
}

function ticketStoreFor(transport: Transport, log: HubLogger): TicketStore {
  if (hasTicketStore(transport)) return transport;
  if (transport.name !== 'memory') {
    log.warn(
      { transport: transport.name },
      'this transport keeps no stream tickets: a ticket is redeemable only on the replica that issued it',
    );
  }
  return new MemoryTicketStore();
}

/** Builds a hub: the library core with no HTTP server. Mount it with `ssehub/koa` or `hub.serveStream`. */
export function createHub(options: CreateHubOptions = {}): Hub {
  const limits = resolveLimits(options.limits);
  const log = options.logger ?? createLogger('info');
  const transport =
    options.transport ??
    new MemoryTransport({
      maxEntries: limits.historyMax,
      maxBytes: limits.historyMaxBytes,
      ttlMs: limits.historyTtlMs,
    });
  let core: HubCore | undefined;
  const metrics = new HubMetrics(
    {
      connections: (stream) => core?.registry.count(stream) ?? 0,
      connectedUsers: () => core?.registry.userIds().size ?? 0,
      transportListening: () => transport.isListening(),
      outboundBytes: () => core?.streams.outboundBytes ?? 0,
    },
    options.metrics,
  );
  core = new HubCore(
    {
      maxEventBytes: limits.maxEventBytes,
      heartbeatMs: limits.heartbeatMs,
      maxConnections: limits.maxConnections,
      maxConnectionsPerUser: limits.maxConnectionsPerUser,
      replayMax: limits.replayMax,
      replay: replayBounds(limits),
      outbound: { maxEvents: limits.bufferMaxEvents, maxBytes: limits.bufferMaxBytes, stallMs: limits.writeStallMs },
      outboundMaxBytes: limits.outboundMaxBytes,
    },
    transport,
    metrics,
    log,
  );
  const hubCore = core;
  const validator = createEventValidator(options.validate ?? {});
  const tickets = new StreamTickets(ticketStoreFor(transport, log), limits.ticketTtlMs);
  let state: 'new' | 'starting' | 'started' | 'closed' = 'new';

  const publish = async <K extends EventKind>(kind: K, userId: string, event: EventInput<K>): Promise<Published> => {
    // The hub's own rules first (size, JSON, depth), so the schema check only ever sees JSON.
    const bytes = toEventBytes(kind, userId, await serializeEvent(kind, event), limits.maxEventBytes);
    if (validator.validates(kind)) await validator.validate(kind, JSON.parse(bytes.toString('utf8')));
    try {
      const published = await transport.publish(kind, userId, bytes);
      metrics.publishResult(kind, true);
      return published;
    } catch (err) {
      metrics.publishResult(kind, false);
      throw err;
    }
  };
  const streamsOf = (kind: EventKind): StreamKind[] => routesFor(kind).map((route) => route.stream);
  const broadcaster = <K extends EventKind>(kind: K): Broadcaster<K> => ({
    kind,
    publish: (userId, event) => publish(kind, userId, event),
    connectionCount: (userId) => hubCore.dispatcher.localConnections(kind, userId),
    totalConnections: () => streamsOf(kind).reduce((sum, stream) => sum + hubCore.registry.count(stream), 0),
  });

  const hub: Hub = {
    transport,
    limits,
    metricsRegistry: metrics.registry,
    agui: broadcaster('agui'),
    a2a: broadcaster('a2a'),
    system: broadcaster('system'),
    analytics: broadcaster('analytics'),
    async start() {
      if (state !== 'new') return;
      state = 'starting';
      await transport.start(hubCore.transportHandler);
      hubCore.streams.start();
      state = 'started';
    },
    publish,
    connectionCount(userId, stream) {
      const streams: readonly StreamKind[] = stream ? [stream] : STREAM_KINDS;
      return streams.reduce((sum, kind) => sum + (hubCore.registry.subscribers(kind, userId)?.size ?? 0), 0);
    },
    totalConnections: (stream) => (stream ? hubCore.registry.count(stream) : hubCore.registry.total()),
    connectedUsers: () => [...hubCore.registry.userIds()],
    serveStream: (req, res, principal, stream, streamOptions) =>
      serveStream(hubCore, metrics, req, res, principal, stream, streamOptions),
    readiness() {
      if (state !== 'started') return { ready: false, reason: 'not_started' };
      if (hubCore.streams.isDraining) return { ready: false, reason: 'draining' };
      if (!transport.isListening()) return { ready: false, reason: 'transport_not_listening' };
      return { ready: true };
    },
    drain: (drainMs) => hubCore.streams.drain(drainMs),
    async close() {
      if (state === 'closed') return;
      state = 'closed';
      hubCore.streams.stop();
      await transport.close();
    },
  };
  internals.set(hub, {
    core: hubCore,
    metrics,
    log,
    tickets,
    quota: createPublishQuota(publishQuotaLimits(limits), transport),
  });
  return hub;
}
