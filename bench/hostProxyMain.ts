/** `benchHostProxy` in a process of its own (see `isolated.ts`): figures as JSON lines on stdout. */
import { benchHostProxy } from './hostProxy.js';

await benchHostProxy(process.argv.includes('--quick'));
