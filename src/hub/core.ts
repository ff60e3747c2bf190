import { CatchUp } from '../delivery/catch-up';
import { ReplayBudget } from '../delivery/replay-budget';
import type { StreamSubscriber } from '../delivery/subscriber';
import type { HistorySource } from '../history/history';
import type { ReplayBounds } from '../limits';
import type { HubLogger } from '../log';
import type { HubMetrics } from '../metrics';
import type { OutboundLimits } from '../sse/connection';
import { hasLivePosition, type Transport, type TransportHandler } from '../transport/transport';
import { Dispatcher } from './dispatcher';
import { Registry } from './registry';
import { Streams } from './streams';

export interface HubCoreOptions {
  maxEventBytes: number;
  heartbeatMs: number;
  maxConnections: number;
  maxConnectionsPerUser: number;
  /** Most events one catch-up sends before it answers with a reset instead. */
  replayMax: number;
  replay: ReplayBounds;
  outbound: OutboundLimits;
  /** Bytes queued towards all clients of the replica: backlogs and frames held behind replays. */
  outboundMaxBytes: number;
}

/**
 * The transport-agnostic core, wired: the registry of this replica's streams, the dispatcher
 * (live events), the streams' lifecycle, and catch-up (replay and recovery), each the one owner
 * of its part. The transport talks to it through `transportHandler` only.
 */
export class HubCore {
  readonly registry: Registry<StreamSubscriber>;
  readonly dispatcher: Dispatcher;
  readonly streams: Streams;
  readonly transportHandler: TransportHandler;

  constructor(
    options: HubCoreOptions,
    transport: HistorySource & Pick<Transport, 'isListening' | 'idsCarryPublishTime'>,
    metrics: HubMetrics,
    log: HubLogger,
  ) {
    const { replay } = options;
    this.registry = new Registry(options.maxConnectionsPerUser);
    this.dispatcher = new Dispatcher(this.registry, metrics, log, transport.idsCarryPublishTime === true);
    const catchUp = new CatchUp({
      history: transport,
      replayMax: options.replayMax,
      maxEventBytes: options.maxEventBytes,
      page: { maxEntries: replay.pageEvents, maxBytes: replay.pageBytes },
      budget: new ReplayBudget(replay.replicaBytes),
      retry: { minMs: replay.retryMinMs, maxMs: replay.retryMaxMs },
      metrics,
      log,
      perUserSequence: !hasLivePosition(transport),
    });
    this.streams = new Streams(
      {
        heartbeatMs: options.heartbeatMs,
        maxConnections: options.maxConnections,
        outbound: options.outbound,
        hold: { maxEvents: options.outbound.maxEvents, maxBytes: replay.holdMaxBytes },
        outboundMaxBytes: options.outboundMaxBytes,
      },
      this.registry,
      catchUp,
      transport,
      metrics,
      log,
    );
    this.transportHandler = {
      event: (inbound) => this.dispatcher.event(inbound),
      rejected: (message) => this.dispatcher.rejected(message),
      holds: (userId) => this.registry.holds(userId),
      skipped: () => metrics.eventSkipped(),
      // Streams opened before the first subscription need the same catch-up as after a loss.
      subscribing: () => this.streams.holdAll(),
      subscribed: (again) => {
        if (again) metrics.resubscribed();
        this.streams.recover();
      },
      metrics,
      log,
    };
  }
}
