import { formatTimestamp } from '../frontend/sql/eval.js';
import type { ClusterStatus, RuntimeStatus } from '../api/runtime.js';

/** Plain-text tables for terminals: columns padded to their widest cell. */
export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

export function renderRows(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return '(no rows)\n';
  const header = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return renderTable(header, rows.map((r) => header.map((h) => (r[h] === null || r[h] === undefined ? '' : String(r[h]))))) + `(${rows.length} rows)\n`;
}

/** /v1/sql's answer: each statement's rows as a table (timestamps as UTC text), or its affected rows. */
export function renderSqlOutput(result: {
  output: ({ affectedrows: number } | { records: { schema: { column_schemas: { name: string; data_type: string }[] }; rows: unknown[][] } })[];
  execution_time_ms: number;
}): string {
  const out: string[] = [];
  for (const o of result.output) {
    if ('affectedrows' in o) {
      out.push(`${o.affectedrows} rows affected\n`);
      continue;
    }
    const columns = o.records.schema.column_schemas;
    const text = (v: unknown, type: string): string =>
      v === null || v === undefined ? 'NULL' : type === 'TimestampMillisecond' && typeof v === 'number' ? formatTimestamp(v) : String(v);
    out.push(renderTable(columns.map((c) => c.name), o.records.rows.map((row) => row.map((v, i) => text(v, columns[i].data_type)))));
    out.push(`(${o.records.rows.length} rows)\n`);
  }
  out.push(`${result.execution_time_ms} ms\n`);
  return out.join('');
}

export function renderStatus(status: RuntimeStatus): string {
  const out: string[] = [];
  for (const node of status.nodes) {
    out.push(`node ${node.id}  ${node.state}  (wal: ${status.wal.provider})${node.error ? `  error: ${node.error}` : ''}\n`);
    const rows: string[][] = [];
    for (const shard of node.shards) {
      rows.push([`shard ${shard.id}`, shard.topic, shard.state, shard.role, String(shard.epoch), String(shard.lastEntryId), String(shard.flushedEntryId), lagOf(shard.lag), shard.error ?? '']);
      for (const region of shard.regions) {
        rows.push([`  region ${region.id}`, `${region.table}[${region.partition}]`, region.state, '', '', String(region.appliedEntryId), String(region.flushedEntryId), '', region.error ?? '']);
      }
    }
    out.push(renderTable(['actor', 'topic/table', 'state', 'role', 'epoch', 'last id', 'flushed id', 'lag', 'error'], rows));
  }
  return out.join('');
}

/** A follower's lag as `N entries, M ms`; empty for a leader. */
function lagOf(lag: { readonly entries: number; readonly ms: number } | undefined): string {
  return lag ? `${lag.entries} entries, ${lag.ms} ms` : '';
}

/** `reprise cluster status`: meta's view (nodes, shards) then every node's actor tree. */
export function renderClusterStatus(status: ClusterStatus): string {
  const out: string[] = [];
  if (status.meta) {
    out.push(`cluster (topology: ${status.meta.topology}, meta log entry ${status.meta.entryId})\n`);
    const members = status.meta.members ?? [];
    if (members.length > 0) {
      out.push(
        renderTable(
          ['meta', 'state', 'epoch', 'applied (lag)'],
          members.map((m) => [m.id, m.state, m.epoch === null ? '-' : String(m.epoch), `${m.appliedEntryId} (${Math.max(0, status.meta!.entryId - m.appliedEntryId)})`]),
        ),
      );
    }
    out.push(
      renderTable(
        ['node', 'alive', 'last heartbeat', 'holds'],
        status.meta.nodes.map((n) => [
          n.id,
          n.alive ? 'yes' : 'NO',
          n.lastHeartbeatMsAgo === null ? '-' : `${n.lastHeartbeatMsAgo} ms ago`,
          n.shards.map((s) => `${s.id}(${s.role === 'follower' ? 'follower, ' : ''}${s.state}, epoch ${s.epoch})`).join(' '),
        ]),
      ),
    );
    // A follower's lag as its node last reported it to meta.
    const reported = (node: string, shard: number) => status.meta!.nodes.find((n) => n.id === node)?.shards.find((s) => s.id === shard);
    out.push(
      renderTable(
        ['shard', 'topic', 'leader', 'epoch', 'followers (lag)'],
        status.meta.shards.map((s) => [
          String(s.id),
          s.topic,
          s.leader ?? '-',
          String(s.epoch),
          (s.followers ?? []).map((f) => `${f} (${lagOf(reported(f, s.id)?.lag) || '?'})`).join(' ') || '-',
        ]),
      ),
    );
    const procedures = status.meta.procedures ?? [];
    if (procedures.length > 0) {
      out.push(
        renderTable(
          ['procedure', 'kind', 'shard', 'from -> to', 'step', 'running for'],
          procedures.map((p) => [`#${p.id}${p.parent !== null ? ` (of #${p.parent})` : ''}`, p.kind, p.shard !== null ? String(p.shard) : p.table !== undefined ? `table #${p.table}` : '-', p.from === null ? '-' : `${p.from} -> ${p.to}`, p.state, `${Date.now() - p.startedAt} ms`]),
        ),
      );
    }
    out.push('\n');
  }
  out.push(renderStatus(status));
  return out.join('');
}
