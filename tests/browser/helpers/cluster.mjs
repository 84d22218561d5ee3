// Cluster mode (PROTOCOL §12, DEPLOY §4) for the browser tests: a throw-away redis-server, `secchat` nodes
// joined to it, and a small TCP load balancer in front of them, so a page keeps one origin (and its
// localStorage) while the node behind it changes.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, stopProcess } from './server.mjs';

const REDIS_BIN = process.env.REDIS_SERVER || 'redis-server';

/** Resolves once something on `port` answers a Redis PING with +PONG; false if it did not before `deadline`. */
function redisAnswers(port) {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let reply = '';
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false); });
    socket.on('error', () => resolve(false));
    socket.on('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk;
      if (reply.includes('\r\n')) {
        socket.destroy();
        resolve(reply.startsWith('+PONG'));
      }
    });
  });
}

// A test file killed by the runner's timeout never reaches its `after` hooks: the redis-servers it started
// must not outlive it either.
const liveRedis = new Set();
process.on('exit', () => { for (const child of liveRedis) child.kill('SIGKILL'); });

/**
 * redis-server on a free loopback port, nothing on disk (as DEPLOY §4 recommends), its files in a temporary
 * directory. `stop()` kills it and removes the directory.
 */
export async function startRedis() {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'secchat-browser-redis-'));
  const child = spawn(REDIS_BIN, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--daemonize', 'no', '--dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  liveRedis.add(child);
  let output = '';
  child.stdout.on('data', (chunk) => { output += chunk; });
  child.stderr.on('data', (chunk) => { output += chunk; });
  const stop = async () => {
    await stopProcess(child);
    liveRedis.delete(child);
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`redis-server exited with status ${child.exitCode}:\n${output}`);
    }
    if (await redisAnswers(port)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`redis-server did not answer PING on ${port}:\n${output}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { port, url: `redis://127.0.0.1:${port}`, logs: () => output, stop };
}

const LINKS_UP = ['cluster: the commands link to Redis is up', "cluster: subscribed to this node's channel"];

/**
 * A node answering /healthz is not yet in the cluster: until both links to Redis are up, requests for other
 * nodes fail with `unavailable` and new IDs are claimed late. Waits for the node's log to say both are up.
 */
export async function waitForClusterLinks(node, timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!LINKS_UP.every((line) => node.logs().includes(line))) {
    if (Date.now() > deadline) throw new Error(`node on ${node.port} did not join the cluster in time:\n${node.logs()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * A TCP load balancer on a free loopback port: each new connection goes to the first of `backends` (ports) that
 * accepts it, as a balancer whose health check skips a node that is down. `connections` records, per
 * connection, the backend port and the first line the browser sent (e.g. `GET /ws HTTP/1.1`). While
 * `refusing` is true it closes every new connection at once (counted in `refused`), as a balancer that has no
 * node to offer.
 */
export async function startBalancer(backends) {
  const connections = [];
  const sockets = new Set();
  const balancer = { refusing: false, refused: 0 };
  const server = createServer((client) => {
    if (balancer.refusing) {
      balancer.refused += 1;
      client.destroy();
      return;
    }
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.pause();
    const record = { backend: null, firstLine: null };
    connections.push(record);
    client.once('data', (chunk) => { record.firstLine = String(chunk).split('\r\n')[0]; });
    const tryBackend = (index) => {
      if (index >= backends.length) {
        client.destroy();
        return;
      }
      const upstream = connect(backends[index], '127.0.0.1');
      sockets.add(upstream);
      upstream.on('close', () => sockets.delete(upstream));
      upstream.on('error', () => {
        if (record.backend === null) tryBackend(index + 1);
        else client.destroy();
      });
      upstream.once('connect', () => {
        record.backend = backends[index];
        // The node going away ends the browser's connection, and the other way round.
        // (pipe() forwards a clean end with what was still buffered; an abrupt close is passed on abruptly).
        upstream.on('close', (hadError) => (hadError ? client.destroy() : client.end()));
        client.on('close', (hadError) => (hadError ? upstream.destroy() : upstream.end()));
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    tryBackend(0);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return Object.assign(balancer, {
    port,
    url: `http://127.0.0.1:${port}/`,
    connections,
    /** The backend ports the page's WebSocket connections went to, in order. */
    webSocketBackends: () => connections.filter((c) => c.firstLine?.startsWith('GET /ws ')).map((c) => c.backend),
    close: () => new Promise((resolve) => {
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    }),
  });
}
