import { getAdjacencyMap, getShortestPaths } from '@xstate/graph';
import { afterAll, describe, expect, it } from 'vitest';
import { createActor, fromPromise, type AnyStateMachine, type EventObject } from 'xstate';
import { describeMachine, MACHINES } from '../../../src/actors/diagram.js';

/**
 * Model tests of the machines themselves: the graph of each machine is
 * traversed with every event it declares (and every invoked effect settling
 * both ways); every transition in the definition must be reachable, and
 * every path is executed on a running actor whose effects are deferred
 * promises settled in the order the path says. Tests of the machines driving
 * the real runtime are in test/unit/api.
 */

/** What each effect resolves with in the model (the shape the machine expects). */
const EFFECT_OUTPUT: Record<string, unknown> = {
  openRegion: { flushedEntryId: 3 },
  flushRegion: { flushedEntryId: 7 },
  openShard: { epoch: 2 },
  replayShard: { lastEntryId: 9 },
  promoteShard: { epoch: 3, lastEntryId: 11 },
};

const DOMAIN_EVENTS: Record<string, EventObject[]> = {
  region: [
    { type: 'REPLAYED', appliedEntryId: 5 } as EventObject,
    { type: 'FOLLOW' },
    { type: 'FLUSH', coveredUpTo: 6 } as EventObject,
    { type: 'MIGRATE' },
    { type: 'CLOSE' },
    { type: 'FAIL', reason: 'fault' } as EventObject,
  ],
  shard: [{ type: 'FLUSH' }, { type: 'PROMOTE' }, { type: 'MIGRATE', to: 'n2' } as EventObject, { type: 'CLOSE' }, { type: 'LEASE_LOST' }, { type: 'FAIL', reason: 'fault' } as EventObject],
  node: [{ type: 'FLUSH' }, { type: 'CLOSE' }, { type: 'FAIL', reason: 'fault' } as EventObject],
};

/** Each machine is explored from each of its inputs (a shard starts as a leader or as a follower). */
const INPUTS: Record<string, unknown[]> = {
  region: [{ regionId: 1 }],
  shard: [
    { shardId: 1, role: 'leader' },
    { shardId: 1, role: 'follower' },
  ],
  node: [{ nodeId: 'n1' }],
};

function settleEvents(name: string, machine: AnyStateMachine): EventObject[] {
  const events: EventObject[] = [];
  for (const state of describeMachine(machine).states) {
    if (!state.effect) continue;
    const id = `0.${machine.id}.${state.name}`;
    events.push({ type: `xstate.done.actor.${id}`, output: EFFECT_OUTPUT[state.effect] } as EventObject);
    events.push({ type: `xstate.error.actor.${id}`, error: new Error(`${name}: ${state.effect} failed`) } as EventObject);
  }
  return events;
}

function label(event: EventObject, machine: AnyStateMachine): string {
  const match = /^xstate\.(done|error)\.actor\.0\.[^.]+\.(.+)$/.exec(event.type);
  if (!match) return event.type;
  const effect = describeMachine(machine).states.find((s) => s.name === match[2])!.effect;
  return `${effect} ${match[1]}`;
}

/** Run the path on a live actor: domain events are sent, effect settlements resolve/reject deferreds. */
async function execute(machine: AnyStateMachine, input: unknown, events: EventObject[]): Promise<string[]> {
  const pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  const actors: Record<string, ReturnType<typeof fromPromise>> = {};
  for (const state of describeMachine(machine).states) {
    if (!state.effect) continue;
    const effect = state.effect;
    actors[effect] = fromPromise(() => new Promise((resolve, reject) => pending.set(effect, { resolve, reject })));
  }
  const actor = createActor(machine.provide({ actors }), { input });
  const visited: string[] = [];
  actor.subscribe((s) => {
    if (visited.at(-1) !== String(s.value)) visited.push(String(s.value));
  });
  actor.start();
  for (const event of events) {
    const match = /^xstate\.(done|error)\.actor\.0\.[^.]+\.(.+)$/.exec(event.type);
    if (match) {
      const effect = describeMachine(machine).states.find((s) => s.name === match[2])!.effect!;
      const deferred = pending.get(effect);
      expect(deferred, `effect ${effect} was not invoked`).toBeDefined();
      pending.delete(effect);
      if (match[1] === 'done') deferred!.resolve((event as unknown as { output: unknown }).output);
      else deferred!.reject((event as unknown as { error: unknown }).error);
    } else {
      actor.send(event);
    }
    await new Promise((r) => setTimeout(r, 0));
  }
  actor.stop();
  return visited;
}

/** Bound the traversal: a state is its value (context holds only ids, epochs and reasons). */
const byValue = (s: { value: unknown }) => JSON.stringify(s.value);

const coverage: string[] = [];
afterAll(() => {
  // eslint-disable-next-line no-console
  console.log(`machine transition coverage (model tests):\n${coverage.join('\n')}`);
});

describe.each(Object.entries(MACHINES))('%s machine', (name, machine) => {
  const events = [...DOMAIN_EVENTS[name]!, ...settleEvents(name, machine)];
  const inputs = INPUTS[name]!;

  it('every transition of the definition is reachable, and nothing else is', () => {
    const defined = new Set(describeMachine(machine).transitions.map((t) => `${t.from} --${t.event}--> ${t.to}`));
    const reached = new Set<string>();
    const reachedStates = new Set<string>();
    for (const input of inputs) {
      const adjacency = getAdjacencyMap(machine, { events, input, serializeState: byValue });
      for (const { state, transitions } of Object.values(adjacency)) {
        reachedStates.add(String(state.value));
        for (const { event, state: next } of Object.values(transitions) as { event: EventObject; state: { value: unknown } }[]) {
          if (String(next.value) === String(state.value) && !defined.has(`${state.value} --${label(event, machine)}--> ${next.value}`)) continue; // ignored event
          reached.add(`${state.value} --${label(event, machine)}--> ${next.value}`);
        }
      }
    }
    expect([...reached].filter((t) => !defined.has(t)), 'transitions not in the definition').toEqual([]);
    expect([...defined].filter((t) => !reached.has(t)), 'transitions never reached').toEqual([]);
    const states = describeMachine(machine).states.map((s) => s.name);
    coverage.push(`  ${name}: states ${reachedStates.size}/${states.length}, transitions ${reached.size}/${defined.size}`);
  });

  it('a live actor follows every shortest path the model computes', async () => {
    const targets = new Set<string>();
    for (const input of inputs) {
      const paths = getShortestPaths(machine, { events, input, serializeState: byValue });
      for (const path of paths) {
        targets.add(String(path.state.value));
        const steps = path.steps.slice(1); // the first step is xstate.init
        const visited = await execute(machine, input, steps.map((s) => s.event));
        const expected = [String(path.steps[0]!.state.value), ...steps.map((s) => String(s.state.value))].filter(
          (v, i, all) => i === 0 || v !== all[i - 1],
        );
        expect(visited, `path to ${String(path.state.value)} from ${JSON.stringify(input)}`).toEqual(expected);
      }
    }
    expect(targets).toEqual(new Set(describeMachine(machine).states.map((s) => s.name)));
  });
});
