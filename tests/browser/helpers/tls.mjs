// The real `secchat` binary serving HTTPS with `--tls-self-signed` in a throw-away directory, as on a
// Raspberry Pi at home (docs/DEPLOY.md, guide 2). Ready once the certificate it serves is the one
// whose SHA-256 fingerprint it printed: the fingerprint a person is told to compare.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { binaryPath, freePort, stopProcess } from './server.mjs';

/** GET /healthz over TLS without trusting the certificate; resolves with the certificate's SHA-256. */
function healthz(port) {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', rejectUnauthorized: false, timeout: 2000 }, (res) => {
      const fingerprint = res.socket.getPeerCertificate().fingerprint256;
      let body = '';
      res.on('data', (chunk) => { body += chunk; });
      res.on('end', () => (res.statusCode === 200 && body === 'ok'
        ? resolve(fingerprint)
        : reject(new Error(`/healthz answered ${res.statusCode} ${body}`))));
    });
    req.on('timeout', () => req.destroy(new Error('/healthz timed out')));
    req.on('error', reject);
    req.end();
  });
}

const PRINTED_FINGERPRINT = /^SHA-256 fingerprint: ((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$/m;

/**
 * @param {string[]} extraArgs  more flags
 * @returns {Promise<{url: string, port: number, fingerprint: string, logs: () => string, stop: () => Promise<void>}>}
 */
export async function startSelfSignedServer(extraArgs = []) {
  if (!existsSync(binaryPath)) {
    throw new Error(`secchat binary not found at ${binaryPath}: run \`cargo build\` first or set SECCHAT_BIN`);
  }
  const dir = mkdtempSync(join(tmpdir(), 'secchat-browser-tls-'));
  const port = await freePort();
  const args = ['--listen', `127.0.0.1:${port}`, '--tls-self-signed', join(dir, 'tls'), ...extraArgs];
  if (process.env.SECCHAT_PUBLIC) args.push('--public', process.env.SECCHAT_PUBLIC);
  const child = spawn(binaryPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const stop = async () => {
    await stopProcess(child);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const fingerprint = await waitUntilServing(port, child, () => output, Date.now() + 10000);
    return { url: `https://127.0.0.1:${port}/`, port, fingerprint, logs: () => output, stop };
  } catch (error) {
    await stop();
    throw new Error(`${error.message}\n${output}`);
  }
}

async function waitUntilServing(port, child, logs, deadline) {
  let lastError = null;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`secchat exited early with status ${child.exitCode}`);
    const printed = PRINTED_FINGERPRINT.exec(logs());
    if (printed) {
      try {
        const served = await healthz(port);
        if (served !== printed[1]) throw new Error(`serves ${served} but printed ${printed[1]}`);
        return printed[1];
      } catch (error) {
        lastError = error;
        if (/printed/.test(error.message)) throw error;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`secchat did not serve HTTPS in time (${lastError && lastError.message})`);
}
