import type { Logger } from 'pino';
import type { TableSchema, Value } from '../engine/schema.js';
import type { Reprise } from './runtime.js';

/** How long the warm-up may take before the server starts listening. */
export const WARM_BUDGET_MS = 300;
/** Rounds of the warm-up's queries at most (each round: rows of one series, of one tag value, and an aggregation). */
const WARM_ROUNDS = 30;
const MINUTE = 60_000;

export interface WarmOutcome {
  readonly table?: string;
  readonly queries: number;
  readonly ms: number;
}

/** Answers a query as the HTTP API would: the JSON answer, or undefined if it is refused. */
export type QueryRoute = (table: string, body: unknown) => Promise<string | undefined>;

/**
 * Before a server listens: answer, through its own HTTP routes (see
 * http.ts warmHttpQueries: injected, no socket), the common queries on the
 * table that has the newest row, for up to WARM_BUDGET_MS; answers are
 * discarded. Until V8 has compiled the query
 * path (routing, validation, planning, the region's read, JSON), a query
 * runs in its interpreter: measured on 10M rows, the first one-host query
 * after a restart took 15-23 ms without this and 6-11 ms with it. Reads
 * only; a query that fails or outlives the budget (a region on a node
 * that is down) ends the warm-up, never the start.
 */
export async function warmQueries(route: QueryRoute, runtime: Reprise, logger: Logger): Promise<WarmOutcome> {
  const started = performance.now();
  let queries = 0;
  // A query still unanswered when the budget runs out is left to finish on its own (a read: it changes nothing), not waited for.
  const query: QueryRoute = async (table, body) => {
    queries++;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('warm-up budget spent')), Math.max(0, WARM_BUDGET_MS - (performance.now() - started)));
    });
    try {
      return await Promise.race([route(table, body), late]);
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    // Only this answer is parsed: the rounds' answers are discarded unread.
    let newest: { schema: TableSchema; row: Record<string, Value>; t: number } | undefined;
    for (const { schema } of runtime.listTables()) {
      if (performance.now() - started > WARM_BUDGET_MS) break;
      const time = schema.columns.find((c) => c.role === 'time')?.name as string;
      const answer = await query(schema.name, { order: 'desc', limit: 1 });
      const row = answer === undefined ? undefined : (JSON.parse(answer) as { rows: Record<string, Value>[] }).rows[0];
      if (row !== undefined && (newest === undefined || (row[time] as number) > newest.t)) newest = { schema, row, t: row[time] as number };
    }
    if (newest === undefined) return { queries, ms: performance.now() - started };
    const { schema, row, t } = newest;
    const tags = schema.columns.filter((c) => c.role === 'tag').map((c) => c.name);
    const field = schema.columns.find((c) => c.role === 'field' && (c.type === 'float64' || c.type === 'int64'))?.name;
    const series = Object.fromEntries(tags.map((n) => [n, row[n]]));
    const oneTag = tags.length > 0 ? { [tags[0] as string]: row[tags[0] as string] } : {};
    for (let round = 0; round < WARM_ROUNDS && performance.now() - started < WARM_BUDGET_MS; round++) {
      await query(schema.name, { where: series, timeRange: { from: t - 10 * MINUTE, to: t + 1 } });
      await query(schema.name, { where: oneTag, timeRange: { from: t - 60 * MINUTE, to: t + 1 } });
      if (field !== undefined) {
        await query(schema.name, { where: oneTag, timeRange: { from: t - 60 * MINUTE, to: t + 1 }, groupBy: tags.slice(0, 1), interval: 10 * MINUTE, aggregates: [{ fn: 'max', column: field }] });
      }
    }
    return { table: schema.name, queries, ms: performance.now() - started };
  } catch (err) {
    logger.debug({ err }, 'query warm-up stopped');
    return { queries, ms: performance.now() - started };
  }
}
