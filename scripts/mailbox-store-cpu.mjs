#!/usr/bin/env node
// Redis CPU per STORE of the cluster's mailbox (src/bus/mailbox.rs), against a STORE that only
// appends to the handle's list and trims it (no byte cap, no fair share): starts its own
// redis-server per run, pipelines N STOREs of 600-byte letters over 1,000 handles and 50 sender
// blocks, and reads redis-server's utime + stime from /proc before and after.
//
//   node scripts/mailbox-store-cpu.mjs [N] [ROUNDS] [CAP]
//
// CAP is --mailbox-bytes for the bounded STORE (default 64 MiB: nothing pushed out; a small
// one, e.g. 2000000, makes every STORE push out the fullest block's oldest letter).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import net from 'node:net';

const n = Number(process.argv[2] ?? 20000);
const rounds = Number(process.argv[3] ?? 2);
const cap = Number(process.argv[4] ?? 64 * 1024 * 1024);
const source = readFileSync(new URL('../src/bus/mailbox.rs', import.meta.url), 'utf8');

/** A Rust string literal's text as the compiler reads it: `\` + newline + indentation dropped, `\"` unescaped. */
const unrust = (text) => text.replace(/\\\n\s*/g, '').replace(/\\"/g, '"');
const functions = unrust(source.match(/macro_rules! mailbox_lua_functions \{\s*\(\) => \{\s*"([\s\S]*?)"\s*\};/)[1]);
const store = functions + unrust(source.match(/pub const STORE: &str = concat!\(\s*mailbox_lua_functions!\(\),\s*"([\s\S]*?)"\s*\);/)[1]);
const appendOnly = "if ARGV[4] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end " +
  "redis.call('RPUSH', KEYS[2], ARGV[1]) redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1) " +
  "redis.call('PEXPIRE', KEYS[2], ARGV[3]) return 1";

const command = (args) => {
  const parts = [Buffer.from(`*${args.length}\r\n`)];
  for (const arg of args) {
    const bytes = Buffer.from(String(arg));
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, Buffer.from('\r\n'));
  }
  return Buffer.concat(parts);
};

const cpuTicks = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
};

async function run(bounded) {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const redis = spawn('redis-server', ['--port', String(port), '--save', '', '--appendonly', 'no', '--logfile', '/dev/null']);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const letter = `{"type":"MESSAGE","handle":"h","payload":"${'x'.repeat(540)}","ts":1}`;
  const commands = [];
  for (let i = 0; i < n; i += 1) {
    const handle = `h${i % 1000}`;
    const entry = `secchat:h:${handle}`;
    commands.push(command(bounded
      ? ['EVAL', store, 2, entry, `secchat:mb:h:${handle}`, letter, 256, 600000, 1, `${(i % 50).toString(16)}.0.24`, 1 << 20, cap, 512, handle]
      : ['EVAL', appendOnly, 2, entry, `secchat:mail:${handle}`, letter, 256, 600000, 1]));
  }
  const before = cpuTicks(redis.pid);
  await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(Buffer.concat(commands)));
    let replies = 0;
    socket.on('data', (data) => {
      for (const byte of data) if (byte === 10) replies += 1;
      if (replies >= n) { socket.destroy(); resolve(); }
    });
    socket.on('error', reject);
  });
  const ticks = cpuTicks(redis.pid) - before;
  // Every STORE must have been kept (1), or the figure measures refusals.
  const check = await new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.end(command(['EXISTS', 'secchat:mb:seq', 'secchat:mail:h0'])));
    socket.on('data', (data) => { resolve(data.toString()); socket.destroy(); });
  });
  if (!check.startsWith(':1')) throw new Error(`no letter was kept: ${check}`);
  const info = await new Promise((resolve) => {
    let text = '';
    const socket = net.connect(port, '127.0.0.1', () => socket.write(command(['INFO', 'memory'])));
    socket.on('data', (data) => {
      text += data.toString();
      if (text.includes('used_memory_dataset:')) { socket.destroy(); resolve(text); }
    });
  });
  redis.kill();
  const dataset = Number(info.match(/used_memory_dataset:(\d+)/)[1]);
  // /proc counts in 10 ms ticks.
  return { ns: (ticks * 10_000_000) / n, bytesPerLetter: dataset / n };
}

for (let round = 0; round < rounds; round += 1) {
  const append = await run(false);
  const bounded = await run(true);
  console.log(`round ${round + 1}: append-only ${append.ns.toFixed(0)} ns per STORE (${append.bytesPerLetter.toFixed(0)} B of Redis data per STORE), ` +
    `bounded (cap ${cap}) ${bounded.ns.toFixed(0)} ns per STORE (${bounded.bytesPerLetter.toFixed(0)} B), ratio ${(bounded.ns / append.ns).toFixed(2)}`);
}
