#!/usr/bin/env node
// The package's bin: the compiled agent (dist/, built by `npm install` through the prepare script
// or by `npm run build`). Compiled code starts faster and uses less memory than TypeScript
// compiled on the fly, and needs no tsx at run time.
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/src/main.js', import.meta.url);
if (!existsSync(compiled)) {
  process.stderr.write('portstream: not built (dist/src/main.js is missing); run `npm run build`\n');
  process.exit(1);
}
await import(compiled.href);
