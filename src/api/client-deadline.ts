import type { FastifyReply } from 'fastify';
import type { Deadline } from '../deadline.js';

/**
 * A write's deadline from its HTTP request: aborted when the connection
 * closes before the reply is sent (the client gave up). Node notices that
 * only when it next reads the socket, so a request read after its client
 * left (the server was paused with it buffered) may still start its append.
 */
export function clientDeadline(reply: FastifyReply): Deadline {
  const gone = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) gone.abort();
  });
  return { signal: gone.signal };
}
