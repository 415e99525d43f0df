#!/usr/bin/env node
// First, before the imports below allocate: it keeps V8's nursery small (see the module).
import './heapTuning.js';
import { ReplaySubject } from 'rxjs';
import { runCli } from './cli.js';
import { trimHeapPeriodically } from './heapTrim.js';

// The process entry: signals become the agent's stop$, the resolved code becomes the exit code.
// The handlers go in first thing: a signal during start-up (loading a backend takes a few hundred
// ms) is kept and acted on once the agent runs, rather than ending the process with 143.
// No top-level await: the single executable runs this file bundled as CommonJS.
const stop$ = new ReplaySubject<NodeJS.Signals>(1);
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => { stop$.next(signal); });
trimHeapPeriodically();
void runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, stop$ }).then((code) => process.exit(code));
