// Over plain http from a name that is not localhost, browsers hide Web Crypto: the page must say why
// nothing can work instead of failing inside OpenPGP.js.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openUser, problemsOf, screenshot } from './helpers/browser.mjs';
import { startServer } from './helpers/server.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  // The name resolves to the loopback server, but is not "localhost", so the page is not a secure context.
  browser = await launchBrowser(['--host-resolver-rules=MAP insecure.test 127.0.0.1']);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('an insecure context gets a clear explanation instead of a broken page', { timeout: 30000 }, async () => {
  const user = await openUser(browser, server, { name: 'insecure', url: `http://insecure.test:${server.port}/` });
  const { page } = user;
  const banner = page.locator('#insecure-context');
  await banner.waitFor();
  assert.equal(await page.evaluate(() => window.isSecureContext), false);
  assert.match(await banner.textContent(), /https:\/\/.*localhost/s);
  assert.match(await banner.textContent(), /http:\/\/insecure\.test/);
  assert.equal(await page.locator('#generate').count(), 0, 'no key controls that could only fail');
  await screenshot(page, 'insecure-context-desktop');
  // OpenPGP.js is never loaded, so nothing throws. The only console noise allowed is Chromium saying it
  // ignores the server's Cross-Origin-Opener-Policy header on an untrustworthy origin.
  const problems = (await problemsOf(user)).filter((problem) => !/Cross-Origin-Opener-Policy/.test(problem));
  assert.deepEqual(problems, []);
  await user.context.close();
});
