import { RepriseError } from '../errors.js';
import type { SqlUser } from '../frontend/sql/types.js';
import { ANONYMOUS_USER, type UserProvider } from './users.js';

/** What an HTTP request shows of its credentials. */
interface Credentialed {
  readonly url: string;
  readonly headers: { readonly authorization?: string | undefined };
  readonly query: unknown;
}

/** Routes anyone may call: a load balancer's health check and InfluxDB clients' ping carry no credentials. */
const OPEN_ROUTES = new Set(['/health', '/v1/influxdb/ping', '/v1/influxdb/health']);

/** JSON API routes that change data or placement (method route): a read-only user may not call them. */
const WRITE_ROUTES = new Set([
  'POST /v1/tables',
  'DELETE /v1/tables/:name',
  'POST /v1/tables/:name/rows',
  'POST /v1/tables/:name/delete',
  'POST /v1/flush',
  'POST /v1/shards/:id/migrate',
  'POST /v1/influxdb/write',
  'POST /v1/influxdb/api/v2/write',
]);

/** JSON API routes that read rows: a write-only user may not call them. (/v1/sql checks each statement itself.) */
const READ_ROUTES = new Set(['POST /v1/tables/:name/query']);

function unauthenticated(message: string): RepriseError {
  return new RepriseError('UNAUTHENTICATED', message);
}

/**
 * The user an HTTP request authenticates as: HTTP Basic, and on the
 * InfluxDB routes also `?u=&p=` and `Authorization: Token user:password`
 * (InfluxDB 1.x clients send these). Without a provider everyone is the
 * anonymous read-write user. UNAUTHENTICATED when credentials are missing
 * or wrong (the message never repeats a password).
 */
export function httpUserOf(users: UserProvider | undefined, request: Credentialed, route: string | undefined): SqlUser | undefined {
  if (users === undefined) return ANONYMOUS_USER;
  if (route !== undefined && OPEN_ROUTES.has(route)) return undefined;
  const header = request.headers.authorization ?? '';
  let name: string | undefined;
  let password: string | undefined;
  const basic = /^Basic\s+(\S+)$/i.exec(header);
  const token = /^Token\s+(\S+)$/i.exec(header);
  if (basic !== null) {
    const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) throw unauthenticated('the Basic credentials are not user:password');
    name = decoded.slice(0, colon);
    password = decoded.slice(colon + 1);
  } else if (token !== null && route?.startsWith('/v1/influxdb/')) {
    const colon = token[1].indexOf(':');
    if (colon < 0) throw unauthenticated('the Token is not user:password');
    name = token[1].slice(0, colon);
    password = token[1].slice(colon + 1);
  } else if (route?.startsWith('/v1/influxdb/')) {
    const q = (request.query ?? {}) as { u?: unknown; p?: unknown };
    if (typeof q.u === 'string' && typeof q.p === 'string') {
      name = q.u;
      password = q.p;
    }
  }
  if (name === undefined || password === undefined) throw unauthenticated('authentication is required: send HTTP Basic credentials (user:password)');
  const user = users.authenticate(name, password);
  if (user === undefined) throw unauthenticated(`access denied for user '${name}': wrong user or password`);
  return user;
}

/** FORBIDDEN when `user`'s mode does not allow the route (a write for a read-only user, a read for a write-only one). */
export function checkRouteMode(user: SqlUser, method: string, route: string | undefined): void {
  if (route === undefined || user.mode === 'rw') return;
  const key = `${method} ${route}`;
  if (user.mode === 'ro' && WRITE_ROUTES.has(key)) throw new RepriseError('FORBIDDEN', `user '${user.name}' is read-only: ${key} writes`, { user: user.name });
  if (user.mode === 'wo' && READ_ROUTES.has(key)) throw new RepriseError('FORBIDDEN', `user '${user.name}' is write-only: ${key} reads`, { user: user.name });
}
