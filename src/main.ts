#!/usr/bin/env node
import { fromEvent, merge } from 'rxjs';
import { runCli } from './cli.js';

// The process entry: signals become the agent's stop$, the resolved code becomes the exit code.
const stop$ = merge(fromEvent(process, 'SIGTERM'), fromEvent(process, 'SIGINT'));
const code = await runCli(process.argv.slice(2), { stdout: process.stdout, stderr: process.stderr, env: process.env, stop$ });
process.exit(code);
