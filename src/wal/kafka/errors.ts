import { RepriseError } from '../../errors.js';
import { TOPIC_NAME } from './settings.js';

/** How the Kafka provider reads kafkajs's errors (what to retry, what provably wrote nothing) and checks its arguments. */

export class RetriableError extends Error {
  readonly retriable = true;
}

export function checkTopicName(topic: string): void {
  if (typeof topic !== 'string' || !TOPIC_NAME.test(topic)) {
    throw new RepriseError(
      'INVALID_ARGUMENT',
      `WAL topic name must be 1-249 characters of a-z A-Z 0-9 . _ - (Kafka's rule), got ${JSON.stringify(topic)}`,
    );
  }
}

export function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RepriseError('INVALID_ARGUMENT', `Kafka WAL: ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

/** The error and its causes, outermost first (kafkajs wraps errors in retry errors). */
export function chain(err: unknown): { name?: string; type?: string; code?: string; retriable?: boolean; message?: string }[] {
  const out: { name?: string; type?: string; code?: string; retriable?: boolean; message?: string }[] = [];
  let e = err as { cause?: unknown } | undefined;
  while (e && typeof e === 'object' && out.length < 8) {
    out.push(e as (typeof out)[number]);
    e = e.cause as typeof e;
  }
  return out;
}

export function describe(err: unknown): string {
  const parts = chain(err)
    .map((e) => e.message)
    .filter((m): m is string => typeof m === 'string' && m.length > 0);
  const unique = parts.filter((m, i) => parts.indexOf(m) === i);
  return unique.length > 0 ? unique.join(': ') : String(err);
}

/** Worth retrying a read: the leader moved, a broker is unreachable, metadata is stale. */
export function transient(err: unknown): boolean {
  return chain(err).some((e) => e.retriable === true && e.type !== 'OFFSET_OUT_OF_RANGE');
}

/**
 * Produce errors that prove the broker appended nothing: it answered and
 * refused (not the leader, not enough replicas in sync), or the request never
 * left (no metadata, no leader, connection refused). Timeouts and dropped
 * connections are ambiguous and are not retried.
 */
export const REFUSED_PRODUCE = new Set([
  'NOT_LEADER_FOR_PARTITION',
  'LEADER_NOT_AVAILABLE',
  'UNKNOWN_TOPIC_OR_PARTITION',
  'NOT_ENOUGH_REPLICAS',
  'FENCED_LEADER_EPOCH',
  'UNKNOWN_LEADER_EPOCH',
]);

export function provablyNotWritten(err: unknown): boolean {
  const causes = chain(err);
  const innermost = causes[causes.length - 1];
  if (!innermost) return false;
  if (innermost.type !== undefined) return REFUSED_PRODUCE.has(innermost.type);
  if (innermost.name === 'KafkaJSMetadataNotLoaded' || innermost.name === 'KafkaJSBrokerNotFound') return true;
  return innermost.name === 'KafkaJSConnectionError' && innermost.code === 'ECONNREFUSED';
}

/** DeleteRecords answers that will not change by asking again. */
export const DELETE_RECORDS_REFUSED = new Set([
  'TOPIC_AUTHORIZATION_FAILED',
  'POLICY_VIOLATION',
  'UNSUPPORTED_VERSION',
  'INVALID_REQUEST',
]);

/**
 * Why the cluster will never accept DeleteRecords from this client, or
 * undefined for a failure worth retrying later.
 */
export function deleteRecordsRefusal(err: unknown): string | undefined {
  for (const e of chain(err)) {
    if (e.name === 'KafkaJSServerDoesNotSupportApiKey') return 'the DeleteRecords API is not supported';
    const partitions = (e as { partitions?: { error?: { type?: string } }[] }).partitions;
    for (const p of partitions ?? []) {
      const type = p.error?.type;
      if (type !== undefined && DELETE_RECORDS_REFUSED.has(type)) return type;
    }
  }
  return undefined;
}
