// What the server-CPU scripts (fanout-cpu.mjs, handle-cpu.mjs) share: their command-line options, the release
// binary started on a free loopback port, its CPU time, and armored-looking payloads of a given size.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** The value after `--name` on the command line, or `fallback`. */
export function option(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}

/** `bytes` of armored-looking text of `kind` (MESSAGE, PUBLIC KEY BLOCK): the server checks only the header. */
export function armored(kind, bytes) {
  const head = `-----BEGIN PGP ${kind}-----\n\n`;
  const tail = `\n-----END PGP ${kind}-----\n`;
  return head + 'Q'.repeat(Math.max(1, bytes - head.length - tail.length)) + tail;
}

function freePort() {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => { const { port } = probe.address(); probe.close(() => resolve(port)); });
  });
}

// /proc/<pid>/stat counts CPU time in clock ticks.
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/**
 * `binary` with `--rate-messages 0` on a free loopback port: {url (of /ws), cpuSeconds() (user + system time so
 * far), stop()}.
 */
export async function startMeasuredServer(binary) {
  const port = await freePort();
  const child = spawn(binary, ['--listen', `127.0.0.1:${port}`, '--rate-messages', '0'], { stdio: 'ignore' });
  await new Promise((resolve) => setTimeout(resolve, 500));
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    cpuSeconds() {
      // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
      const stat = readFileSync(`/proc/${child.pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
    },
    stop: () => child.kill('SIGTERM'),
  };
}
