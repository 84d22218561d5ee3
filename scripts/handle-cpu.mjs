#!/usr/bin/env node
// Server CPU per MESSAGE routed by handle (PROTOCOL.md §10) against by ID, through the real release binary
// over loopback, alternated round by round: one sender, one friend who also listens on a handle, the same
// 512-byte payload, with `ref` (so an ACK each). The server's CPU time is read from /proc/<pid>/stat, so the
// cost of this Node client is not counted. BENCHMARKS.md cites it.
//   cargo build --release && node scripts/handle-cpu.mjs [--rounds 4] [--messages 50000] [--bin target/release/secchat]
import { armored, option, startMeasuredServer } from './lib/measured-server.mjs';
import WebSocket from 'ws';

const ROUNDS = Number(option('rounds', 4));
const MESSAGES = Number(option('messages', 50000));
const BINARY = option('bin', 'target/release/secchat');
const IN_FLIGHT = 256;
const HANDLE = 'q0Zb-_9xAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA';

function next(ws) {
  return new Promise((resolve) => ws.once('message', (data) => resolve(JSON.parse(data))));
}
async function open(url) {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ws.send(JSON.stringify({ type: 'CONNECT', version: 2 }));
  const reply = await next(ws);
  return { ws, id: reply.id };
}

const server = await startMeasuredServer(BINARY);
const { url } = server;
const alice = await open(url);
const bob = await open(url);
const key = armored('PUBLIC KEY BLOCK', 700);
alice.ws.send(JSON.stringify({ type: 'FRIEND_REQUEST', to: bob.id, public_key: key }));
await next(bob.ws);
bob.ws.send(JSON.stringify({ type: 'FRIEND_ACCEPT', to: alice.id, public_key: key }));
await next(alice.ws);
bob.ws.send(JSON.stringify({ type: 'LISTEN', handles: [HANDLE] }));
const listening = await next(bob.ws);
if (listening.type !== 'LISTENING') throw new Error(`LISTEN answered ${JSON.stringify(listening)}`);

function run(frames) {
  return new Promise((resolve, reject) => {
    let received = 0;
    let acked = 0;
    let sent = 0;
    const done = () => received === frames.length && acked === frames.length;
    const finish = () => { bob.ws.off('message', onCopy); alice.ws.off('message', onReply); resolve(); };
    const pump = () => { while (sent < frames.length && sent - acked < IN_FLIGHT) alice.ws.send(frames[sent++]); };
    const onCopy = () => { received += 1; if (done()) finish(); };
    const onReply = (data) => {
      if (!String(data).startsWith('{"type":"ACK"')) { reject(new Error(`the sender got ${data}`)); return; }
      acked += 1;
      pump();
      if (done()) finish();
    };
    bob.ws.on('message', onCopy);
    alice.ws.on('message', onReply);
    pump();
  });
}

const payload = armored('MESSAGE', 512);
const byId = Array.from({ length: MESSAGES }, (_, i) => JSON.stringify({ type: 'MESSAGE', to: bob.id, payload, ref: `${i}` }));
const byHandle = Array.from({ length: MESSAGES }, (_, i) => JSON.stringify({ type: 'MESSAGE', handle: HANDLE, payload, ref: `${i}` }));
console.log(`${MESSAGES} messages of 512 B per case, with ref, one sender and one recipient`);
for (let round = 1; round <= ROUNDS; round++) {
  for (const [name, frames] of [['by ID', byId], ['by handle', byHandle]]) {
    const before = server.cpuSeconds();
    await run(frames);
    const cpu = server.cpuSeconds() - before;
    console.log(`round ${round}: ${name}: server CPU ${(cpu * 1e6 / MESSAGES).toFixed(2)} µs per message`);
  }
}
alice.ws.close();
bob.ws.close();
server.stop();
