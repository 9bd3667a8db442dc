import type { MachineDescription } from '../actors/diagram.js';

/**
 * An SVG drawing of a state machine, laid out from its definition (so the
 * dashboard's diagrams cannot drift from the machines). States are placed in
 * ranks by their longest distance from the initial state along "forward"
 * transitions (to a state defined later: the machines list their states in
 * lifecycle order), so the lifecycle reads top to bottom. Transitions back
 * to an earlier state (flushing -> serving) curve up on the right;
 * transitions that skip ranks arc along the sides.
 *
 * Every state is a `<g class="state" data-state="NAME">` with a count badge
 * (`<text class="count">`), every transition a `<path class="edge"
 * data-from data-to>` with its events in a `<title>`: the dashboard marks
 * the current states by toggling classes, without redrawing.
 */

const W = 104;
const H = 28;
/** Vertical distance between ranks, horizontal between the states of one rank. */
const RANK = 52;
const SLOT = 136;
/** Room on each side for the arcs of transitions that skip ranks. */
const SIDE = 72;
const PAD_TOP = 30;
const PAD_BOTTOM = 12;

export interface StateBox {
  readonly name: string;
  readonly x: number;
  readonly y: number;
  readonly rank: number;
}

export interface MachineLayout {
  readonly width: number;
  readonly height: number;
  readonly states: StateBox[];
}

export function layoutMachine(d: MachineDescription): MachineLayout {
  const index = new Map(d.states.map((s, i) => [s.name, i]));
  const rank = new Map<string, number>(d.states.map((s) => [s.name, 0]));
  // Longest path over forward edges; definition order is a topological order of them.
  for (const s of d.states) {
    for (const t of d.transitions) {
      if (t.from !== s.name || index.get(t.to)! <= index.get(t.from)!) continue;
      rank.set(t.to, Math.max(rank.get(t.to)!, rank.get(t.from)! + 1));
    }
  }
  const ranks: string[][] = [];
  for (const s of d.states) (ranks[rank.get(s.name)!] ??= []).push(s.name);
  const slots = Math.max(...ranks.map((r) => r?.length ?? 0));
  const width = SIDE * 2 + (slots - 1) * SLOT + W;
  const center = width / 2;
  const states: StateBox[] = [];
  ranks.forEach((names, r) => {
    names?.forEach((name, i) => {
      states.push({ name, rank: r, x: center + (i - (names.length - 1) / 2) * SLOT - W / 2, y: PAD_TOP + r * RANK });
    });
  });
  return { width, height: PAD_TOP + (ranks.length - 1) * RANK + H + PAD_BOTTOM, states };
}

const escape = (s: string): string => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const n = (v: number): string => String(Math.round(v * 10) / 10);

export function machineSvg(d: MachineDescription): string {
  const layout = layoutMachine(d);
  const box = new Map(layout.states.map((s) => [s.name, s]));
  const center = layout.width / 2;
  // One path per (from, to) pair; its title lists the events.
  const pairs = new Map<string, { from: string; to: string; events: string[] }>();
  for (const t of d.transitions) {
    const key = `${t.from}\u0000${t.to}`;
    const pair = pairs.get(key) ?? { from: t.from, to: t.to, events: [] };
    pair.events.push(t.event);
    pairs.set(key, pair);
  }
  const arcs = { left: 0, right: 0 };
  const edges: string[] = [];
  for (const { from, to, events } of pairs.values()) {
    const a = box.get(from)!;
    const b = box.get(to)!;
    let path: string;
    if (b.rank === a.rank + 1) {
      // Next rank down: bottom to top.
      const [x1, y1, x2, y2] = [a.x + W / 2 - 8, a.y + H, b.x + W / 2 - 8, b.y];
      path = `M${n(x1)},${n(y1)} C${n(x1)},${n(y1 + 16)} ${n(x2)},${n(y2 - 16)} ${n(x2)},${n(y2)}`;
    } else if (b.rank === a.rank - 1) {
      // One rank back up: beside the forward edge, bulging right.
      const [x1, y1, x2, y2] = [a.x + W / 2 + 10, a.y, b.x + W / 2 + 10, b.y + H];
      path = `M${n(x1)},${n(y1)} C${n(x1 + 22)},${n(y1 - 18)} ${n(x2 + 22)},${n(y2 + 18)} ${n(x2)},${n(y2)}`;
    } else if (Math.abs(a.x + W / 2 - center) > 1 && Math.abs(b.x + W / 2 - center) > 1 && (a.x + W / 2 - center) * (b.x + W / 2 - center) < 0) {
      // From one side to the other (flushing -> failed): straight across, bottom to top.
      const [x1, y1, x2, y2] = [a.x + W / 2, a.y + H, b.x + W / 2, b.y];
      path = `M${n(x1)},${n(y1)} C${n(x1)},${n(y1 + 30)} ${n(x2)},${n(y2 - 30)} ${n(x2)},${n(y2)}`;
    } else {
      // Longer spans arc along the side the two states lean to.
      const side = (a.x + b.x) / 2 + W / 2 > center + 1 ? 'right' : 'left';
      const k = arcs[side]++ % 5;
      const sign = side === 'right' ? 1 : -1;
      const x1 = side === 'right' ? a.x + W : a.x;
      const x2 = side === 'right' ? b.x + W : b.x;
      const y1 = a.y + H / 2 + (b.rank > a.rank ? 4 : -4);
      const y2 = b.y + H / 2 + (b.rank > a.rank ? -4 : 4);
      const out = Math.max(x1 * sign, x2 * sign) * sign + sign * (22 + k * 9);
      path = `M${n(x1)},${n(y1)} C${n(out)},${n(y1)} ${n(out)},${n(y2)} ${n(x2)},${n(y2)}`;
    }
    edges.push(
      `<path class="edge" data-from="${escape(from)}" data-to="${escape(to)}" d="${path}" marker-end="url(#arrow-${escape(d.id)})"><title>${escape(`${from} → ${to}: ${events.join(', ')}`)}</title></path>`,
    );
  }
  const states = layout.states.map((s) => {
    const def = d.states.find((x) => x.name === s.name)!;
    const title = `${s.name}${def.final ? ' (final)' : ''}${def.effect ? `: runs ${def.effect}` : ''}`;
    return (
      `<g class="state${def.final ? ' final' : ''}" data-state="${escape(s.name)}" transform="translate(${n(s.x)},${n(s.y)})">` +
      `<title>${escape(title)}</title>` +
      `<rect width="${W}" height="${H}" rx="${H / 2}"/>` +
      `<text class="name" x="${W / 2}" y="${H / 2 + 4.5}">${escape(s.name)}</text>` +
      `<text class="count" x="${W + 6}" y="${H / 2 + 4}"></text></g>`
    );
  });
  const initial = box.get(d.initial);
  const start = initial
    ? `<circle class="initial" cx="${n(initial.x + W / 2 - 8)}" cy="8" r="4.5"/>` +
      `<path class="edge initial-edge" d="M${n(initial.x + W / 2 - 8)},12 L${n(initial.x + W / 2 - 8)},${n(initial.y)}" marker-end="url(#arrow-${escape(d.id)})"/>`
    : '';
  return (
    `<svg class="machine" data-machine="${escape(d.id)}" viewBox="0 0 ${n(layout.width)} ${n(layout.height)}" xmlns="http://www.w3.org/2000/svg" role="img" aria-label="${escape(d.id)} machine">` +
    `<defs><marker id="arrow-${escape(d.id)}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs>` +
    `<g class="edges">${edges.join('')}${start}</g><g class="states">${states.join('')}</g></svg>`
  );
}
