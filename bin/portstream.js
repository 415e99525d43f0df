#!/usr/bin/env node
// The package's bin. `npm install` compiles the sources to dist/ (the prepare script); run that,
// which starts faster and uses ~25 MB less than compiling on the fly. Without dist/ (a checkout
// that skipped the build), run the TypeScript sources through tsx, exactly as `npm start` does.
import { existsSync } from 'node:fs';

const compiled = new URL('../dist/src/main.js', import.meta.url);
if (existsSync(compiled)) {
  await import(compiled.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/main.ts');
}
