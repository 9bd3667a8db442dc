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
