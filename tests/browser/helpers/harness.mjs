// One browser per test file, and servers started by its tests with their own flags: launched before the file's
// tests, everything closed after them.
import { after, before } from 'node:test';
import { launchBrowser } from './browser.mjs';
import { startServer } from './server.mjs';

/** Registers the file's before/after hooks; `harness.browser` is set once the tests run. */
export function browserWithServers() {
  const servers = [];
  const harness = {
    browser: null,
    /** A server with these extra flags (and `options` of startServer), stopped after the file's tests. */
    async server(args = [], options = {}) {
      const started = await startServer(args, options);
      servers.push(started);
      return started;
    },
    /** Stops `old` and starts a server on its port with `args`: a server restart, as clients see it. */
    async restart(old, args = []) {
      await old.stop();
      servers.splice(servers.indexOf(old), 1);
      return harness.server(args, { port: old.port });
    },
  };
  before(async () => {
    harness.browser = await launchBrowser();
  });
  after(async () => {
    await harness.browser?.close();
    await Promise.all(servers.map((server) => server.stop()));
  });
  return harness;
}
