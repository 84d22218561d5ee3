// Reached by a name that is not localhost, the chat works over https:// and cannot work over http://
// because browsers give Web Crypto only to secure contexts. The https server is the real binary with
// `--tls-self-signed`, as on a Raspberry Pi at home (docs/DEPLOY.md, guide 2); the test accepts its
// certificate the way a person clicks through the warning after comparing the fingerprint.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import {
  assertClean, enterChat, generateKey, launchBrowser, openUser, problemsOf, screenshot,
} from './helpers/browser.mjs';
import { startServer } from './helpers/server.mjs';
import { startSelfSignedServer } from './helpers/tls.mjs';

const HOST = 'chat.test';

let httpsServer;
let httpServer;
let browser;

before(async () => {
  // The self-signed certificate names this machine, not chat.test: /ws answers to chat.test only
  // as a --public-host (the Host check against DNS rebinding, docs/SECURITY.md).
  [httpsServer, httpServer] = await Promise.all([startSelfSignedServer(['--public-host', HOST]), startServer()]);
  browser = await launchBrowser([`--host-resolver-rules=MAP ${HOST} 127.0.0.1`]);
});

after(async () => {
  await browser?.close();
  await Promise.all([httpsServer?.stop(), httpServer?.stop()]);
});

/** `openUser` from the shared helpers, in a context that accepts the self-signed certificate. */
function openAcceptingCertificate(url, name) {
  // openUser makes its context with browser.newContext(options); this adds the one option it lacks.
  const accepting = { newContext: (options) => browser.newContext({ ...options, ignoreHTTPSErrors: true }) };
  return openUser(accepting, null, { name, url });
}

/**
 * What Chromium gets from `origin` in `context`: the SHA-256 of the certificate, formatted like secchat
 * prints it, and the page's response headers.
 */
async function whatChromiumGets(context, origin) {
  // A page of its own: the Network domain must be on before the request whose certificate we want.
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  const response = await page.goto(`${origin}/`);
  const { tableNames } = await cdp.send('Network.getCertificate', { origin });
  await cdp.detach();
  await page.close();
  assert.ok(tableNames.length > 0, `Chromium has no certificate for ${origin}`);
  const digest = createHash('sha256').update(Buffer.from(tableNames[0], 'base64')).digest('hex').toUpperCase();
  return { fingerprint: digest.match(/../g).join(':'), headers: response.headers() };
}

test('over plain http:// from a non-localhost name the page explains why it cannot encrypt', { timeout: 15000 }, async () => {
  const url = `http://${HOST}:${httpServer.port}/`;
  const user = await openAcceptingCertificate(url, 'plain-http');
  const { page } = user;
  await page.locator('#insecure-context').waitFor();
  assert.equal(await page.evaluate(() => window.isSecureContext), false);
  assert.equal(await page.evaluate(() => typeof globalThis.crypto?.subtle), 'undefined');
  assert.equal(await page.locator('#generate').count(), 0, 'no key controls that could only fail');
  await screenshot(page, 'tls-plain-http-insecure');
  // Chromium notes that it ignores Cross-Origin-Opener-Policy on an untrustworthy origin; nothing else.
  const problems = (await problemsOf(user)).filter((problem) => !/Cross-Origin-Opener-Policy/.test(problem));
  assert.deepEqual(problems, []);
  await user.context.close();
});

test('over https:// with --tls-self-signed the key screen makes a key and the chat connects', { timeout: 30000 }, async () => {
  const origin = `https://${HOST}:${httpsServer.port}`;
  const user = await openAcceptingCertificate(`${origin}/`, 'https');
  const { page } = user;

  // The certificate the browser was shown is the one whose fingerprint secchat printed.
  const seen = await whatChromiumGets(user.context, origin);
  assert.equal(seen.fingerprint, httpsServer.fingerprint);
  assert.match(seen.headers['strict-transport-security'] || '', /max-age=\d+/);

  assert.equal(await page.evaluate(() => window.isSecureContext), true);
  assert.equal(await page.evaluate(() => typeof globalThis.crypto?.subtle?.generateKey), 'function');
  assert.equal(await page.locator('#insecure-context').count(), 0);

  const fingerprint = await generateKey(user, { name: 'Tls Tester' });
  assert.equal(await page.locator(`.key-result [data-fingerprint="${fingerprint}"]`).count(), 1);
  await screenshot(page, 'tls-key-screen-https');

  // WSS to /ws on the same non-localhost origin: the Origin check passes and a session starts.
  const id = await enterChat(user);
  assert.match(id, /^[0-9A-HJKMNP-TV-Z]{6}$/);
  const sockets = user.frames.filter((frame) => frame.direction === 'received').map((frame) => JSON.parse(frame.text));
  assert.ok(sockets.some((frame) => frame.type === 'CONNECT' && frame.id === id), 'CONNECT reply over wss');

  await assertClean(user);
  await user.context.close();
});
