import { Agent, request as httpRequest } from 'node:http';

/**
 * A minimal HTTP client over node:http with keep-alive sockets: the
 * benchmarks time requests of a few milliseconds, and the global fetch
 * (undici) adds a few hundred microseconds of its own per request, the same
 * for every server but a visible share of a short query.
 */

let agent = new Agent({ keepAlive: true, maxSockets: 64 });

export interface HttpResponse {
  readonly status: number;
  readonly body: Buffer;
}

export function httpCall(
  url: string,
  options: { method?: string; body?: string | Buffer; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const body = options.body === undefined ? undefined : typeof options.body === 'string' ? Buffer.from(options.body) : options.body;
    const req = httpRequest(
      url,
      {
        method: options.method ?? (body ? 'POST' : 'GET'),
        agent,
        headers: { ...(body ? { 'content-length': String(body.length) } : {}), ...options.headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (options.timeoutMs !== undefined) {
      req.setTimeout(options.timeoutMs, () => req.destroy(new Error(`${options.method ?? 'GET'} ${url}: no answer after ${options.timeoutMs} ms`)));
    }
    req.end(body);
  });
}

/** POST a JSON body and parse the JSON answer (any status). */
export async function postJson(url: string, payload: unknown, timeoutMs?: number): Promise<{ status: number; json: any }> {
  const res = await httpCall(url, { method: 'POST', body: JSON.stringify(payload), headers: { 'content-type': 'application/json' }, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  return { status: res.status, json: res.body.length > 0 ? JSON.parse(res.body.toString('utf8')) : undefined };
}

/** Close idle keep-alive sockets (before a server restarts, and at the end). */
export function closeIdleSockets(): void {
  agent.destroy();
  agent = new Agent({ keepAlive: true, maxSockets: 64 });
}
