import type { IncomingHttpHeaders } from 'node:http';

export const TOKEN_COOKIE = 'access_token';

function cookieValue(header: string, name: string): string | undefined {
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq === -1 || part.slice(0, eq).trim() !== name) continue;
    const raw = part.slice(eq + 1).trim();
    try {
      return decodeURIComponent(raw);
    } catch {
      return raw;
    }
  }
  return undefined;
}

/**
 * The bearer token from the Authorization header, else the `access_token` cookie (browsers'
 * EventSource cannot set headers). Never from the query string, where it would end up in logs.
 */
export function extractToken(headers: IncomingHttpHeaders, options: { cookie?: boolean } = {}): string | undefined {
  const authorization = headers.authorization;
  if (authorization !== undefined) {
    const match = /^Bearer[ \t]+([^\s]+)[ \t]*$/i.exec(authorization);
    return match?.[1];
  }
  const cookie = headers.cookie;
  if (cookie === undefined || options.cookie === false) return undefined;
  const token = cookieValue(cookie, TOKEN_COOKIE);
  return token === '' ? undefined : token;
}
