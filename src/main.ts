import { ConfigError, loadConfig, type Config } from './config';
import { createDevCredentials, devModeBanner, type DevCredentials } from './dev-mode';
import { createLogger } from './log';
import { HubServer } from './server';

function hasJwtKey(config: Config): boolean {
  return config.jwt.secret !== undefined || config.jwt.publicKeyPem !== undefined || config.jwt.jwksUrl !== undefined;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`ssehub: ${err.message}\n`);
      process.exit(1);
    }
    throw err;
  }
  const log = createLogger(config.logLevel);
  let dev: DevCredentials | undefined;
  if (!hasJwtKey(config)) dev = await createDevCredentials(config.jwt.userClaim);

  const server = new HubServer({ config, log, fallbackSecret: dev?.secret });
  const address = await server.listen();
  if (dev) process.stdout.write(`${devModeBanner(address.port, dev)}\n`);

  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const watchdog = setTimeout(() => {
      log.error('shutdown took too long; exiting');
      process.exit(1);
    }, config.drainMs + 10_000);
    watchdog.unref();
    server.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: unknown) => {
  process.stderr.write(`ssehub failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
