import { copyFile, link, mkdir, open, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import type { HighWaterTopic } from './high-water.js';
import type { BatchOp, LogFileScan } from './leveldb-log.js';
import { HOLE, idRanges, mergeRanges, META, META_VALUE_BYTES, metaName, parseRecordKey, recordKey, type IdRange } from './local-log-keys.js';
import { readU32, readU64 } from './bytes.js';
import type { EntryId } from './log-store.js';

/**
 * Naming what damage in the local WAL's LevelDB logs costs: which topics
 * and entry ids the dropped bytes held, as far as they can still be read.
 */

export interface DamageEntry {
  readonly file: string;
  readonly offset: number;
  readonly reason: string;
  readonly droppedBytes: number;
  /** Entry ids read from the dropped bytes, by topic name ("7..9, 12"). */
  readonly entries: Record<string, string>;
}

/** Ids [from, to) of a topic that the damage takes. */
/** Entry ids [from, to) lost to damage. */
export type LostRange = IdRange;

export interface DamageReport {
  /** The damaged spots and the entries they cost, for an error message. */
  readonly summary: string;
  readonly damages: DamageEntry[];
  /** Entry ids lost, by topic name. */
  readonly lost: Map<string, LostRange[]>;
}

/** Topic number -> name: from the high-water file, and from topic metadata the logs still hold. */
export function topicNames(scans: readonly LogFileScan[], marks: ReadonlyMap<number, HighWaterTopic>): Map<number, string> {
  const names = new Map<number, string>();
  for (const m of marks.values()) names.set(m.no, m.name);
  for (const scan of scans) {
    for (const ev of scan.events) {
      const ops = ev.kind === 'record' ? ev.ops : ev.suspects;
      for (const op of ops) {
        if (op.put && op.key[0] === META && op.value.length >= 5) names.set(readU32(op.value, 1), metaName(op.key));
      }
    }
  }
  return names;
}

/**
 * Which entries the damage costs. A topic's appends reach the log one after
 * another in id order, so the entries of topic t lost to a damaged spot are
 * exactly those between the last intact entry of t before it and the first
 * intact one after it (or, at the end of the log, up to t's high-water
 * mark). Ids read from the damaged bytes fill in what neither side can tell
 * (a damaged spot at the start of the log, or with no mark).
 */
export function describeDamage(
  scans: readonly LogFileScan[],
  marks: ReadonlyMap<number, HighWaterTopic>,
  /** What a dry-run recovery found missing (exact), when it could run. */
  missing?: ReadonlyMap<string, LostRange[]>,
): DamageReport {
  const names = topicNames(scans, marks);
  const nameOf = (no: number) => names.get(no) ?? `#${no}`;
  // Every event of every log, in replay order.
  const timeline = scans.flatMap((scan) => scan.events.map((ev) => ({ scan, ev })));
  const intact = timeline.map(({ ev }) => (ev.kind === 'record' ? recordIds(ev.ops) : undefined));
  const topics = new Set<number>(marks.keys());
  for (const ids of intact) for (const no of ids?.keys() ?? []) topics.add(no);

  const damages: DamageEntry[] = [];
  const ranges = new Map<number, LostRange[]>();
  timeline.forEach(({ scan, ev }, index) => {
    if (ev.kind !== 'damage') return;
    const suspects = recordIds(ev.suspects);
    const entries: Record<string, string> = {};
    for (const [no, ids] of suspects) entries[nameOf(no)] = idRanges(ids);
    damages.push({ file: scan.file, offset: ev.offset, reason: ev.reason, droppedBytes: ev.droppedBytes, entries });
    for (const no of new Set([...topics, ...suspects.keys()])) {
      let before: EntryId | undefined;
      for (let i = index - 1; i >= 0 && before === undefined; i--) {
        const ids = intact[i]?.get(no);
        if (ids) before = ids.reduce((a, b) => Math.max(a, b));
      }
      let after: EntryId | undefined;
      for (let i = index + 1; i < timeline.length && after === undefined; i++) {
        const ids = intact[i]?.get(no);
        if (ids) after = ids.reduce((a, b) => Math.min(a, b));
      }
      const named = suspects.get(no) ?? [];
      const from = before !== undefined ? before + 1 : named.length > 0 ? named.reduce((a, b) => Math.min(a, b)) : undefined;
      const to = after ?? marks.get(no)?.next ?? (named.length > 0 ? named.reduce((a, b) => Math.max(a, b)) + 1 : undefined);
      if (from === undefined || to === undefined || from >= to) continue;
      const list = ranges.get(no) ?? [];
      list.push({ from, to });
      ranges.set(no, list);
    }
  });
  const lost = new Map<string, LostRange[]>();
  if (missing) for (const [topic, list] of missing) lost.set(topic, mergeRanges(list));
  else for (const [no, list] of ranges) lost.set(nameOf(no), mergeRanges(list));
  const where = damages.map((d) => `${d.file} at offset ${d.offset}: ${d.reason} (LevelDB's recovery would drop ${d.droppedBytes} bytes)`).join('; ');
  const what =
    lost.size > 0
      ? `entries lost: ${[...lost].map(([topic, list]) => `topic "${topic}" entry ids ${list.map((r) => (r.to - r.from === 1 ? `${r.from}` : `${r.from}..${r.to - 1}`)).join(', ')}`).join('; ')}`
      : 'no entry id can be read from the damaged bytes or around them';
  return { summary: `${where}; ${what}`, damages, lost };
}

/** Record ids put by these operations, by topic number. */
function recordIds(ops: readonly BatchOp[]): Map<number, EntryId[]> {
  const out = new Map<number, EntryId[]>();
  for (const op of ops) {
    if (!op.put) continue;
    const k = parseRecordKey(op.key);
    if (!k) continue;
    const list = out.get(k.no) ?? [];
    list.push(k.id);
    out.set(k.no, list);
  }
  return out;
}

/**
 * What LevelDB's recovery would leave missing, found by letting it recover
 * a copy, `<walDir>/.dry-run-*`, with the tables hard-linked
 * (LevelDB never rewrites one) and the logs, manifest and CURRENT copied.
 * For each topic, the ids between its earliest id and its high-water mark
 * (or its last record) that hold no record, recorded hole or not. Removed
 * afterwards; the directory itself is not touched. Undefined if the copy
 * cannot be opened.
 */
export async function dryRunRecovery(walDir: string, marks: ReadonlyMap<number, HighWaterTopic>): Promise<Map<string, LostRange[]> | undefined> {
  const tmp = join(walDir, `.dry-run-${process.pid}-${Date.now()}`);
  try {
    await mkdir(tmp, { recursive: true });
    for (const entry of await readdir(walDir, { withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const name = entry.name;
      const from = join(walDir, name);
      const to = join(tmp, name);
      if (/\.(ldb|sst)$/.test(name)) {
        await link(from, to).catch(() => copyFile(from, to));
      } else if (name === 'CURRENT' || /^MANIFEST-\d+$/.test(name) || /^\d+\.log$/.test(name)) {
        await copyFile(from, to);
      }
    }
    const db = new ClassicLevel<Uint8Array, Uint8Array>(tmp, { keyEncoding: 'view', valueEncoding: 'view', createIfMissing: true });
    await db.open();
    try {
      const missing = new Map<string, LostRange[]>();
      const seen = new Set<number>();
      for await (const [key, value] of db.iterator({ gt: Uint8Array.of(META), lt: Uint8Array.of(META + 1) })) {
        if (value.length !== META_VALUE_BYTES) continue;
        const name = metaName(key);
        const no = readU32(value, 1);
        const earliest = readU64(value, 5);
        seen.add(no);
        const holes: LostRange[] = [];
        for await (const [k, v] of db.iterator({ gte: recordKey(no, 0, HOLE), lt: recordKey(no + 1, 0, HOLE) })) {
          const h = parseRecordKey(k, HOLE);
          if (h && v.length === 8) holes.push({ from: h.id, to: readU64(v, 0) });
        }
        const list: LostRange[] = [];
        let expected = earliest;
        for await (const k of db.keys({ gte: recordKey(no, earliest), lt: recordKey(no + 1, 0) })) {
          const id = readU64(k, 5);
          if (id > expected) list.push(...outsideHoles({ from: expected, to: id }, holes));
          expected = Math.max(expected, id + 1);
        }
        const mark = marks.get(no)?.next ?? 0;
        if (mark > expected) list.push(...outsideHoles({ from: expected, to: mark }, holes));
        if (list.length > 0) missing.set(name, list);
      }
      for (const m of marks.values()) if (!seen.has(m.no) && m.next > 0) missing.set(m.name, [{ from: 0, to: m.next }]);
      return missing;
    } finally {
      await db.close();
    }
  } catch {
    return undefined;
  } finally {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

function outsideHoles(r: LostRange, holes: readonly LostRange[]): LostRange[] {
  let parts = [r];
  for (const h of holes) {
    parts = parts.flatMap((p) => {
      if (h.to <= p.from || h.from >= p.to) return [p];
      const out: LostRange[] = [];
      if (h.from > p.from) out.push({ from: p.from, to: h.from });
      if (h.to < p.to) out.push({ from: h.to, to: p.to });
      return out;
    });
  }
  return parts;
}

/**
 * Keep copies of damaged log files before LevelDB's recovery replaces them:
 * `<walDir>/quarantine/<time>/` with the files and `report.json`. LevelDB
 * ignores the directory (it only touches files named like its own).
 */
export async function quarantine(walDir: string, files: readonly { file: string; bytes: Uint8Array }[], report: unknown): Promise<string> {
  const dir = join(walDir, 'quarantine', new Date().toISOString().replace(/[:.]/g, '-'));
  await mkdir(dir, { recursive: true });
  for (const { file, bytes } of files) await writeDurably(join(dir, file), bytes);
  await writeDurably(join(dir, 'report.json'), new TextEncoder().encode(`${JSON.stringify(report, null, 2)}\n`));
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
  return dir;
}

async function writeDurably(path: string, bytes: Uint8Array): Promise<void> {
  await writeFile(path, bytes);
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
