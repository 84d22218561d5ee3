// Starts the real `secchat` binary on a free loopback port for a test file, and stops it afterwards.
// The binary serves its built-in web client (as deployed); SECCHAT_PUBLIC overrides that while developing.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { repoRoot } from './paths.mjs';

export const binaryPath = process.env.SECCHAT_BIN || join(repoRoot, 'target', 'debug', 'secchat');

export function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.unref();
    probe.on('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

async function waitForHealth(url, child, deadline) {
  let lastError = null;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`secchat exited early with status ${child.exitCode}`);
    try {
      const response = await fetch(`${url}healthz`);
      if (response.status === 200 && (await response.text()) === 'ok') return;
    } catch (error) {
      lastError = error;
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`secchat did not answer /healthz in time (${lastError && lastError.message})`);
}

/**
 * @param {string[]} extraArgs  more flags, e.g. ['--resume-grace', '0']
 * @param {{port?: number}} [options]
 * @returns {Promise<{url: string, wsUrl: string, port: number, logs: () => string, stop: () => Promise<void>}>}
 */
export async function startServer(extraArgs = [], { port: wantedPort } = {}) {
  if (!existsSync(binaryPath)) {
    throw new Error(`secchat binary not found at ${binaryPath}: run \`cargo build\` first or set SECCHAT_BIN`);
  }
  // `port`: the same port again, for a restart the clients reconnect to.
  const port = wantedPort || await freePort();
  const args = ['--listen', `127.0.0.1:${port}`, ...extraArgs];
  if (process.env.SECCHAT_PUBLIC) args.push('--public', process.env.SECCHAT_PUBLIC);
  const child = spawn(binaryPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const url = `http://127.0.0.1:${port}/`;
  try {
    await waitForHealth(url, child, Date.now() + 10000);
  } catch (error) {
    child.kill('SIGKILL');
    throw new Error(`${error.message}\n${output}`);
  }
  return {
    url,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    port,
    logs: () => output,
    stop: () => stopProcess(child),
  };
}

/** SIGTERM, then SIGKILL after 3 s; resolves once the process has exited. */
export function stopProcess(child) {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve();
      return;
    }
    const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}
