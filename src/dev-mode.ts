import { randomBytes } from 'node:crypto';
import { SignJWT } from 'jose';

export const DEMO_USER = 'demo-user';

export interface DevCredentials {
  secret: Uint8Array;
  userToken: string;
  serviceToken: string;
}

/** A throwaway HS256 key and ready-made tokens, so `npm start` works with nothing configured. */
export async function createDevCredentials(userClaim: string, lifetime = '12h'): Promise<DevCredentials> {
  const secret = randomBytes(32);
  const mint = (subject: string, roles: string[]): Promise<string> =>
    new SignJWT({ [userClaim]: subject, roles })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuedAt()
      .setExpirationTime(lifetime)
      .sign(secret);
  return {
    secret,
    userToken: await mint(DEMO_USER, ['admin']),
    serviceToken: await mint('demo-publisher', ['service']),
  };
}

export function devModeBanner(port: number, credentials: DevCredentials): string {
  const base = `http://localhost:${port}`;
  return [
    '',
    'ssehub is in DEVELOPMENT MODE: no JWT key is configured, so a throwaway HS256 key was generated.',
    'These tokens stop working when the process exits. Never run like this in production (NODE_ENV=production refuses to).',
    '',
    `Subscribe as ${DEMO_USER}:`,
    `  curl -N -H 'Authorization: Bearer ${credentials.userToken}' ${base}/api/v1/stream/contexts`,
    '',
    'Publish an event to that user (in another terminal):',
    `  curl -X POST -H 'Authorization: Bearer ${credentials.serviceToken}' -H 'Content-Type: application/json' \\`,
    `    -d '{"user_id":"${DEMO_USER}","type":"TEXT_MESSAGE_CONTENT","messageId":"m1","delta":"hello"}' ${base}/api/v1/webhook/agui`,
    '',
    'Stop the subscriber, publish again, then resume from the last id: line it printed; it gets what it missed:',
    `  curl -N -H 'Authorization: Bearer ${credentials.userToken}' -H 'Last-Event-ID: <id>' ${base}/api/v1/stream/contexts`,
    '',
  ].join('\n');
}
