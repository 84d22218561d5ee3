#!/usr/bin/env node
// Server CPU for a group message: one MESSAGE to N handles (PROTOCOL.md §11) against N MESSAGEs to one
// handle each, through the real release binary over loopback, alternated round by round. Payload sizes are
// what OpenPGP.js makes for the same 283-byte envelope (scripts/group-sizes.mjs): one payload encrypted to
// all 50 members and the sender, against one encrypted to a single friend. The server's CPU time is read from
// /proc/<pid>/stat, so the load generator's own cost (this Node process) is not counted. BENCHMARKS.md cites it.
//   cargo build --release && node scripts/fanout-cpu.mjs [--rounds 3] [--messages 4000] [--bin target/release/secchat]
import { armored, option, startMeasuredServer } from './lib/measured-server.mjs';
import WebSocket from 'ws';

const MEMBERS = 50;
const ROUNDS = Number(option('rounds', 3));
const MESSAGES = Number(option('messages', 4000));
const BINARY = option('bin', 'target/release/secchat');
const GROUP_PAYLOAD_BYTES = 6735;
const PAIR_PAYLOAD_BYTES = 907;
const IN_FLIGHT_COPIES = 800;

function handle(n) {
  return (`h${n}`.padEnd(43, 'A')).replace(/[^A-Za-z0-9_-]/g, 'A');
}
function open(url) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('error', reject);
    ws.once('open', () => {
      ws.once('message', () => resolve(ws));
      ws.send(JSON.stringify({ type: 'CONNECT', version: 2 }));
    });
  });
}
function reply(ws, frame) {
  return new Promise((resolve) => { ws.once('message', (data) => resolve(JSON.parse(data))); ws.send(JSON.stringify(frame)); });
}

const server = await startMeasuredServer(BINARY);
const { url } = server;
const sender = await open(url);
const members = [];
for (let i = 0; i < MEMBERS; i++) {
  const ws = await open(url);
  const listening = await reply(ws, { type: 'LISTEN', handles: [handle(i)], ref: 'l' });
  if (listening.type !== 'LISTENING') throw new Error(`LISTEN answered ${JSON.stringify(listening)}`);
  members.push(ws);
}
const handles = members.map((_, i) => handle(i));

/** Sends `frames` (each delivering `copies` copies) keeping IN_FLIGHT_COPIES unacknowledged; resolves when every member has them all. */
function run(frames, copies) {
  return new Promise((resolve, reject) => {
    let received = 0;
    let acked = 0;
    let sent = 0;
    const expected = frames.length * copies;
    const onCopy = () => { received += 1; if (received === expected && acked === frames.length) finish(); };
    const onReply = (data) => {
      const frame = JSON.parse(data);
      if (frame.type !== 'ACK') { reject(new Error(`the sender got ${data}`)); return; }
      acked += 1;
      pump();
      if (received === expected && acked === frames.length) finish();
    };
    const pump = () => {
      while (sent < frames.length && (sent - acked) * copies < IN_FLIGHT_COPIES) sender.send(frames[sent++]);
    };
    const finish = () => {
      members.forEach((ws) => ws.off('message', onCopy));
      sender.off('message', onReply);
      resolve();
    };
    members.forEach((ws) => ws.on('message', onCopy));
    sender.on('message', onReply);
    pump();
  });
}

const groupPayload = armored('MESSAGE', GROUP_PAYLOAD_BYTES);
const pairPayload = armored('MESSAGE', PAIR_PAYLOAD_BYTES);
const groupFrames = Array.from({ length: MESSAGES }, (_, i) => JSON.stringify({ type: 'MESSAGE', handles, payload: groupPayload, ref: `g${i}` }));
const pairFrames = [];
for (let i = 0; i < MESSAGES; i++) {
  for (const h of handles) pairFrames.push(JSON.stringify({ type: 'MESSAGE', handle: h, payload: pairPayload, ref: `p${pairFrames.length}` }));
}
const uploaded = (frames) => frames.reduce((sum, frame) => sum + Buffer.byteLength(frame), 0) / MESSAGES;
console.log(`${MEMBERS} members, ${MESSAGES} group messages per case; bytes uploaded per group message: one to ${MEMBERS} handles ${Math.round(uploaded(groupFrames))}, ${MEMBERS} to one handle ${Math.round(uploaded(pairFrames))}`);
for (let round = 1; round <= ROUNDS; round++) {
  for (const [name, frames, copies] of [['one MESSAGE to 50 handles', groupFrames, MEMBERS], ['50 MESSAGEs to one handle', pairFrames, 1]]) {
    const before = server.cpuSeconds();
    const started = process.hrtime.bigint();
    await run(frames, copies);
    const wall = Number(process.hrtime.bigint() - started) / 1e9;
    const cpu = server.cpuSeconds() - before;
    console.log(`round ${round}: ${name}: server CPU ${(cpu * 1e6 / MESSAGES).toFixed(1)} µs per group message (${(cpu * 1e6 / (MESSAGES * MEMBERS)).toFixed(2)} µs per copy), ${wall.toFixed(2)} s wall`);
  }
}
sender.close();
members.forEach((ws) => ws.close());
server.stop();
