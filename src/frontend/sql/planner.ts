import type { AggregateFn, AggregateSpec, ColumnDef, ColumnType, ColumnarRows, RangeCondition, TableQuery, TableSchema, Value } from '../../engine/schema.js';
import { aggregateName } from '../../engine/schema.js';
import { compareValues } from '../../engine/table/keys.js';
import { RepriseError } from '../../errors.js';
import type { Expr, OrderItem, Statement } from './ast.js';
import { coerce, evaluate, holds, render, type EvalScope, type Typed } from './eval.js';
import type { SqlColumn } from './types.js';

/**
 * SELECT (and DELETE's WHERE) planned onto the one query the engine runs,
 * a TableQuery: conditions on tags and time are pushed down (partition
 * pruning, SST and row-group pruning), aggregates and time buckets become
 * the engine's partial aggregation, and order and limit are pushed down
 * when the engine's order (primary key, then time) is the one asked for.
 * What the engine cannot do is finished here, over the merged result:
 * conditions on fields, computed select items, other orders, OFFSET.
 */

type Select = Statement & { kind: 'select' };

const AGGREGATES: Record<string, AggregateFn> = {
  count: 'count',
  sum: 'sum',
  avg: 'avg',
  mean: 'avg',
  min: 'min',
  max: 'max',
  first_value: 'first',
  last_value: 'last',
  first: 'first',
  last: 'last',
};

const BUCKETS = new Set(['date_bin', 'time_bucket', 'date_trunc']);

const TRUNC_UNITS: Record<string, number> = { second: 1_000, minute: 60_000, hour: 3_600_000, day: 86_400_000 };

export interface SelectPlan {
  readonly query: TableQuery;
  /** False when the WHERE contradicts itself: nothing can match, the engine is not asked. */
  readonly possible: boolean;
  /** Turns the engine's answer into the statement's result. */
  finish(result: ColumnarRows): { columns: SqlColumn[]; data: Value[][] };
}

const unsupported = (what: string): RepriseError => new RepriseError('SQL_UNSUPPORTED', `${what} is not supported`);
const invalid = (message: string, details?: Record<string, unknown>): RepriseError => new RepriseError('INVALID_QUERY', message, details);

function flattenAnd(e: Expr | undefined, out: Expr[] = []): Expr[] {
  if (e === undefined) return out;
  if (e.kind === 'binary' && e.op === 'AND') {
    flattenAnd(e.left, out);
    flattenAnd(e.right, out);
  } else out.push(e);
  return out;
}

function flattenOr(e: Expr, out: Expr[] = []): Expr[] {
  if (e.kind === 'binary' && e.op === 'OR') {
    flattenOr(e.left, out);
    flattenOr(e.right, out);
  } else out.push(e);
  return out;
}

/** Whether `e` reads no column (and so is a constant of the statement). */
function isConstant(e: Expr): boolean {
  switch (e.kind) {
    case 'column':
    case 'star':
      return false;
    case 'literal':
    case 'interval':
    case 'variable':
    case 'param':
      return true;
    case 'call':
      return !(e.name in AGGREGATES) && !BUCKETS.has(e.name) && e.args.every(isConstant);
    case 'binary':
      return isConstant(e.left) && isConstant(e.right);
    case 'not':
    case 'negate':
    case 'cast':
      return isConstant(e.operand);
    case 'in':
      return isConstant(e.operand) && e.list.every(isConstant);
    case 'between':
      return isConstant(e.operand) && isConstant(e.low) && isConstant(e.high);
    case 'isNull':
      return isConstant(e.operand);
  }
}

function columnsIn(e: Expr, out: Set<string>): Set<string> {
  switch (e.kind) {
    case 'column':
      out.add(e.name);
      break;
    case 'call':
      e.args.forEach((a) => columnsIn(a, out));
      break;
    case 'binary':
      columnsIn(e.left, out);
      columnsIn(e.right, out);
      break;
    case 'not':
    case 'negate':
    case 'cast':
    case 'isNull':
      columnsIn(e.operand, out);
      break;
    case 'in':
      columnsIn(e.operand, out);
      e.list.forEach((a) => columnsIn(a, out));
      break;
    case 'between':
      columnsIn(e.operand, out);
      columnsIn(e.low, out);
      columnsIn(e.high, out);
      break;
  }
  return out;
}

interface ColumnConditions {
  eq?: Value;
  gt?: Value;
  gte?: Value;
  lt?: Value;
  lte?: Value;
  in?: Value[];
  notIn: Value[];
}

/** The conditions of a WHERE on tag and time columns, as the engine takes them, and what is left for the frontend. */
export interface CompiledWhere {
  readonly where: Record<string, RangeCondition>;
  readonly timeRange: { from?: number; to?: number };
  /** Conjuncts the engine cannot apply (on fields, ORs across columns): the frontend filters rows by them. */
  readonly residual: readonly Expr[];
  readonly possible: boolean;
}

export function compileWhere(schema: TableSchema, whereExpr: Expr | undefined, scope: EvalScope): CompiledWhere {
  const byName = new Map(schema.columns.map((c) => [c.name, c]));
  const conds = new Map<string, ColumnConditions>();
  const residual: Expr[] = [];
  let possible = true;
  const keyColumn = (e: Expr): ColumnDef | undefined => {
    if (e.kind !== 'column') return undefined;
    const c = byName.get(e.name);
    if (c === undefined) throw invalid(`table "${schema.name}" has no column "${e.name}"`, { column: e.name });
    return c.role === 'field' ? undefined : c;
  };
  const constant = (e: Expr, col: ColumnDef): Value => coerce(evaluate(e, scope).value, col.type, `column "${col.name}"`);
  const condsOf = (name: string): ColumnConditions => {
    let c = conds.get(name);
    if (c === undefined) conds.set(name, (c = { notIn: [] }));
    return c;
  };
  const add = (col: ColumnDef, op: '=' | '!=' | '<' | '<=' | '>' | '>=', v: Value): void => {
    const c = condsOf(col.name);
    if (v === null) {
      // A comparison with NULL is never true.
      possible = false;
      return;
    }
    switch (op) {
      case '=':
        if (c.eq !== undefined && compareValues(c.eq, v) !== 0) possible = false;
        c.eq = v;
        break;
      case '!=':
        c.notIn.push(v);
        break;
      case '>':
        if (c.gt === undefined || compareValues(v, c.gt) > 0) c.gt = v;
        break;
      case '>=':
        if (c.gte === undefined || compareValues(v, c.gte) > 0) c.gte = v;
        break;
      case '<':
        if (c.lt === undefined || compareValues(v, c.lt) < 0) c.lt = v;
        break;
      case '<=':
        if (c.lte === undefined || compareValues(v, c.lte) < 0) c.lte = v;
        break;
    }
  };
  const addIn = (col: ColumnDef, values: Value[], negated: boolean): void => {
    const c = condsOf(col.name);
    const present = values.filter((v) => v !== null);
    if (negated) {
      // x NOT IN (..., NULL) is never true.
      if (present.length < values.length) possible = false;
      c.notIn.push(...present);
      return;
    }
    c.in = c.in === undefined ? present : c.in.filter((v) => present.some((p) => compareValues(p, v) === 0));
    if (c.in.length === 0) possible = false;
  };
  const FLIP = { '<': '>', '<=': '>=', '>': '<', '>=': '<=', '=': '=', '!=': '!=' } as const;

  const pushDown = (e: Expr): boolean => {
    if (e.kind === 'binary' && e.op in FLIP) {
      const op = e.op as keyof typeof FLIP;
      const lc = keyColumn(e.left);
      if (lc !== undefined && isConstant(e.right)) {
        add(lc, op, constant(e.right, lc));
        return true;
      }
      const rc = keyColumn(e.right);
      if (rc !== undefined && isConstant(e.left)) {
        add(rc, FLIP[op], constant(e.left, rc));
        return true;
      }
      return false;
    }
    if (e.kind === 'in') {
      const col = keyColumn(e.operand);
      if (col === undefined || !e.list.every(isConstant)) return false;
      addIn(col, e.list.map((item) => constant(item, col)), e.negated);
      return true;
    }
    if (e.kind === 'between' && !e.negated) {
      const col = keyColumn(e.operand);
      if (col === undefined || !isConstant(e.low) || !isConstant(e.high)) return false;
      add(col, '>=', constant(e.low, col));
      add(col, '<=', constant(e.high, col));
      return true;
    }
    if (e.kind === 'binary' && e.op === 'OR') {
      // host = 'a' OR host = 'b' (OR host IN (...)) is host IN ('a', 'b').
      let col: ColumnDef | undefined;
      const values: Value[] = [];
      for (const d of flattenOr(e)) {
        const c = d.kind === 'binary' && d.op === '=' ? keyColumn(d.left) : d.kind === 'in' && !d.negated ? keyColumn(d.operand) : undefined;
        if (c === undefined || (col !== undefined && c.name !== col.name)) return false;
        col = c;
        if (d.kind === 'binary') {
          if (!isConstant(d.right)) return false;
          values.push(constant(d.right, c));
        } else if (d.kind === 'in') {
          if (!d.list.every(isConstant)) return false;
          values.push(...d.list.map((item) => constant(item, c)));
        }
      }
      addIn(col as ColumnDef, values, false);
      return true;
    }
    if (isConstant(e)) {
      if (!holds(e, scope)) possible = false;
      return true;
    }
    return false;
  };
  for (const conjunct of flattenAnd(whereExpr)) if (!pushDown(conjunct)) residual.push(conjunct);

  const where: Record<string, RangeCondition> = {};
  const timeRange: { from?: number; to?: number } = {};
  const time = schema.columns.find((c) => c.role === 'time') as ColumnDef;
  for (const [name, c] of conds) {
    if (name === time.name) {
      // Times are whole ms: every bound is a [from, to) range.
      const from = [c.eq, c.gte, c.gt === undefined ? undefined : (c.gt as number) + 1].filter((v): v is number => typeof v === 'number');
      const to = [c.eq === undefined ? undefined : (c.eq as number) + 1, c.lt, c.lte === undefined ? undefined : (c.lte as number) + 1].filter((v): v is number => typeof v === 'number');
      if (from.length > 0) timeRange.from = Math.max(...from);
      if (to.length > 0) timeRange.to = Math.min(...to);
      if (timeRange.from !== undefined && timeRange.to !== undefined && timeRange.from >= timeRange.to) possible = false;
      const rest: { in?: Value[]; notIn?: Value[] } = {};
      if (c.in !== undefined) rest.in = c.in;
      if (c.notIn.length > 0) rest.notIn = c.notIn;
      if (rest.in !== undefined || rest.notIn !== undefined) where[name] = rest as RangeCondition;
      continue;
    }
    const range: Record<string, unknown> = {};
    for (const op of ['eq', 'gt', 'gte', 'lt', 'lte'] as const) if (c[op] !== undefined) range[op] = c[op];
    if (c.in !== undefined) range.in = c.in;
    if (c.notIn.length > 0) range.notIn = c.notIn;
    if (Object.keys(range).length > 0) where[name] = range as RangeCondition;
  }
  return { where, timeRange, residual, possible };
}

/** One output column of a select: how to compute it from a row of the engine's result. */
interface Output {
  readonly name: string;
  readonly expr: Expr;
  /** The result column it copies as is, when it is one. */
  readonly copy?: string;
}

/** The interval (ms) of a time bucket call, checking it buckets the time index. */
function bucketInterval(e: Expr & { kind: 'call' }, time: ColumnDef, scope: EvalScope): number {
  const [first, second, third] = e.args;
  if (e.name === 'date_trunc') {
    const unit = first?.kind === 'literal' && typeof first.value === 'string' ? TRUNC_UNITS[first.value.toLowerCase()] : undefined;
    if (unit === undefined) throw unsupported(`${render(e)}: date_trunc to a unit other than second, minute, hour or day`);
    if (second?.kind !== 'column' || second.name !== time.name) throw invalid(`${render(e)}: the second argument must be the time index "${time.name}"`);
    return unit;
  }
  if (first === undefined || second === undefined) throw invalid(`${e.name}(interval, ${time.name}) takes an interval and the time index`);
  if (second.kind !== 'column' || second.name !== time.name) throw invalid(`${render(e)}: the second argument must be the time index "${time.name}"`);
  if (third !== undefined) {
    const origin = evaluate(third, scope).value;
    if (coerce(origin, 'timestamp', render(e)) !== 0) throw unsupported(`${render(e)}: an origin other than 1970-01-01 (buckets are aligned to the epoch)`);
  }
  const ms = evaluate(first, scope).value;
  if (typeof ms !== 'number' || !Number.isSafeInteger(ms) || ms <= 0) throw invalid(`${render(e)}: the bucket width must be a positive whole number of ms`);
  return ms;
}

function isAggregateCall(e: Expr): e is Expr & { kind: 'call' } {
  return e.kind === 'call' && e.name in AGGREGATES;
}

function hasAggregate(e: Expr): boolean {
  if (isAggregateCall(e)) return true;
  switch (e.kind) {
    case 'call':
      return e.args.some(hasAggregate);
    case 'binary':
      return hasAggregate(e.left) || hasAggregate(e.right);
    case 'not':
    case 'negate':
    case 'cast':
    case 'isNull':
      return hasAggregate(e.operand);
    default:
      return false;
  }
}

function sameExpr(a: Expr, b: Expr): boolean {
  return render(a) === render(b);
}

export function planSelect(stmt: Select, schema: TableSchema, scope: EvalScope): SelectPlan {
  const byName = new Map(schema.columns.map((c) => [c.name, c]));
  const time = schema.columns.find((c) => c.role === 'time') as ColumnDef;
  const compiled = compileWhere(schema, stmt.where, scope);

  // Select items, `*` expanded.
  const items: { expr: Expr; name: string }[] = [];
  for (const item of stmt.items) {
    if (item.expr.kind === 'star') {
      for (const c of schema.columns) items.push({ expr: { kind: 'column', name: c.name, pos: item.expr.pos }, name: c.name });
    } else items.push({ expr: item.expr, name: item.alias ?? (item.expr.kind === 'column' ? item.expr.name : render(item.expr)) });
  }
  const byAlias = (e: Expr): Expr | undefined => {
    if (e.kind === 'literal' && typeof e.value === 'number') {
      const item = items[e.value - 1];
      if (item === undefined) throw invalid(`position ${e.value} is not a select item (there are ${items.length})`);
      return item.expr;
    }
    if (e.kind === 'column' && !byName.has(e.name)) return items.find((i) => i.name === e.name)?.expr;
    return undefined;
  };

  const aggregated = stmt.groupBy.length > 0 || items.some((i) => hasAggregate(i.expr));
  if (!aggregated) return planRows(stmt, schema, compiled, items, byAlias, scope);

  if (compiled.residual.length > 0) {
    throw unsupported(`WHERE ${compiled.residual.map(render).join(' AND ')} with aggregation (conditions on fields, or ORs across columns; the engine aggregates by tags and time only)`);
  }
  const groupBy: string[] = [];
  let interval: number | undefined;
  let bucketExpr: Expr | undefined;
  for (const g of stmt.groupBy) {
    const e = byAlias(g) ?? g;
    if (e.kind === 'column') {
      const c = byName.get(e.name);
      if (c === undefined) throw invalid(`GROUP BY: table "${schema.name}" has no column "${e.name}"`, { column: e.name });
      if (c.role === 'field') throw unsupported(`GROUP BY the field "${c.name}" (group by tags and time buckets)`);
      if (c.role === 'time') throw unsupported(`GROUP BY the time index itself (use date_bin(INTERVAL '1 minute', ${c.name}))`);
      if (!groupBy.includes(c.name)) groupBy.push(c.name);
    } else if (e.kind === 'call' && BUCKETS.has(e.name)) {
      const ms = bucketInterval(e, time, scope);
      if (interval !== undefined && interval !== ms) throw unsupported('GROUP BY two different time buckets');
      interval = ms;
      bucketExpr = e;
    } else throw unsupported(`GROUP BY ${render(e)} (group by tags and time buckets)`);
  }

  // Every aggregate call, once: the engine computes each, named fn(column).
  const specs: AggregateSpec[] = [];
  const specOf = (call: Expr & { kind: 'call' }): string => {
    const fn = AGGREGATES[call.name];
    if (call.distinct) throw unsupported(`${call.name}(DISTINCT ...)`);
    const arg = call.args[0];
    if (call.args.length !== 1 || arg === undefined) throw invalid(`${call.name}() takes one argument`);
    let column: string | undefined;
    if (arg.kind === 'star') {
      if (fn !== 'count') throw invalid(`${call.name}(*) is only count(*)`);
    } else if (arg.kind === 'column') {
      const c = byName.get(arg.name);
      if (c === undefined) throw invalid(`${render(call)}: table "${schema.name}" has no column "${arg.name}"`, { column: arg.name });
      // Tags and the time index are never null: counting them counts rows.
      if (c.role !== 'field' && fn === 'count') column = undefined;
      else if (c.role !== 'field') throw unsupported(`${render(call)} on the ${c.role} "${c.name}" (aggregates take fields)`);
      else column = c.name;
    } else throw unsupported(`${render(call)}: an aggregate of an expression (aggregate a column)`);
    const spec: AggregateSpec = column === undefined ? { fn } : { fn, column };
    const name = aggregateName(spec);
    if (!specs.some((s) => aggregateName(s) === name)) specs.push(spec);
    return name;
  };
  const typeOfSpec = (name: string): ColumnType => {
    const spec = specs.find((s) => aggregateName(s) === name) as AggregateSpec;
    if (spec.fn === 'count') return 'int64';
    if (spec.fn === 'avg') return 'float64';
    return (byName.get(spec.column as string) as ColumnDef).type;
  };
  const collect = (e: Expr): void => {
    if (isAggregateCall(e)) {
      specOf(e);
      return;
    }
    if (e.kind === 'call' && BUCKETS.has(e.name)) {
      if (bucketExpr === undefined || !sameExpr(e, bucketExpr)) throw invalid(`${render(e)} must be in GROUP BY`);
      return;
    }
    if (e.kind === 'column') {
      if (!groupBy.includes(e.name)) throw invalid(`column "${e.name}" must be in GROUP BY or inside an aggregate`, { column: e.name });
      return;
    }
    if (e.kind === 'call') e.args.forEach(collect);
    else if (e.kind === 'binary') {
      collect(e.left);
      collect(e.right);
    } else if (e.kind === 'not' || e.kind === 'negate' || e.kind === 'cast' || e.kind === 'isNull') collect(e.operand);
  };
  items.forEach((i) => collect(i.expr));
  if (specs.length === 0) specs.push({ fn: 'count' });

  const query: TableQuery = {
    ...(Object.keys(compiled.where).length > 0 ? { where: compiled.where } : {}),
    ...(compiled.timeRange.from !== undefined || compiled.timeRange.to !== undefined ? { timeRange: compiled.timeRange } : {}),
    ...(groupBy.length > 0 ? { groupBy } : {}),
    ...(interval !== undefined ? { interval } : {}),
    aggregates: specs,
    // Groups come back in key order: a limit without ORDER BY is taken there.
    ...(stmt.orderBy.length === 0 && stmt.limit !== undefined ? { limit: stmt.limit + (stmt.offset ?? 0) } : {}),
  };

  const resultScope = (columns: readonly string[], data: readonly (readonly Value[])[], row: number): EvalScope => ({
    ...rowOf(scope, byName, columns, data, row),
    call: (e) => {
      if (e.name in AGGREGATES) {
        const name = specOf(e);
        return { value: data[columns.indexOf(name)][row], type: typeOfSpec(name) };
      }
      if (BUCKETS.has(e.name)) return { value: data[columns.indexOf(time.name)][row], type: 'timestamp' };
      return undefined;
    },
  });
  const outputs: Output[] = items.map((i) => {
    if (isAggregateCall(i.expr)) return { name: i.name, expr: i.expr, copy: specOf(i.expr) };
    if (i.expr.kind === 'column') return { name: i.name, expr: i.expr, copy: i.expr.name };
    if (bucketExpr !== undefined && sameExpr(i.expr, bucketExpr)) return { name: i.name, expr: i.expr, copy: time.name };
    return { name: i.name, expr: i.expr };
  });
  return {
    query,
    possible: compiled.possible,
    finish(result) {
      let rows = result;
      // A whole-table aggregate answers one row even when nothing matched (count 0).
      if (groupBy.length === 0 && interval === undefined && (rows.data[0]?.length ?? 0) === 0) {
        rows = { columns: rows.columns.length > 0 ? rows.columns : specs.map(aggregateName), data: (rows.columns.length > 0 ? rows.columns : specs.map(aggregateName)).map((name) => [name.startsWith('count(') ? 0 : null]) };
      }
      return finishRows(rows, outputs, stmt.orderBy, byAlias, stmt.limit, stmt.offset, (columns, data, row) => resultScope(columns, data, row), (o) =>
        o.copy !== undefined ? (byName.get(o.copy)?.type ?? typeOfSpec(o.copy)) : undefined,
      );
    },
  };
}

function planRows(
  stmt: Select,
  schema: TableSchema,
  compiled: CompiledWhere,
  items: readonly { expr: Expr; name: string }[],
  byAlias: (e: Expr) => Expr | undefined,
  scope: EvalScope,
): SelectPlan {
  const byName = new Map(schema.columns.map((c) => [c.name, c]));
  const keyOrder = [...schema.columns.filter((c) => c.role === 'tag'), schema.columns.find((c) => c.role === 'time') as ColumnDef];
  for (const i of items) {
    if (i.expr.kind === 'call' && BUCKETS.has(i.expr.name)) throw invalid(`${render(i.expr)} needs GROUP BY ${render(i.expr)} and an aggregate`);
  }
  // The columns the engine is asked for: select items, residual filters, order.
  const needed = new Set<string>();
  for (const i of items) columnsIn(i.expr, needed);
  for (const r of compiled.residual) columnsIn(r, needed);
  const orderExprs = stmt.orderBy.map((o) => byAlias(o.expr) ?? o.expr);
  for (const e of orderExprs) columnsIn(e, needed);
  for (const name of needed) if (!byName.has(name)) throw invalid(`table "${schema.name}" has no column "${name}"`, { column: name });

  // Order and limit go to the engine when its order (primary key, then time) is the one asked for:
  // ORDER BY a run of key columns in key order, one direction, after the tags fixed by equality.
  let pushOrder: 'asc' | 'desc' | undefined = 'asc';
  if (orderExprs.length > 0) {
    const fixed = (c: ColumnDef): boolean => {
      const cond = compiled.where[c.name];
      return cond !== undefined && (cond.eq !== undefined || cond.in?.length === 1);
    };
    const free = keyOrder.filter((c) => !fixed(c));
    const dirs = new Set(stmt.orderBy.map((o) => o.desc));
    const matches =
      dirs.size === 1 &&
      orderExprs.length <= free.length &&
      orderExprs.every((e, k) => e.kind === 'column' && e.name === free[k].name);
    pushOrder = matches ? (stmt.orderBy[0].desc ? 'desc' : 'asc') : undefined;
  }
  const pushLimit = pushOrder !== undefined && compiled.residual.length === 0 && stmt.limit !== undefined;
  const query: TableQuery = {
    ...(Object.keys(compiled.where).length > 0 ? { where: compiled.where } : {}),
    ...(compiled.timeRange.from !== undefined || compiled.timeRange.to !== undefined ? { timeRange: compiled.timeRange } : {}),
    ...(needed.size > 0 ? { columns: [...needed] } : { columns: [keyOrder[keyOrder.length - 1].name] }),
    ...(pushOrder === 'desc' ? { order: 'desc' as const } : {}),
    ...(pushLimit ? { limit: (stmt.limit as number) + (stmt.offset ?? 0) } : {}),
  };
  const outputs: Output[] = items.map((i) => ({ name: i.name, expr: i.expr, ...(i.expr.kind === 'column' ? { copy: i.expr.name } : {}) }));
  const rowScope = (columns: readonly string[], data: readonly (readonly Value[])[], row: number): EvalScope => ({
    ...rowOf(scope, byName, columns, data, row),
    call: (e) => {
      if (isAggregateCall(e)) throw invalid(`${render(e)} cannot be mixed with plain columns without GROUP BY`);
      return undefined;
    },
  });
  return {
    query,
    possible: compiled.possible,
    finish(result) {
      let rows = result;
      if (compiled.residual.length > 0) {
        const keep: number[] = [];
        const n = rows.data[0]?.length ?? 0;
        for (let r = 0; r < n; r++) {
          const s = rowScope(rows.columns, rows.data, r);
          if (compiled.residual.every((e) => holds(e, s))) keep.push(r);
        }
        rows = { columns: rows.columns, data: rows.data.map((col) => keep.map((r) => col[r])) };
      }
      const ordered = pushOrder === undefined ? stmt.orderBy : [];
      return finishRows(rows, outputs, ordered, byAlias, stmt.limit, stmt.offset, rowScope, (o) => (o.copy !== undefined ? byName.get(o.copy)?.type : undefined));
    },
  };
}

/**
 * A SELECT over rows the frontend holds itself (information_schema's
 * tables): WHERE, computed items, ORDER BY and LIMIT evaluated here; no
 * aggregation. Column names are matched case-insensitively, as MySQL
 * matches information_schema's.
 */
export function selectOverRows(
  stmt: Select,
  columns: readonly SqlColumn[],
  data: readonly (readonly Value[])[],
  scope: EvalScope,
): { columns: SqlColumn[]; data: Value[][] } {
  if (stmt.groupBy.length > 0 || stmt.items.some((i) => hasAggregate(i.expr))) throw unsupported('aggregation over information_schema');
  const names = columns.map((c) => c.name);
  const byName = new Map(columns.map((c): [string, ColumnDef] => [c.name, { name: c.name, type: c.type, role: 'field' }]));
  const scopeOf = (cols: readonly string[], rows: readonly (readonly Value[])[], row: number): EvalScope => {
    const base = rowOf(scope, byName, cols, rows, row);
    return { ...base, column: (e) => base.column?.({ ...e, name: e.name.toLowerCase() }) };
  };
  const items: { expr: Expr; name: string }[] = [];
  for (const item of stmt.items) {
    if (item.expr.kind === 'star') for (const n of names) items.push({ expr: { kind: 'column', name: n, pos: item.expr.pos }, name: n });
    else items.push({ expr: item.expr, name: item.alias ?? (item.expr.kind === 'column' ? item.expr.name : render(item.expr)) });
  }
  const n = data[0]?.length ?? 0;
  const keep: number[] = [];
  for (let r = 0; r < n; r++) if (stmt.where === undefined || holds(stmt.where, scopeOf(names, data, r))) keep.push(r);
  const rows: ColumnarRows = { columns: names, data: data.map((col) => keep.map((r) => col[r])) };
  const byAlias = (e: Expr): Expr | undefined =>
    e.kind === 'literal' && typeof e.value === 'number' ? items[e.value - 1]?.expr : e.kind === 'column' && !byName.has(e.name.toLowerCase()) ? items.find((i) => i.name === e.name)?.expr : undefined;
  const outputs: Output[] = items.map((i) => ({ name: i.name, expr: i.expr, ...(i.expr.kind === 'column' ? { copy: i.expr.name.toLowerCase() } : {}) }));
  return finishRows(rows, outputs, stmt.orderBy, byAlias, stmt.limit, stmt.offset, scopeOf, (o) => (o.copy !== undefined ? byName.get(o.copy)?.type : undefined));
}

/** `scope` reading the table's columns from row `row` of a columnar result. */
function rowOf(scope: EvalScope, byName: ReadonlyMap<string, ColumnDef>, columns: readonly string[], data: readonly (readonly Value[])[], row: number): EvalScope {
  return {
    ...scope,
    column: (e) => {
      const at = columns.indexOf(e.name);
      const c = byName.get(e.name);
      return at < 0 || c === undefined ? undefined : { value: data[at][row], type: c.type };
    },
  };
}

/** Order (what the engine did not), offset and limit, then each output column computed or copied. */
function finishRows(
  rows: ColumnarRows,
  outputs: readonly Output[],
  orderBy: readonly OrderItem[],
  byAlias: (e: Expr) => Expr | undefined,
  limit: number | undefined,
  offset: number | undefined,
  scopeOf: (columns: readonly string[], data: readonly (readonly Value[])[], row: number) => EvalScope,
  copiedType: (o: Output) => ColumnType | undefined,
): { columns: SqlColumn[]; data: Value[][] } {
  const n = rows.data[0]?.length ?? 0;
  let order: number[] = Array.from({ length: n }, (_, r) => r);
  if (orderBy.length > 0) {
    const keys = orderBy.map((o) => {
      const e = byAlias(o.expr) ?? o.expr;
      return order.map((r) => evaluate(e, scopeOf(rows.columns, rows.data, r)).value);
    });
    order.sort((a, b) => {
      for (let k = 0; k < keys.length; k++) {
        const c = compareValues(keys[k][a], keys[k][b]);
        if (c !== 0) return orderBy[k].desc ? -c : c;
      }
      return a - b;
    });
  }
  const start = offset ?? 0;
  order = order.slice(start, limit === undefined ? undefined : start + limit);
  const columns: SqlColumn[] = [];
  const data: Value[][] = [];
  for (const o of outputs) {
    const type = copiedType(o);
    if (o.copy !== undefined && type !== undefined) {
      const from = rows.data[rows.columns.indexOf(o.copy)] ?? [];
      columns.push({ name: o.name, type });
      data.push(order.map((r) => from[r] ?? null));
      continue;
    }
    const values: Typed[] = order.map((r) => evaluate(o.expr, scopeOf(rows.columns, rows.data, r)));
    columns.push({ name: o.name, type: values[0]?.type ?? staticType(o.expr) });
    data.push(values.map((v) => v.value));
  }
  return { columns, data };
}

/** The type of an expression with no row to evaluate it on (an empty result). */
function staticType(e: Expr): ColumnType {
  if (e.kind === 'literal') return typeof e.value === 'number' ? (Number.isInteger(e.value) ? 'int64' : 'float64') : typeof e.value === 'boolean' ? 'bool' : 'string';
  if (e.kind === 'binary') return ['=', '!=', '<', '<=', '>', '>=', 'AND', 'OR', 'LIKE'].includes(e.op) ? 'bool' : 'float64';
  if (e.kind === 'call' && e.name === 'count') return 'int64';
  return 'float64';
}
