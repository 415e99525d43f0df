import http from 'node:http';
import { Observable } from 'rxjs';
import { lazyBuiltin } from '../../builtin.js';
import type { HostSwitchRequester, HostSwitchResponse } from './types.js';

const https = lazyBuiltin('node:https');

/** A keep-alive agent with a socket per request in flight, and one for the list read. */
export function newAgent(url: string, concurrency: number): http.Agent {
  const options = { keepAlive: true, maxSockets: concurrency + 1 };
  return url.startsWith('https:') ? new (https().Agent)(options) : new http.Agent(options);
}

/**
 * The HTTP client of the sink: node:http(s), one request per call, the whole body read (up to
 * 16 MiB), bounded by `timeoutMs`; unsubscribing aborts it.
 */
export function httpRequester(url: string, options: { readonly timeoutMs: number; readonly agent?: http.Agent }): HostSwitchRequester {
  const base = url.endsWith('/') ? url : `${url}/`;
  // The list of 10,000 forwards is some 750 KB; leave room for more.
  const maxBody = 16 * 1024 * 1024;
  return (req) =>
    new Observable<HostSwitchResponse>((subscriber) => {
      const target = new URL(req.path.replace(/^\//, ''), base);
      const client = target.protocol === 'https:' ? https() : http;
      const headers: http.OutgoingHttpHeaders = req.body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(req.body) };
      const call = client.request(target, { method: req.method, headers, ...(options.agent && { agent: options.agent }) }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBody) call.destroy(new Error(`answer to ${req.method} ${req.path} is larger than ${String(maxBody)} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => {
          subscriber.next({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') });
          subscriber.complete();
        });
        res.on('error', (err) => {
          subscriber.error(err);
        });
      });
      const deadline = setTimeout(() => call.destroy(new Error(`no answer to ${req.method} ${req.path} within ${String(options.timeoutMs)} ms`)), options.timeoutMs);
      call.on('error', (err) => {
        subscriber.error(err);
      });
      call.on('close', () => {
        clearTimeout(deadline);
      });
      call.end(req.body);
      return () => {
        clearTimeout(deadline);
        call.destroy();
      };
    });
}
