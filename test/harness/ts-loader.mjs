// Run a TypeScript file in a child process without a build step:
//   node --import ./test/harness/ts-loader.mjs some-child.ts
// Registers ts-loader-hooks.mjs, which transpiles .ts files (types dropped,
// nothing checked: `npx tsc --noEmit` does that) and maps the `.js`
// specifiers of our imports to their `.ts` sources.
import { register } from 'node:module';

register('./ts-loader-hooks.mjs', import.meta.url);
