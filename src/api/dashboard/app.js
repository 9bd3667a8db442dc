// The reprise dashboard: plain JavaScript, no build step, no network but
// this server. It draws the status snapshot it gets on connecting to
// /v1/events, applies each transition as it arrives, and takes fresh status
// (entry ids, memtables) when the server sends it.

const MAX_TRANSITIONS = 100;
const FLASH_MS = 2000;

const view = {
  status: null,
  machines: [],
  /** Newest first. */
  transitions: [],
  /** shard id -> latest replay progress */
  replay: new Map(),
  /** "kind:id" -> time of its last transition, to mark changed rows */
  changed: new Map(),
};

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const pill = (state) => `<span class="pill s-${esc(state)}">${esc(state)}</span>`;
const id = (v) => (v === undefined || v === null || v < 0 ? '–' : String(v));

function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

/** A span of time, coarser as it grows: 850 ms, 12.3 s, 4 min 3 s. */
function duration(ms) {
  ms = Math.max(0, Math.round(ms));
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.floor((ms % 60_000) / 1000)} s`;
}

/** A follower's lag: entries it has not applied yet, and how long after its append it applied the last one. */
function lag(l) {
  return `<span class="lag${l.entries > 0 ? ' behind' : ''}">${l.entries} ${l.entries === 1 ? 'entry' : 'entries'} · ${l.ms} ms</span>`;
}
const lagAttrs = (l) => (l ? ` data-lag-entries="${l.entries}" data-lag-ms="${l.ms}"` : '');

function time(ms) {
  const d = new Date(ms);
  const pad = (x, w = 2) => String(x).padStart(w, '0');
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

// ------------------------------------------------------------------ model

function shardsOf(status) {
  return (status?.nodes ?? []).flatMap((n) => n.shards.map((s) => ({ ...s, node: n.id })));
}

function applyTransition(t) {
  const status = view.status;
  if (!status) return;
  for (const node of status.nodes) {
    if (t.kind === 'node' && node.id === t.id) node.state = t.to;
    for (const shard of node.shards) {
      if (t.kind === 'shard' && shard.id === t.id) {
        shard.state = t.to;
        // Only a promoted follower goes on to serve: it leads now.
        if (t.to === 'serving' && shard.role === 'follower') {
          shard.role = 'leader';
          delete shard.lag;
        }
        if (t.reason) shard.error = t.reason;
      }
      for (const region of shard.regions) {
        if (t.kind === 'region' && region.id === t.id) {
          region.state = t.to;
          if (t.reason) region.error = t.reason;
        }
      }
    }
  }
}

// ------------------------------------------------------------------ render

let frame = 0;
function render() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    draw();
  });
}

function isChanged(key, now) {
  const at = view.changed.get(key);
  return at !== undefined && now - at < FLASH_MS;
}

function draw() {
  const status = view.status;
  const now = Date.now();
  const shards = shardsOf(status);
  const regions = shards.flatMap((s) => s.regions.map((r) => ({ ...r, shard: s.id })));
  const tables = new Map();
  for (const r of regions) {
    if (!tables.has(r.table)) tables.set(r.table, []);
    tables.get(r.table).push(r);
  }

  // Summary line.
  const nodes = status?.nodes ?? [];
  const memtable = regions.reduce((sum, r) => sum + (r.memtableBytes || 0), 0);
  $('summary').innerHTML = nodes
    .map((n) => `<span class="item">node <b>${esc(n.id)}</b> ${pill(n.state)}${n.error ? ` <span class="error">${esc(n.error)}</span>` : ''}</span>`)
    .concat([
      `<span class="item">WAL <b>${esc(status?.wal?.provider ?? '?')}</b></span>`,
      `<span class="item"><b>${shards.length}</b> shards</span>`,
      `<span class="item"><b>${tables.size}</b> tables</span>`,
      `<span class="item"><b>${regions.length}</b> regions</span>`,
      `<span class="item">memtables <b>${bytes(memtable)}</b></span>`,
    ])
    .join('');

  // Shards.
  $('shards').tBodies[0].innerHTML =
    shards
      .map((s) => {
        const p = view.replay.get(s.id);
        let note = s.error ? `<span class="error">${esc(s.error)}</span>` : '';
        if (s.state === 'replaying' && p) {
          // Entries read so far against the ids still ahead: close enough for a bar.
          const remaining = Math.max(0, p.targetId - p.lastId);
          const done = p.entries / Math.max(1, p.entries + remaining);
          const rate = Math.round(p.entries / Math.max(p.elapsedMs / 1000, 0.001));
          note = `<span class="bar"><span style="width:${(done * 100).toFixed(1)}%"></span></span> ${p.entries} entries, ${rate}/s, ${remaining} to go`;
        }
        return `<tr data-shard="${s.id}" data-role="${esc(s.role)}"${lagAttrs(s.lag)} class="${isChanged(`shard:${s.id}`, now) ? 'changed' : ''}">
          <td>shard ${s.id}</td><td class="mono">${esc(s.topic)}</td><td class="state">${pill(s.state)}</td><td>${esc(s.role)}</td>
          <td class="num">${s.epoch}</td><td class="num">${id(s.lastEntryId)}</td><td class="num">${id(s.flushedEntryId)}</td>
          <td class="num">${s.regions.length}</td><td>${s.lag ? lag(s.lag) : ''}</td><td>${note}</td></tr>`;
      })
      .join('') || `<tr><td colspan="10" class="empty">no shards</td></tr>`;

  // Tables and their regions.
  $('tables').innerHTML =
    [...tables]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, list]) => {
        list.sort((a, b) => a.partition - b.partition);
        const rows = list
          .map(
            (r) => `<tr data-region="${r.id}" class="${isChanged(`region:${r.id}`, now) ? 'changed' : ''}">
              <td>region ${r.id}</td><td class="num">${r.partition}</td><td class="num">${r.shard}</td><td class="state">${pill(r.state)}</td>
              <td class="num">${id(r.appliedEntryId)}</td><td class="num">${id(r.flushedEntryId)}</td><td class="num">${bytes(r.memtableBytes)}</td>
              <td>${r.error ? `<span class="error">${esc(r.error)}</span>` : ''}</td></tr>`,
          )
          .join('');
        return `<div class="table-card" data-table="${esc(name)}">
          <h3>${esc(name)} <span class="muted">${list.length} region${list.length === 1 ? '' : 's'}</span></h3>
          <table class="grid"><thead><tr><th>region</th><th class="num">partition</th><th class="num">shard</th><th>state</th>
          <th class="num">applied entry</th><th class="num">flushed entry</th><th class="num">memtable</th><th>note</th></tr></thead>
          <tbody>${rows}</tbody></table></div>`;
      })
      .join('') || `<p class="empty">No tables yet: <code>POST /v1/tables</code> or write line protocol to <code>/v1/influxdb/write</code>.</p>`;

  // Recent transitions, newest first.
  $('transitions').innerHTML =
    view.transitions
      .map(
        (t) => `<li data-kind="${esc(t.kind)}" data-id="${esc(t.id)}" data-to="${esc(t.to)}">
          <span class="when">${time(t.at)}</span>
          <span class="who">${esc(t.kind)} ${esc(t.id)}</span>
          <span class="what">${pill(t.from)}<span class="arrow">→</span>${pill(t.to)}</span>
          ${t.reason ? `<span class="reason">${esc(t.reason)}</span>` : ''}</li>`,
      )
      .join('') || `<li class="empty">none yet</li>`;

  // Machines: count actors per state and mark the current ones.
  const counts = {
    node: countBy(nodes.map((n) => n.state)),
    shard: countBy(shards.map((s) => s.state)),
    region: countBy(regions.map((r) => r.state)),
  };
  for (const m of view.machines) {
    const svg = document.querySelector(`.machine-card[data-kind="${m.kind}"] svg`);
    if (!svg) continue;
    const c = counts[m.kind] ?? new Map();
    for (const g of svg.querySelectorAll('g.state')) {
      const n = c.get(g.dataset.state) ?? 0;
      g.classList.toggle('current', n > 0);
      g.querySelector('text.count').textContent = n > 0 && m.kind !== 'node' ? `×${n}` : '';
    }
    for (const e of svg.querySelectorAll('path.edge[data-from]')) e.classList.toggle('live', (c.get(e.dataset.from) ?? 0) > 0);
    const legend = document.querySelector(`.machine-card[data-kind="${m.kind}"] .legend`);
    legend.innerHTML = [...c].map(([state, n]) => `${pill(state)} <b>${n}</b>`).join(' ') || '<span class="muted">none</span>';
  }
}

function countBy(values) {
  const m = new Map();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}

function drawMachines() {
  $('machines').innerHTML = view.machines
    .map(
      (m) => `<figure class="machine-card" data-kind="${esc(m.kind)}">
        <figcaption><b>${esc(m.kind)}</b> machine <span class="legend"></span></figcaption>
        ${m.svg}</figure>`,
    )
    .join('');
}

// ------------------------------------------------------------------ live

function setConnection(state, label) {
  const el = $('connection');
  el.dataset.state = state;
  el.querySelector('.label').textContent = label;
}

function connect() {
  const events = new EventSource('/v1/events');
  events.addEventListener('snapshot', (e) => {
    const data = JSON.parse(e.data);
    view.status = data.status;
    view.transitions = data.transitions.slice(-MAX_TRANSITIONS).reverse();
    setConnection('live', 'live');
    render();
  });
  events.addEventListener('status', (e) => {
    view.status = JSON.parse(e.data);
    render();
  });
  events.addEventListener('transition', (e) => {
    const t = JSON.parse(e.data);
    applyTransition(t);
    view.transitions.unshift(t);
    if (view.transitions.length > MAX_TRANSITIONS) view.transitions.length = MAX_TRANSITIONS;
    view.changed.set(`${t.kind}:${t.id}`, Date.now());
    setTimeout(render, FLASH_MS + 50);
    render();
  });
  events.addEventListener('replay', (e) => {
    const p = JSON.parse(e.data);
    view.replay.set(p.shardId, p);
    render();
  });
  events.onopen = () => setConnection('live', 'live');
  events.onerror = () => setConnection('down', 'reconnecting…');
}

// ------------------------------------------------------------------ cluster

/**
 * In a cluster (a `reprise node`), meta's view: every node's liveness and
 * the shards it holds, each shard's leader, epoch and followers (with the
 * lag each follower's node reported in its last heartbeat), and the
 * procedures running. Polled, since it comes from meta over the transport;
 * the panel stays hidden embedded.
 */
async function pollCluster() {
  try {
    const response = await fetch('/v1/cluster/status');
    const status = await response.json();
    if (status.meta) drawCluster(status.meta);
  } catch {
    // not reachable right now: keep the last view
  }
  setTimeout(pollCluster, 1000);
}

function drawCluster(meta) {
  $('cluster').hidden = false;
  const now = Date.now();
  const c = meta.counters ?? {};
  const procedures = meta.procedures ?? [];
  $('cluster-summary').textContent =
    `topology ${meta.topology} · ${c.failovers ?? 0} failovers · ${c.migrations ?? 0} migrations · ${c.rebalanceMoves ?? 0} rebalance moves` +
    ` · ${procedures.length} procedures running · meta log entry ${meta.entryId}`;
  // Each node's shards as it reported them in its last heartbeat, by "node shard".
  const reported = new Map();
  const alive = new Map();
  for (const n of meta.nodes) {
    alive.set(n.id, n.alive);
    for (const s of n.shards) reported.set(`${n.id} ${s.id}`, s);
  }
  $('cluster-nodes').tBodies[0].innerHTML = meta.nodes
    .map(
      (n) => `<tr data-node="${esc(n.id)}" data-alive="${n.alive}"><td>${esc(n.id)}</td><td><span class="pill s-${n.alive ? 'serving' : 'failed'}">${n.alive ? 'alive' : 'dead'}</span></td>
        <td class="num">${n.lastHeartbeatMsAgo === null ? '-' : `${n.lastHeartbeatMsAgo} ms ago`}</td>
        <td class="wrap">${n.shards.map((s) => `${s.id} ${esc(s.state)} e${s.epoch}${s.lag ? ` (${lag(s.lag)})` : ''}`).join(', ')}</td></tr>`,
    )
    .join('');
  $('cluster-shards').tBodies[0].innerHTML = meta.shards
    .map((s) => {
      const followers = s.followers ?? [];
      const cells = followers.map((f) => follower(f, s.id, reported.get(`${f} ${s.id}`), alive.get(f))).join('');
      return `<tr data-shard="${s.id}" data-leader="${esc(s.leader ?? '')}" data-followers="${esc(followers.join(','))}"><td>shard ${s.id}</td><td>${esc(s.leader ?? '-')}</td>
        <td class="num">${s.epoch}</td><td class="wrap">${cells || '<span class="muted">none</span>'}</td></tr>`;
    })
    .join('');
  // The meta replicas: the one leading, its epoch, and how far each follower has applied the meta log.
  $('cluster-metas').tBodies[0].innerHTML =
    (meta.members ?? [])
      .map(
        (m) => `<tr data-meta="${esc(m.id)}" data-state="${esc(m.state)}"><td>${esc(m.id)}</td><td>${pill(m.state)}</td>
          <td class="num">${m.epoch ?? (m.leader ? `<span class="muted">${m.leader.epoch}</span>` : '-')}</td><td class="num">${m.appliedEntryId} (${Math.max(0, meta.entryId - m.appliedEntryId)})</td></tr>`,
      )
      .join('') || `<tr><td colspan="4" class="empty">no meta replica reported</td></tr>`;
  $('cluster-procedures').tBodies[0].innerHTML =
    procedures
      .map(
        (p) => `<tr data-procedure="${p.id}" data-kind="${esc(p.kind)}" data-shard="${p.shard ?? ''}" data-state="${esc(p.state)}">
          <td>#${p.id} ${esc(p.kind)}${p.parent === null || p.parent === undefined ? '' : ` <span class="muted">of #${p.parent}</span>`}</td>
          <td>${p.shard !== null && p.shard !== undefined ? `shard ${p.shard}` : p.table !== null && p.table !== undefined ? `table #${p.table}` : '–'}</td><td>${p.from || p.to ? `${esc(p.from ?? '?')} → ${esc(p.to ?? '?')}` : '–'}</td>
          <td>${pill(p.state)} <span class="muted">for ${duration(now - p.stepAt)}</span></td>
          <td class="num" title="started ${time(p.startedAt)}">${duration(now - p.startedAt)}</td></tr>`,
      )
      .join('') || `<tr><td colspan="5" class="empty">no procedures running</td></tr>`;
}

/** One follower of a shard: its lag as its node last reported it, or why there is none. */
function follower(node, shardId, reported, alive) {
  let detail;
  if (alive === false) detail = '<span class="dead">dead</span>';
  else if (!reported) detail = '<span class="muted">not reported yet</span>';
  else if (reported.state !== 'following') detail = `${pill(reported.state)}${reported.lag ? ` ${lag(reported.lag)}` : ''}`;
  else detail = reported.lag ? lag(reported.lag) : '';
  const attrs = alive === false ? '' : lagAttrs(reported?.lag);
  return `<span class="follower" data-follower="${esc(node)}" data-state="${esc(reported?.state ?? '')}"${attrs} title="shard ${shardId} on ${esc(node)}"><b>${esc(node)}</b> ${detail}</span>`;
}

// ------------------------------------------------------------------ query

// The SQL console: statements go to POST /v1/sql as a form field (the
// browser sends this page's Origin, which the server lets write); each
// statement's output is drawn as a table, an affected-rows line, or the
// error. A result with a time column and a numeric one gets a line chart,
// drawn by uPlot (served from its npm package at /dashboard/vendor/).

const MAX_TABLE_ROWS = 1000;
const MAX_SERIES = 24;
const CHART_HEIGHT = 260;
const TIME_TYPE = 'TimestampMillisecond';
const NUMERIC_TYPES = new Set(['Float64', 'Int64']);
const SERIES_COLOURS = ['#3b5bdb', '#e8590c', '#2f9e44', '#ae3ec9', '#0c8599', '#e03131', '#f08c00', '#5c7cfa', '#66a80f', '#c2255c'];
const QUERY_KEY = 'reprise.dashboard.sql';

const query = {
  runs: 0,
  running: false,
  /** The uPlot charts now shown, destroyed when the next answer is drawn. */
  charts: [],
};

const count = (n) => Number(n).toLocaleString('en-US');
const plural = (n, one, many = `${one}s`) => `${count(n)} ${n === 1 ? one : many}`;

/** An epoch-ms time as 'YYYY-MM-DD HH:MM:SS.mmm', UTC. */
function utc(ms) {
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return String(ms);
  const iso = d.toISOString(); // 'YYYY-MM-DDTHH:MM:SS.mmmZ', longer past year 9999
  return iso.length === 24 ? `${iso.slice(0, 10)} ${iso.slice(11, 23)}` : iso;
}

/**
 * The time axis's labels, in UTC like the table: as precise as the ticks
 * need, with the date under the first tick and wherever it changes.
 */
function timeTicks(_u, splits) {
  const texts = splits.map((v) => (v === null || v === undefined ? '' : utc(v)));
  const valid = texts.filter(Boolean);
  if (valid.length > 0 && valid.every((t) => t.endsWith(' 00:00:00.000'))) return texts.map((t) => t.slice(0, 10));
  const end = valid.some((t) => !t.endsWith('.000')) ? 23 : valid.some((t) => !t.endsWith(':00.000')) ? 19 : 16;
  let day = '';
  return texts.map((t) => {
    if (!t) return '';
    const date = t.slice(0, 10);
    const label = date === day ? t.slice(11, end) : `${t.slice(11, end)}\n${date}`;
    day = date;
    return label;
  });
}

function cell(value, type) {
  if (value === null || value === undefined) return '<td class="null">NULL</td>';
  if (type === TIME_TYPE && typeof value === 'number') return `<td class="num" title="${value}">${utc(value)}</td>`;
  // 15 significant digits: what a double holds of a decimal, without the noise of sums (0.1 + 0.2); the exact value on hover.
  if (type === 'Float64' && typeof value === 'number') return `<td class="num" title="${value}">${Number(value.toPrecision(15))}</td>`;
  if (NUMERIC_TYPES.has(type)) return `<td class="num">${esc(value)}</td>`;
  return `<td>${esc(value)}</td>`;
}

function recordsHtml(records, index) {
  const columns = records.schema?.column_schemas ?? [];
  const rows = records.rows ?? [];
  const total = records.total_rows ?? rows.length;
  const shown = rows.slice(0, MAX_TABLE_ROWS);
  const head = columns
    .map((c) => `<th class="${NUMERIC_TYPES.has(c.data_type) || c.data_type === TIME_TYPE ? 'num' : ''}">${esc(c.name)} <span class="type">${esc(c.data_type)}</span></th>`)
    .join('');
  const body =
    shown.map((r) => `<tr>${columns.map((c, i) => cell(r[i], c.data_type)).join('')}</tr>`).join('') ||
    `<tr><td colspan="${Math.max(1, columns.length)}" class="empty">no rows</td></tr>`;
  const capped = shown.length < total ? ` · <span class="cap">showing ${count(shown.length)} of ${count(total)}</span>` : '';
  return `<div class="result" data-index="${index}" data-kind="records" data-rows="${total}">
    <div class="result-head"><b>#${index + 1}</b> ${plural(total, 'row')}${capped}</div>
    ${chartColumns(records) ? '<div class="chart"></div>' : ''}
    <div class="table-wrap"><table class="grid result-table"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table></div></div>`;
}

function outputHtml(output, index) {
  if (output.records) return recordsHtml(output.records, index);
  if ('affectedrows' in output) {
    return `<div class="result" data-index="${index}" data-kind="affected" data-affected="${esc(output.affectedrows)}">
      <div class="result-head"><b>#${index + 1}</b> ${plural(output.affectedrows, 'row')} affected</div></div>`;
  }
  return `<div class="result" data-index="${index}" data-kind="other"><div class="result-head"><b>#${index + 1}</b></div><pre>${esc(JSON.stringify(output))}</pre></div>`;
}

/** The columns a result's chart would use, or undefined if it gets none. */
function chartColumns(records) {
  const columns = records.schema?.column_schemas ?? [];
  const time = columns.findIndex((c) => c.data_type === TIME_TYPE);
  const numeric = columns.flatMap((c, i) => (NUMERIC_TYPES.has(c.data_type) ? [i] : []));
  const strings = columns.flatMap((c, i) => (c.data_type === 'String' ? [i] : []));
  if (time < 0 || numeric.length === 0 || !(records.rows ?? []).some((r) => typeof r[time] === 'number')) return undefined;
  return { columns, time, numeric, strings };
}

/**
 * What a result's chart shows: x is the first time column; one series per
 * numeric column and, when the result has string columns (GROUP BY host),
 * per combination of their values; at most MAX_SERIES. Rows need not come
 * sorted by time: the x values are.
 */
function chartPlan(records) {
  const c = chartColumns(records);
  if (!c) return undefined;
  const { columns, time, numeric, strings } = c;
  const rows = records.rows.filter((r) => typeof r[time] === 'number');
  const xs = [...new Set(rows.map((r) => r[time]))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const groupOf = (r) => JSON.stringify(strings.map((i) => r[i] ?? null));
  // The (numeric column, group) pairs that have a value, in a stable order.
  const keys = new Map();
  for (const r of rows) {
    const group = groupOf(r);
    for (const n of numeric) if (r[n] !== null && r[n] !== undefined) keys.set(`${n} ${group}`, { n, group });
  }
  const ordered = [...keys.values()].sort((a, b) => numeric.indexOf(a.n) - numeric.indexOf(b.n) || (a.group < b.group ? -1 : a.group > b.group ? 1 : 0));
  const series = new Map(
    ordered.slice(0, MAX_SERIES).map(({ n, group }) => {
      const values = JSON.parse(group).map((v) => (v === null ? 'NULL' : v));
      const label = values.length ? `${columns[n].name} · ${values.join(', ')}` : columns[n].name;
      return [`${n} ${group}`, { label, values: new Array(xs.length).fill(null) }];
    }),
  );
  for (const r of rows) {
    const group = groupOf(r);
    for (const n of numeric) {
      const s = series.get(`${n} ${group}`);
      if (s && r[n] !== null && r[n] !== undefined) s.values[at.get(r[time])] = Number(r[n]);
    }
  }
  return { timeName: columns[time].name, xs, series: [...series.values()], total: ordered.length };
}

function drawChart(el, records) {
  const plan = chartPlan(records);
  const uPlot = globalThis.uPlot;
  if (!plan) return;
  if (!uPlot) {
    el.innerHTML = '<p class="empty">no chart: the chart library (/dashboard/vendor/uPlot.iife.min.js) did not load</p>';
    return;
  }
  el.dataset.series = String(plan.series.length);
  el.dataset.points = String(plan.xs.length);
  const css = getComputedStyle(document.documentElement);
  const axis = { stroke: css.getPropertyValue('--muted').trim(), grid: { stroke: css.getPropertyValue('--line').trim(), width: 1 }, ticks: { stroke: css.getPropertyValue('--line').trim(), width: 1 } };
  const chart = new uPlot(
    {
      width: Math.max(300, el.clientWidth),
      height: CHART_HEIGHT,
      ms: 1, // the x values are epoch milliseconds
      tzDate: (ms) => uPlot.tzDate(new Date(ms), 'Etc/UTC'),
      scales: { x: { time: true } },
      padding: [12, 28, null, null], // room for the last time label
      series: [
        { label: `${plan.timeName} (UTC)`, value: (_u, v) => (v === null || v === undefined ? '--' : utc(v)) },
        ...plan.series.map((s, i) => ({ label: s.label, stroke: SERIES_COLOURS[i % SERIES_COLOURS.length], width: 1.5, spanGaps: true })),
      ],
      axes: [{ ...axis, values: timeTicks, space: 90, size: 50 }, { ...axis, size: 60 }],
    },
    [plan.xs, ...plan.series.map((s) => s.values)],
    el,
  );
  if (plan.total > plan.series.length) el.insertAdjacentHTML('beforeend', `<p class="cap">showing ${plan.series.length} of ${plan.total} series</p>`);
  query.charts.push({ chart, el });
}

window.addEventListener('resize', () => {
  for (const { chart, el } of query.charts) chart.setSize({ width: Math.max(300, el.clientWidth), height: CHART_HEIGHT });
});

function setQueryState(state, text) {
  $('query').dataset.state = state;
  $('query-status').textContent = text;
}

/** Put the caret where a syntax error says ("at line 2, column 3"), counted from the start of what was run. */
function caretAt(message, base) {
  const m = /at line (\d+), column (\d+)/.exec(message);
  if (!m) return;
  const area = $('query-sql');
  const lines = area.value.slice(base).split('\n');
  const line = Number(m[1]) - 1;
  if (line >= lines.length) return;
  let offset = base;
  for (let i = 0; i < line; i++) offset += lines[i].length + 1;
  offset += Math.min(Number(m[2]) - 1, lines[line].length);
  area.focus();
  area.setSelectionRange(offset, offset);
}

function drawAnswer(answer, base) {
  for (const { chart } of query.charts) chart.destroy();
  query.charts = [];
  const box = $('query-results');
  if (answer.error) {
    const { code = 'ERROR', message = '' } = answer.error;
    box.innerHTML = `<div class="result error-result" data-kind="error" data-code="${esc(code)}"><span class="code">${esc(code)}</span> <span class="message">${esc(message)}</span>
      <p class="muted">Of several statements, those before the failing one have taken effect.</p></div>`;
    setQueryState('error', `failed: ${code}`);
    if (code === 'SQL_SYNTAX') caretAt(message, base);
  } else {
    const outputs = answer.output ?? [];
    box.innerHTML = outputs.map(outputHtml).join('') || '<p class="empty">no output</p>';
    // Charts once their boxes are laid out: they take their width from them.
    outputs.forEach((o, i) => {
      const el = o.records && box.querySelector(`.result[data-index="${i}"] .chart`);
      if (el) drawChart(el, o.records);
    });
    setQueryState('done', `${plural(outputs.length, 'statement')} · ${answer.execution_time_ms} ms`);
  }
  box.dataset.run = String(++query.runs);
}

/** Run the selected text, or all of it. */
async function runQuery() {
  const area = $('query-sql');
  const selected = area.selectionStart !== area.selectionEnd ? area.value.slice(area.selectionStart, area.selectionEnd) : '';
  const base = selected.trim() ? area.selectionStart : 0;
  const sql = selected.trim() ? selected : area.value;
  if (query.running || !sql.trim()) return;
  try {
    localStorage.setItem(QUERY_KEY, area.value);
  } catch {
    // storage refused (private mode, quota): only the restore on reload is lost
  }
  query.running = true;
  $('query-run').disabled = true;
  setQueryState('running', 'running…');
  let answer;
  try {
    const response = await fetch('/v1/sql', { method: 'POST', body: new URLSearchParams({ sql }) });
    const text = await response.text();
    try {
      answer = JSON.parse(text);
    } catch {
      answer = { error: { code: `HTTP_${response.status}`, message: text.slice(0, 500) || response.statusText } };
    }
    if (!response.ok && !answer.error) answer = { error: { code: `HTTP_${response.status}`, message: text.slice(0, 500) } };
  } catch (err) {
    answer = { error: { code: 'UNREACHABLE', message: `no answer from the server: ${err.message}` } };
  }
  query.running = false;
  $('query-run').disabled = false;
  drawAnswer(answer, base);
}

function setupQuery() {
  const area = $('query-sql');
  try {
    area.value = localStorage.getItem(QUERY_KEY) ?? '';
  } catch {
    // no storage: start empty
  }
  area.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      void runQuery();
    }
  });
  $('query-run').addEventListener('click', () => void runQuery());
}

setupQuery();
fetch('/v1/machines')
  .then((r) => r.json())
  .then((data) => {
    view.machines = data.machines;
    drawMachines();
    render();
  })
  .catch(() => undefined);
connect();
pollCluster();
