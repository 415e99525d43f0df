import { benchProcnetHere } from './procnet.js';

await benchProcnetHere(process.argv.includes('--quick'));
