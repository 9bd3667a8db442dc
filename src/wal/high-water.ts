import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { crc32c } from './crc32c.js';

/**
 * The local WAL's high-water file: for every topic, the id after the last
 * acknowledged record, kept outside LevelDB so that a log that lost its
 * tail can be told from one that never had it.
 *
 * LocalLogStore writes it after each append's synced LevelDB batch and
 * before it acknowledges the append, so every acknowledged id is below the
 * mark. A crash between the two leaves the mark behind the log (harmless:
 * the log holds more than the mark promises), never ahead of it. Concurrent
 * appends to different topics share one write.
 *
 * The write before the acknowledgement goes to the page cache only (one
 * pwrite, no fsync): it survives the process being killed, which is all it
 * must survive for the mark to be right, since LevelDB's own fsync already
 * made the entries durable. It is fsynced at most SYNC_EVERY_MS later (and
 * at close), so after a power cut or kernel crash the mark on disk may be
 * up to that much behind the log: a tail lost in that window is the one
 * this file cannot see (ARCHITECTURE.md, "WAL integrity", says why the
 * trade). Fsyncing before every acknowledgement would double the latency
 * of every write to guard that window.
 *
 * Layout: two slots of `capacity` bytes; each write goes to the slot the
 * previous one did not use, and the file never changes size. A write torn
 * by a power cut damages only its own slot; the other still holds an
 * earlier (lower) mark. Each slot:
 *
 *   0  u32  magic 'RHW1'
 *   4  u32  CRC32C of bytes [8, 20 + length)
 *   8  u64  sequence (the newer valid slot wins)
 *  16  u32  length of the payload
 *  20  payload: u32 count, then per topic: u32 topic number, u64 next id,
 *      u16 name length, name (UTF-8)
 *
 * All integers big-endian. When the payload outgrows a slot (many topics),
 * the file is rewritten with larger slots (temp file, fsync, rename, fsync
 * of the directory).
 */
export const HIGH_WATER_FILE = 'reprise-high-water';

const MAGIC = 0x52485731;
const SLOT_HEADER = 20;
const MIN_CAPACITY = 4096;
/** A mark written to the page cache reaches the disk within this long. */
export const SYNC_EVERY_MS = 100;
const TWO_32 = 0x1_0000_0000;

export interface HighWaterTopic {
  readonly name: string;
  readonly no: number;
  /** The id after the last acknowledged record. */
  readonly next: number;
}

export type HighWaterState =
  /** No file: a new log, or one written before the file existed (or the file was deleted). */
  | 'missing'
  /** A file without one valid slot. */
  | 'damaged'
  | 'ok';

export class HighWater {
  private readonly topics = new Map<number, HighWaterTopic>();
  private seq: number;
  private inFlight: Promise<void> | undefined;
  private queued: Promise<void> | undefined;
  private failed: Error | undefined;
  /** Writes since the last fsync, and the timer that will sync them. */
  private unsynced = false;
  private syncTimer: NodeJS.Timeout | undefined;
  private syncing: Promise<void> = Promise.resolve();
  private closed = false;

  private constructor(
    private readonly path: string,
    private fh: FileHandle,
    private capacity: number,
    seq: number,
  ) {
    this.seq = seq;
  }

  /** What the file at `path` holds: the marks of the last valid write. */
  static async read(path: string): Promise<{ state: HighWaterState; topics: Map<number, HighWaterTopic>; seq: number }> {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await readFile(path));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing', topics: new Map(), seq: 0 };
      throw err;
    }
    const capacity = Math.floor(bytes.length / 2);
    let best: { seq: number; topics: Map<number, HighWaterTopic> } | undefined;
    if (capacity >= SLOT_HEADER) {
      for (let slot = 0; slot < 2; slot++) {
        const parsed = parseSlot(bytes.subarray(slot * capacity, (slot + 1) * capacity));
        if (parsed && (!best || parsed.seq > best.seq)) best = parsed;
      }
    }
    if (!best) return { state: 'damaged', topics: new Map(), seq: 0 };
    return { state: 'ok', topics: best.topics, seq: best.seq };
  }

  /**
   * Replace the file with one holding these marks (atomically: a crash
   * leaves the old file or the new one), and open it for writing.
   * `seq` continues the old file's sequence.
   */
  static async create(path: string, topics: Iterable<HighWaterTopic>, seq: number): Promise<HighWater> {
    const list = [...topics];
    const capacity = capacityFor(list);
    await writeFresh(path, capacity, seq + 1, encodePayload(list));
    const fh = await open(path, 'r+');
    const hw = new HighWater(path, fh, capacity, seq + 1);
    for (const t of list) hw.topics.set(t.no, t);
    return hw;
  }

  /** The mark of topic `no` becomes `next` (in memory; persist() writes it). */
  set(no: number, name: string, next: number): void {
    const t = this.topics.get(no);
    if (t && t.next >= next) return;
    this.topics.set(no, { name, no, next });
  }

  /**
   * Resolves once a write that started after this call has reached the
   * file (the page cache; the disk within SYNC_EVERY_MS), so every set()
   * before it survives the process. Writes never overlap; calls made while
   * one runs share the next. A failed write or fsync fails this and every
   * later call.
   */
  persist(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.queued) return this.queued;
    if (!this.inFlight) return this.start();
    this.queued = this.inFlight.then(() => {
      this.queued = undefined;
      return this.failed ? Promise.reject(this.failed) : this.start();
    });
    return this.queued;
  }

  /** Finish the writes under way, fsync, close. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.allSettled([this.inFlight, this.queued]);
    clearTimeout(this.syncTimer);
    await this.syncing;
    try {
      if (this.unsynced && !this.failed) await this.fh.datasync();
    } finally {
      await this.fh.close();
    }
  }

  /** Start a write now; `inFlight` settles (never rejects) when it has. */
  private start(): Promise<void> {
    const run = this.write().catch((err: unknown) => {
      this.failed ??= err as Error;
      throw this.failed;
    });
    const done: Promise<void> = run.then(
      () => undefined,
      () => undefined,
    ).then(() => {
      if (this.inFlight === done) this.inFlight = undefined;
    });
    this.inFlight = done;
    return run;
  }

  private async write(): Promise<void> {
    // The table is copied now: set() calls from here on go to the next write.
    const list = [...this.topics.values()];
    const payload = encodePayload(list);
    const seq = ++this.seq;
    if (SLOT_HEADER + payload.length > this.capacity) {
      this.capacity = capacityFor(list);
      clearTimeout(this.syncTimer);
      this.syncTimer = undefined;
      await this.syncing;
      await this.fh.close();
      await writeFresh(this.path, this.capacity, seq, payload); // fsynced
      this.fh = await open(this.path, 'r+');
      this.unsynced = false;
      return;
    }
    const slot = encodeSlot(seq, payload);
    await this.fh.write(slot, 0, slot.length, (seq % 2) * this.capacity);
    this.unsynced = true;
    this.scheduleSync();
  }

  /** Fsync within SYNC_EVERY_MS of the first write that is not on disk yet. */
  private scheduleSync(): void {
    if (this.syncTimer || this.closed) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = undefined;
      this.unsynced = false;
      this.syncing = this.fh.datasync().catch((err: unknown) => {
        this.failed ??= err as Error;
      });
    }, SYNC_EVERY_MS);
    // The store's close() syncs what is left; the timer must not keep a process alive.
    this.syncTimer.unref();
  }
}

function capacityFor(topics: readonly HighWaterTopic[]): number {
  let capacity = MIN_CAPACITY;
  const needed = SLOT_HEADER + encodePayload(topics).length;
  // Room to grow: rewriting the file costs a rename and two fsyncs.
  while (capacity < needed * 2) capacity *= 2;
  return capacity;
}

/** A file of two slots, one holding `payload` as write `seq`, durable at `path`, atomically. */
async function writeFresh(path: string, capacity: number, seq: number, payload: Uint8Array): Promise<void> {
  const tmp = `${path}.tmp`;
  await rm(tmp, { force: true });
  const bytes = new Uint8Array(2 * capacity);
  bytes.set(encodeSlot(seq, payload), (seq % 2) * capacity);
  const fh = await open(tmp, 'w');
  try {
    await fh.write(bytes, 0, bytes.length, 0);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  const dir = await open(dirname(path), 'r');
  try {
    await dir.sync();
  } finally {
    await dir.close();
  }
}

function encodePayload(topics: readonly HighWaterTopic[]): Uint8Array {
  const encoder = new TextEncoder();
  const names = topics.map((t) => encoder.encode(t.name));
  let size = 4;
  for (const n of names) size += 4 + 8 + 2 + n.length;
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  view.setUint32(0, topics.length);
  let p = 4;
  topics.forEach((t, i) => {
    const name = names[i]!;
    view.setUint32(p, t.no);
    view.setUint32(p + 4, Math.floor(t.next / TWO_32));
    view.setUint32(p + 8, t.next >>> 0);
    view.setUint16(p + 12, name.length);
    out.set(name, p + 14);
    p += 14 + name.length;
  });
  return out;
}

function encodeSlot(seq: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(SLOT_HEADER + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC);
  view.setUint32(8, Math.floor(seq / TWO_32));
  view.setUint32(12, seq >>> 0);
  view.setUint32(16, payload.length);
  out.set(payload, SLOT_HEADER);
  view.setUint32(4, crc32c(out.subarray(8)));
  return out;
}

function parseSlot(slot: Uint8Array): { seq: number; topics: Map<number, HighWaterTopic> } | undefined {
  const view = new DataView(slot.buffer, slot.byteOffset, slot.byteLength);
  if (view.getUint32(0) !== MAGIC) return undefined;
  const length = view.getUint32(16);
  if (SLOT_HEADER + length > slot.length) return undefined;
  if (crc32c(slot.subarray(8, SLOT_HEADER + length)) !== view.getUint32(4)) return undefined;
  const seq = view.getUint32(8) * TWO_32 + view.getUint32(12);
  const decoder = new TextDecoder();
  const topics = new Map<number, HighWaterTopic>();
  const count = view.getUint32(SLOT_HEADER);
  let p = SLOT_HEADER + 4;
  for (let i = 0; i < count; i++) {
    const no = view.getUint32(p);
    const next = view.getUint32(p + 4) * TWO_32 + view.getUint32(p + 8);
    const len = view.getUint16(p + 12);
    const name = decoder.decode(slot.subarray(p + 14, p + 14 + len));
    topics.set(no, { name, no, next });
    p += 14 + len;
  }
  return { seq, topics };
}
