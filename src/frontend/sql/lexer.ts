import { RepriseError } from '../../errors.js';
import type { SqlDialect } from './types.js';

/**
 * Tokens of a SQL text. Words are identifiers or keywords (`upper` for
 * comparing with keywords, `text` as written); `ident` is a quoted
 * identifier (backticks; double quotes on PostgreSQL); `string` a string
 * literal (single quotes; double quotes too on MySQL, as MySQL reads them).
 */
export type Token =
  | { readonly kind: 'word'; readonly text: string; readonly upper: string; readonly pos: number }
  | { readonly kind: 'ident'; readonly text: string; readonly pos: number }
  | { readonly kind: 'string'; readonly text: string; readonly pos: number }
  | { readonly kind: 'number'; readonly text: string; readonly pos: number }
  | { readonly kind: 'variable'; readonly text: string; readonly pos: number }
  | { readonly kind: 'op'; readonly text: string; readonly pos: number }
  /** A statement parameter: `?` (numbered in order of appearance) or `$n` (PostgreSQL's). */
  | { readonly kind: 'param'; readonly text: string; readonly pos: number }
  | { readonly kind: 'eof'; readonly text: ''; readonly pos: number };

const OPERATORS = ['<=>', '!=', '<>', '<=', '>=', '::', '||', '(', ')', ',', ';', '.', '*', '=', '<', '>', '+', '-', '/', '%'];

/** A SQL_SYNTAX error at `pos` of `sql`, naming its line and column. */
export function syntaxError(sql: string, pos: number, message: string): RepriseError {
  const before = sql.slice(0, pos);
  const line = before.split('\n').length;
  const column = pos - before.lastIndexOf('\n');
  return new RepriseError('SQL_SYNTAX', `SQL syntax error at line ${line}, column ${column}: ${message}`, { line, column });
}

/** How a token reads in an error message. */
export function describeToken(t: Token): string {
  switch (t.kind) {
    case 'eof':
      return 'the end of the statement';
    case 'string':
      return `string '${t.text}'`;
    case 'ident':
      return `identifier "${t.text}"`;
    default:
      return `'${t.text}'`;
  }
}

export function tokenize(sql: string, dialect: SqlDialect): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const n = sql.length;
  while (i < n) {
    const ch = sql[i];
    if (/\s/.test(ch)) {
      i++;
      continue;
    }
    if ((ch === '-' && sql[i + 1] === '-') || (ch === '#' && dialect === 'mysql')) {
      while (i < n && sql[i] !== '\n') i++;
      continue;
    }
    if (ch === '/' && sql[i + 1] === '*') {
      const end = sql.indexOf('*/', i + 2);
      if (end < 0) throw syntaxError(sql, i, 'a comment /* is not closed');
      i = end + 2;
      continue;
    }
    const start = i;
    if (ch === "'" || (ch === '"' && dialect === 'mysql')) {
      const [text, next] = readQuoted(sql, i, ch, dialect === 'mysql');
      tokens.push({ kind: 'string', text, pos: start });
      i = next;
      continue;
    }
    if (ch === '`' || ch === '"') {
      const [text, next] = readQuoted(sql, i, ch, false);
      tokens.push({ kind: 'ident', text, pos: start });
      i = next;
      continue;
    }
    if (/[0-9]/.test(ch) || (ch === '.' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      const m = /^(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?/.exec(sql.slice(i)) as RegExpExecArray;
      tokens.push({ kind: 'number', text: m[0], pos: start });
      i += m[0].length;
      continue;
    }
    if (ch === '?' || (ch === '$' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      const m = /^(?:\?|\$[0-9]+)/.exec(sql.slice(i)) as RegExpExecArray;
      tokens.push({ kind: 'param', text: m[0], pos: start });
      i += m[0].length;
      continue;
    }
    if (ch === '@') {
      const m = /^@@?(?:(?:global|session|local)\.)?[A-Za-z_][A-Za-z0-9_$.]*/i.exec(sql.slice(i));
      if (m === null) throw syntaxError(sql, i, "'@' must start a variable name");
      tokens.push({ kind: 'variable', text: m[0], pos: start });
      i += m[0].length;
      continue;
    }
    if (/[A-Za-z_\u0080-\uffff]/.test(ch)) {
      const m = /^[A-Za-z_\u0080-\uffff][A-Za-z0-9_$\u0080-\uffff]*/.exec(sql.slice(i)) as RegExpExecArray;
      tokens.push({ kind: 'word', text: m[0], upper: m[0].toUpperCase(), pos: start });
      i += m[0].length;
      continue;
    }
    const op = OPERATORS.find((o) => sql.startsWith(o, i));
    if (op === undefined) throw syntaxError(sql, i, `unexpected character '${ch}'`);
    tokens.push({ kind: 'op', text: op, pos: start });
    i += op.length;
  }
  tokens.push({ kind: 'eof', text: '', pos: n });
  return tokens;
}

const BACKSLASH_ESCAPES: Record<string, string> = { n: '\n', t: '\t', r: '\r', '0': '\0', b: '\b', Z: '\x1a' };

/** The text of a quoted token at `i` and the index after it; a doubled quote is one quote, and on MySQL a backslash escapes. */
function readQuoted(sql: string, i: number, quote: string, backslash: boolean): [string, number] {
  let out = '';
  let j = i + 1;
  for (;;) {
    if (j >= sql.length) throw syntaxError(sql, i, `the quote ${quote} opened here is not closed`);
    const c = sql[j];
    if (backslash && c === '\\' && j + 1 < sql.length) {
      const e = sql[j + 1];
      out += BACKSLASH_ESCAPES[e] ?? e;
      j += 2;
      continue;
    }
    if (c === quote) {
      if (sql[j + 1] === quote) {
        out += quote;
        j += 2;
        continue;
      }
      return [out, j + 1];
    }
    out += c;
    j++;
  }
}
