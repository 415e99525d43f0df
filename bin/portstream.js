#!/usr/bin/env node
// The package's bin: runs the TypeScript entry through tsx, exactly as `npm start` does.
import { register } from 'tsx/esm/api';

register();
await import('../src/main.ts');
