import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { createVerifier } from './auth/verifier';
import type { Config } from './config';
import { createApp } from './http/app';
import { createPublishQuota } from './http/publish-quota';
import { Hub } from './hub';
import { HubMetrics } from './metrics';
import { MemoryTransport } from './transport/memory';
import { PostgresTransport } from './transport/postgres';
import { RedisTransport } from './transport/redis';
import type { Transport } from './transport/transport';
import { Publisher } from './publisher';

export interface HubServerOptions {
  config: Config;
  log: Logger;
  /** Development-mode HS256 key, used only when the config names no key. */
  fallbackSecret?: Uint8Array;
  /** Overrides the transport the config selects (embedding, tests). */
  transport?: Transport;
}

function createTransport(config: Config, log: Logger, metrics: HubMetrics): Transport {
  if (config.transport === 'postgres') {
    return new PostgresTransport({
      url: config.databaseUrl as string,
      schema: config.pgSchema,
      pollMs: config.pgPollMs,
      historyTtlMs: config.historyTtlMs,
      historyMaxBytes: config.historyMaxBytes,
      maxEventBytes: config.maxEventBytes,
      logger: log,
      metrics,
    });
  }
  if (config.transport === 'redis') {
    return new RedisTransport({
      url: config.redisUrl as string,
      channelPrefix: config.channelPrefix,
      logger: log,
      history: {
        historyMax: config.historyMax,
        historyMaxBytes: config.historyMaxBytes,
        historyTtlMs: config.historyTtlMs,
        maxEventBytes: config.maxEventBytes,
      },
    });
  }
  return new MemoryTransport({
    maxEntries: config.historyMax,
    maxBytes: config.historyMaxBytes,
    ttlMs: config.historyTtlMs,
  });
}

/** A running hub: HTTP server, transport subscription and local registry, wired together. */
export class HubServer {
  readonly hub: Hub;
  readonly transport: Transport;
  readonly metrics: HubMetrics;
  /** Publishes from this process, with ids and history, as the webhook does. */
  readonly publisher: Publisher;
  private readonly server: Server;
  private readonly log: Logger;

  constructor(private readonly options: HubServerOptions) {
    const { config } = options;
    this.log = options.log;
    let hub: Hub | undefined;
    this.metrics = new HubMetrics({
      connections: (stream) => hub?.registry.count(stream) ?? 0,
      transportListening: () => this.transport.isListening(),
    });
    this.transport = options.transport ?? createTransport(config, this.log, this.metrics);
    const transport = this.transport;
    hub = new Hub(
      {
        maxEventBytes: config.maxEventBytes,
        heartbeatMs: config.heartbeatMs,
        maxConnectionsPerUser: config.maxConnectionsPerUser,
        replayMax: config.replayMax,
        replay: config.replay,
        outbound: { maxEvents: config.bufferMaxEvents, maxBytes: config.bufferMaxBytes, stallMs: config.writeStallMs },
      },
      transport,
      this.metrics,
      this.log,
    );
    this.hub = hub;
    this.publisher = Publisher.forTransport(transport, config.maxEventBytes);
    // Streams opened before the first subscription need the same catch-up as after a loss.
    this.transport.onSubscribe({
      subscribing: () => hub.holdAll(),
      subscribed: (again) => {
        if (again) this.metrics.resubscribed();
        hub.recover();
      },
    });
    const app = createApp({
      config,
      hub,
      transport: this.transport,
      verifier: createVerifier(config.jwt, options.fallbackSecret),
      metrics: this.metrics,
      quota: createPublishQuota(config.publishQuota, this.transport),
      log: this.log,
    });
    this.server = createServer(app.callback());
    // Above typical load-balancer idle timeouts, so pooled publisher connections are not cut mid-request.
    this.server.keepAliveTimeout = 65_000;
    this.server.headersTimeout = 66_000;
  }

  async listen(): Promise<AddressInfo> {
    await this.transport.start(this.hub.receive);
    this.hub.start();
    const { port, host } = this.options.config;
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const address = this.server.address() as AddressInfo;
    this.log.info({ port: address.port, transport: this.transport.name }, 'ssehub listening');
    return address;
  }

  /** Graceful stop: readiness fails at once, streams are closed over the drain window, then everything closes. */
  async shutdown(drainMs = this.options.config.drainMs): Promise<void> {
    this.log.info({ drainMs, openStreams: this.hub.registry.total() }, 'draining');
    await this.hub.drain(drainMs);
    this.hub.stop();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      // Requests in flight got `Connection: close` (see the app); anything still open after a
      // moment would otherwise hold the exit for the whole keep-alive timeout.
      setTimeout(() => this.server.closeAllConnections(), 1000).unref();
    });
    await this.transport.close();
    this.log.info('stopped');
  }
}
