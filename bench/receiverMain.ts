/**
 * A vtunnel peer in a process of its own (`startReceiverProcess`): prints its port, then one JSON
 * line per message it receives. Nothing else runs here, so a message is stamped when it arrives,
 * not when a bench busy with its own engine calls gets round to it.
 */
import { startReceiver } from './receiver.js';

const receiver = await startReceiver((message) => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
});
process.stdout.write(`${JSON.stringify({ port: receiver.port })}\n`);
process.stdin.resume().on('end', () => void receiver.close().then(() => process.exit(0)));
