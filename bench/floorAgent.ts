/**
 * The least any Node agent could do on the Docker add path, for `dockerAdd.ts` to measure beside
 * the real one: follow the engine's start events and, for each, send one PortMapping message to
 * the vtunnel peer at once. It inspects nothing, keeps no state and checks nothing; it reads the
 * host port from a label the bench puts on its containers. Whatever portstream takes beyond this,
 * in the same run on the same machine, is its own.
 *
 * Usage: floorAgent.ts PEER_PORT LABEL
 */
import http from 'node:http';
import net from 'node:net';

const [peerPort = '', label = ''] = process.argv.slice(2);
const filters = encodeURIComponent(JSON.stringify({ type: ['container'], event: ['start'] }));

function send(hostPort: string): void {
  const line = `${JSON.stringify({ remove: false, ports: { '80/tcp': [{ HostIp: '0.0.0.0', HostPort: hostPort }] }, connectAddrs: [] })}\n`;
  const socket = net.connect({ host: '127.0.0.1', port: Number(peerPort) }, () => socket.end(line));
  socket.on('data', () => undefined).on('error', () => undefined);
}

http.get({ socketPath: '/var/run/docker.sock', path: `/events?filters=${filters}` }, (response) => {
  process.stderr.write('connected to the Docker engine\n');
  let buffered = '';
  response.setEncoding('utf8').on('data', (chunk: string) => {
    buffered += chunk;
    for (let at = buffered.indexOf('\n'); at >= 0; at = buffered.indexOf('\n')) {
      const event = JSON.parse(buffered.slice(0, at)) as { Actor?: { Attributes?: Record<string, string> } };
      buffered = buffered.slice(at + 1);
      const hostPort = event.Actor?.Attributes?.[label];
      if (hostPort !== undefined) send(hostPort);
    }
  });
});
