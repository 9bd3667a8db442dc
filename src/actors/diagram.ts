import type { AnyStateMachine } from 'xstate';
import { nodeMachine } from './node-machine.js';
import { regionMachine } from './region-machine.js';
import { shardMachine } from './shard-machine.js';

/**
 * Read a machine's states and transitions from its definition, so the
 * documentation (ARCHITECTURE.md), the dashboard and the model tests'
 * coverage all come from the one specification and cannot drift from it.
 */
export interface MachineTransition {
  readonly from: string;
  /** The event, or `<effect> done` / `<effect> error` for an invoked effect settling. */
  readonly event: string;
  readonly to: string;
  /** The guard that must hold, when the transition has a named one. */
  readonly guard?: string;
}

export interface MachineDescription {
  readonly id: string;
  readonly initial: string;
  /** `tags`: what the state admits (`writable`, `readable`), as the actors ask. */
  readonly states: { readonly name: string; readonly effect?: string; readonly final: boolean; readonly tags?: readonly string[] }[];
  readonly transitions: MachineTransition[];
}

export function describeMachine(machine: AnyStateMachine): MachineDescription {
  const states: MachineDescription['states'][number][] = [];
  const transitions: MachineTransition[] = [];
  for (const [name, node] of Object.entries(machine.root.states)) {
    const effect = node.invoke[0]?.src;
    states.push({ name, final: node.type === 'final', ...(typeof effect === 'string' ? { effect } : {}), ...(node.tags.length > 0 ? { tags: [...node.tags] } : {}) });
    for (const [eventType, definitions] of node.transitions) {
      const event = eventType.startsWith('xstate.done.actor.')
        ? `${String(effect)} done`
        : eventType.startsWith('xstate.error.actor.')
          ? `${String(effect)} error`
          : eventType.startsWith('xstate.after.')
            ? `after ${eventType.split('.')[2]}`
            : eventType;
      for (const definition of definitions) {
        const guard = guardName(definition.guard);
        for (const target of definition.target ?? []) transitions.push({ from: name, event, to: target.key, ...(guard ? { guard } : {}) });
      }
    }
    // The machine's own `on`: every running state takes it, unless it handles (or forbids) the event itself.
    if (node.type === 'final') continue;
    for (const [event, definitions] of machine.root.transitions) {
      if (node.transitions.has(event)) continue;
      for (const definition of definitions) {
        for (const target of definition.target ?? []) if (target.key !== name) transitions.push({ from: name, event, to: target.key });
      }
    }
  }
  return { id: machine.id, initial: String(machine.root.initial?.target[0]?.key), states, transitions };
}

/** A guard as the machine names it: `patient`, `sourceOpening and patient`; undefined for none or an inline function. */
function guardName(guard: unknown): string | undefined {
  if (typeof guard === 'string') return guard;
  // xstate's and/or: a function carrying its operands.
  const operands = (guard as { guards?: unknown } | undefined)?.guards;
  if (typeof guard === 'function' && Array.isArray(operands)) return operands.map((g) => guardName(g) ?? '?').join(` ${guard.name} `);
  if (typeof guard !== 'object' || guard === null) return undefined;
  const { type, params } = guard as { type?: unknown; params?: unknown };
  if (typeof type === 'string') return params && typeof params === 'object' && !Array.isArray(params) ? `${type}(${Object.values(params).join(', ')})` : type;
  return undefined;
}

/** A transition's label in a diagram: its event, and its guard in brackets. */
export function transitionLabel(t: MachineTransition): string {
  return t.guard ? `${t.event} [${t.guard}]` : t.event;
}

export const MACHINES: Record<string, AnyStateMachine> = {
  node: nodeMachine,
  shard: shardMachine,
  region: regionMachine,
};

/** A Mermaid state diagram of the machine. */
export function mermaidDiagram(machine: AnyStateMachine): string {
  const d = describeMachine(machine);
  const lines = ['stateDiagram-v2', `  [*] --> ${d.initial}`];
  for (const t of d.transitions) lines.push(`  ${t.from} --> ${t.to}: ${transitionLabel(t)}`);
  for (const s of d.states) if (s.final) lines.push(`  ${s.name} --> [*]`);
  return lines.join('\n');
}

/** The generated part of ARCHITECTURE.md: one diagram and table per machine. */
export function machinesMarkdown(): string {
  const out: string[] = [];
  for (const [name, machine] of Object.entries(MACHINES)) {
    const d = describeMachine(machine);
    out.push(`### ${name} machine\n`);
    out.push('```mermaid\n' + mermaidDiagram(machine) + '\n```\n');
    out.push('| state | effect invoked on entry | admits (tags) |\n| --- | --- | --- |');
    for (const s of d.states) out.push(`| \`${s.name}\`${s.final ? ' (final)' : ''} | ${s.effect ? `\`${s.effect}\`` : ''} | ${(s.tags ?? []).map((t) => `\`${t}\``).join(', ')} |`);
    const events = [...new Set(d.transitions.map((t) => t.event).filter((e) => !e.endsWith(' done') && !e.endsWith(' error')))];
    out.push(`\nEvents: ${events.map((e) => `\`${e}\``).join(', ')}.\n`);
  }
  return out.join('\n');
}
