import { RepriseError } from '../errors.js';
import { EntryAssembler } from '../wal/codec.js';
import type { EntryId, LogStore, TailSubscription } from '../wal/log-store.js';
import { MetaView, metaTopicOf } from './meta-view.js';

/**
 * A read-only copy of meta's state that follows the meta log: nodes and
 * frontends tail `<prefix>_meta` and fold the same events as the meta
 * service, so routing and placement reads are local and never stale by
 * more than the tail's lag. After a change made through meta, `waitFor`
 * the entry id meta returned to read one's own writes.
 */
export class MetaReplica extends MetaView {
  private subscription: TailSubscription | undefined;
  private failure: Error | undefined;
  private waiters: { id: EntryId; resolve: () => void; reject: (err: Error) => void }[] = [];

  private constructor(readonly topic: string) {
    super();
  }

  /** Tail the meta log from its start; resolves once the state has caught up with the log's end at open. */
  static async open(log: LogStore, topicPrefix: string): Promise<MetaReplica> {
    const topic = metaTopicOf(topicPrefix);
    const replica = new MetaReplica(topic);
    const { next } = await log.bounds(topic);
    const assembler = new EntryAssembler(topic);
    replica.subscription = await log.tail(
      topic,
      0,
      (record) => {
        const entry = assembler.push(record);
        if (!entry) return;
        replica.applyEntry(topic, entry);
        replica.settle();
      },
      (err) => replica.fail(err),
    );
    await replica.waitFor(next - 1);
    return replica;
  }

  /** Resolve once the state reflects meta log entry `id` (rejects if the tail failed). */
  waitFor(id: EntryId, timeoutMs = 30_000): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.applied >= id) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.resolve !== done);
        reject(new RepriseError('TIMEOUT', `meta replica did not reach entry ${id} of '${this.topic}' within ${timeoutMs} ms (at ${this.applied})`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push({ id, resolve: done, reject: (err) => (clearTimeout(timer), reject(err)) });
    });
  }

  private settle(): void {
    const ready = this.waiters.filter((w) => w.id <= this.applied);
    if (ready.length > 0) {
      this.waiters = this.waiters.filter((w) => w.id > this.applied);
      for (const w of ready) w.resolve();
    }
    // Listeners (e.g. shards reconciling with their assignment) see every applied entry.
    this.notifyChange();
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  async close(): Promise<void> {
    await this.subscription?.close();
    this.subscription = undefined;
  }
}
