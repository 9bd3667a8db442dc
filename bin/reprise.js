#!/usr/bin/env node
// The CLI entry point; the TypeScript is compiled to dist/ by `npm install` (prepare).
import { main } from '../dist/src/cli/main.js';

await main(process.argv);
