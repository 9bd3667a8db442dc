import { existsSync, readFileSync } from 'node:fs';

/**
 * This package's version, from its package.json: two levels above this
 * file when run from source (src/api), three when compiled (dist/src/api).
 */
export function packageVersion(): string {
  for (const up of ['../../package.json', '../../../package.json']) {
    const url = new URL(up, import.meta.url);
    if (existsSync(url)) return (JSON.parse(readFileSync(url, 'utf8')) as { version: string }).version;
  }
  return '0.0.0';
}

/** What SQL clients are told the server is: a MySQL 8 version (drivers read it for features), then reprise's. */
export function sqlServerVersion(): string {
  return `8.0.0-reprise-${packageVersion()}`;
}
