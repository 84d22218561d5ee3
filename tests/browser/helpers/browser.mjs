// Debian's Chromium driven by playwright-core, and the steps a person takes in the web client.
// Every page records console errors, page errors, CSP violations, dialogs and WebSocket frames, so a test
// can assert that a flow ran clean and that nothing readable crossed the wire.
import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { artifactsDir } from './paths.mjs';

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 360, height: 740 };
export const PASSPHRASE = 'correct horse battery';

export function launchBrowser(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', ...extraArgs],
  });
}

/**
 * A browser context + page with everything recorded.
 * @returns {Promise<{context, page, frames: {direction: string, text: string}[], problems: string[], name: string}>}
 */
export async function openUser(browser, server, { name = 'user', viewport = DESKTOP, hash = '', url = server.url } = {}) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const user = { context, page, frames: [], problems: [], name, id: null, fingerprint: null };
  page.on('console', (message) => {
    if (message.type() === 'error') user.problems.push(`console error: ${message.text()}`);
  });
  page.on('pageerror', (error) => user.problems.push(`page error: ${error.message}`));
  page.on('dialog', (dialog) => {
    user.problems.push(`unexpected ${dialog.type()} dialog: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  page.on('websocket', (socket) => {
    socket.on('framesent', (frame) => user.frames.push({ direction: 'sent', text: String(frame.payload) }));
    socket.on('framereceived', (frame) => user.frames.push({ direction: 'received', text: String(frame.payload) }));
  });
  // Runs before the app's scripts; CSP does not apply to scripts injected by the test driver.
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__cspViolations.push(`${event.violatedDirective} blocked ${event.blockedURI}`);
    });
  });
  await page.goto(`${url}${hash}`);
  return user;
}

/** Generates a key on the key screen; returns the fingerprint the page shows. */
export async function generateKey(user, { name = user.name, passphrase = PASSPHRASE, remember = false } = {}) {
  const { page } = user;
  await page.fill('#gen-name', name);
  await page.fill('#gen-passphrase', passphrase);
  await page.fill('#gen-passphrase2', passphrase);
  if (remember) await page.check('#gen-remember');
  await page.click('#generate');
  await page.waitForSelector('#enter-chat', { timeout: 15000 });
  user.fingerprint = await page.getAttribute('.key-result [data-fingerprint]', 'data-fingerprint');
  assert.match(user.fingerprint, /^[0-9A-F]{40}$/);
  return user.fingerprint;
}

/** From the key screen's last step to an online session; returns the session ID. */
export async function enterChat(user, button = '#enter-chat') {
  await user.page.click(button);
  return waitForSession(user);
}

export async function waitForSession(user) {
  await user.page.waitForFunction(() => document.querySelector('#conn-status')?.getAttribute('data-status') === 'online'
    && /^[0-9A-HJKMNP-TV-Z]{6}$/.test(document.querySelector('#my-id')?.textContent || ''), null, { timeout: 15000 });
  user.id = await user.page.textContent('#my-id');
  if (!user.fingerprint) user.fingerprint = await user.page.getAttribute('#sidebar .identity [data-fingerprint]', 'data-fingerprint');
  return user.id;
}

/** Unlocks the key remembered on this device, from the page's saved-key screen; resolves with the new session ID. */
export async function unlockAgain(user) {
  await user.page.fill('#saved-passphrase', PASSPHRASE);
  await user.page.click('#unlock-saved');
  user.id = null;
  return waitForSession(user);
}

/** Reloads the page and unlocks the remembered key (a man in the middle stays on the page's socket). */
export async function reloadAndUnlock(user) {
  await user.page.reload();
  return unlockAgain(user);
}

/** Closes the user's tab (the context, with its localStorage, stays) and returns a function that reopens it. */
export async function closeTab(user, server) {
  await user.page.close();
  return async () => {
    const page = await user.context.newPage();
    page.on('pageerror', (error) => user.problems.push(`page error: ${error.message}`));
    page.on('websocket', (socket) => {
      socket.on('framesent', (frame) => user.frames.push({ direction: 'sent', text: String(frame.payload) }));
      socket.on('framereceived', (frame) => user.frames.push({ direction: 'received', text: String(frame.payload) }));
    });
    await page.goto(server.url);
    user.page = page;
    return unlockAgain(user);
  };
}

/** Opens a page, generates a key and enters the chat. */
export async function newChatUser(browser, server, options = {}) {
  const user = await openUser(browser, server, options);
  await generateKey(user);
  await enterChat(user);
  return user;
}

/** `requester` adds `accepter` by ID (typed as `typedId`), `accepter` accepts; both see the friendship. */
export async function befriend(requester, accepter, typedId = accepter.id) {
  await requester.page.fill('#add-friend-id', typedId);
  await requester.page.click('#add-friend-send');
  const card = accepter.page.locator(`.request-card[data-request="${requester.id}"]`);
  await card.waitFor();
  await card.getByRole('button', { name: `Accept friend request from ${requester.id}` }).click();
  await accepter.page.locator(`.friend[data-friend="${requester.id}"]`).waitFor();
  await requester.page.locator(`.friend[data-friend="${accepter.id}"]`).waitFor();
}

export function pane(user, friendId) {
  return user.page.locator(`.chat-pane[data-friend="${friendId}"]`);
}

export async function openChat(user, friendId) {
  await user.page.click(`.friend[data-friend="${friendId}"]`);
  await pane(user, friendId).waitFor({ state: 'visible' });
}

/** Types a message into the friend's pane and presses Enter. */
export async function sendMessage(user, friendId, text) {
  await openChat(user, friendId);
  const input = pane(user, friendId).locator('textarea');
  await input.fill(text);
  await input.press('Enter');
}

/** The incoming message element holding `text` (exact), once it has arrived. */
export async function incomingMessage(user, friendId, text, timeout = 10000) {
  const message = pane(user, friendId).locator('.msg-in').filter({ has: user.page.locator('.msg-text', { hasText: text }) });
  await message.first().waitFor({ state: 'attached', timeout }); // its pane may be the hidden one
  return message.first();
}

export async function outgoingState(user, friendId, text) {
  return pane(user, friendId).locator('.msg-out').filter({ hasText: text }).first().getAttribute('data-state');
}

/**
 * Times a round trip into the page (`page.evaluate`) every `everyMs` until `stop()`, which resolves the slowest
 * one in ms. A page whose main thread is busy answers only when it is done, so this is how long it froze.
 */
export function watchResponsiveness(page, everyMs = 100) {
  let running = true;
  let slowest = 0;
  const loop = (async () => {
    while (running) {
      const start = Date.now();
      try {
        await page.evaluate(() => 0);
      } catch {
        return; // the page or browser closed (a failed test's cleanup)
      }
      slowest = Math.max(slowest, Date.now() - start);
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return slowest;
    },
  };
}

/** Console errors, page errors, dialogs, CSP violations and stray text seen so far (should be none). */
export async function problemsOf(user) {
  const violations = await user.page.evaluate(() => window.__cspViolations || []).catch(() => []);
  const stray = await strayText(user.page).catch(() => []);
  return [...user.problems, ...violations.map((v) => `CSP violation: ${v}`), ...stray.map((s) => `stray text on the page: ${s}`)];
}

/**
 * Text nodes that are only "null", "undefined", "false", "true", "NaN" or "[object Object]": what DOM methods print when a
 * view hands them a value instead of a node (`replaceChildren(null)` writes "null").
 */
export function strayText(page) {
  return page.evaluate(() => {
    const found = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.nodeValue.trim();
      if (['null', 'undefined', 'false', 'true', 'NaN', '[object Object]'].includes(text)) found.push(`"${text}" in <${node.parentElement?.className || node.parentElement?.tagName}>`);
    }
    return found;
  });
}

export async function assertClean(user) {
  assert.deepEqual(await problemsOf(user), [], `${user.name} had console errors or CSP violations`);
}

/** JSON frames (both directions) as objects. */
export function jsonFrames(user) {
  return user.frames.map((frame) => ({ ...frame, json: JSON.parse(frame.text) }));
}

const ARMORED_MESSAGE = /^-----BEGIN PGP MESSAGE-----\r?\n[\s\S]+\r?\n-----END PGP MESSAGE-----\r?\n?$/;
const ARMORED_PUBLIC_KEY = /^-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n[\s\S]+-----END PGP PUBLIC KEY BLOCK-----\r?\n?$/;

/** Every frame is JSON; every `payload` is armored OpenPGP; no plaintext appears anywhere on the wire. */
export function assertWireIsOpaque(user, plaintexts) {
  let payloads = 0;
  for (const { direction, text, json } of jsonFrames(user)) {
    if ('payload' in json) {
      assert.match(json.payload, ARMORED_MESSAGE, `${direction} frame payload is not armored PGP: ${text.slice(0, 120)}`);
      payloads += 1;
    }
    if ('public_key' in json) assert.match(json.public_key, ARMORED_PUBLIC_KEY);
    for (const plaintext of plaintexts) {
      assert.ok(!text.includes(plaintext), `plaintext "${plaintext}" appeared in a ${direction} frame`);
      assert.ok(!text.includes(JSON.stringify(plaintext).slice(1, -1)), `escaped plaintext "${plaintext}" appeared in a ${direction} frame`);
    }
  }
  return payloads;
}

/** Every control on the page has an accessible name (aria-label, a <label>, or its own text). */
export async function assertControlsNamed(page) {
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('button, input, textarea, select, a[href]')]
    .filter((el) => !(el.getAttribute('aria-label') || (el.labels && el.labels.length > 0) || el.textContent.trim()
      || el.getAttribute('aria-labelledby') || el.title))
    .map((el) => el.outerHTML.slice(0, 120)));
  assert.deepEqual(unnamed, [], 'controls without an accessible name');
}

export async function screenshot(page, name) {
  mkdirSync(artifactsDir, { recursive: true });
  await page.screenshot({ path: join(artifactsDir, `${name}.png`) });
}

// --- Page lifecycle controls (used by lifecycle.test.mjs) ---------------------------------------------
// The client reads `globalThis.WebSocket` and `Notification` when it uses them, so these wrappers only need
// to be installed before the chat screen starts (i.e. before enterChat). Scripts run by the test driver are
// not subject to the page's CSP.

/**
 * Wraps the page's WebSocket so a test can kill the live socket, make it silently dead (frames dropped
 * both ways, as when the network vanished without the browser noticing), or refuse new connections.
 * State is in `window.__sockets`: {created, refused, dropped: string[]}.
 */
export async function installSocketControl(page) {
  await page.evaluate(() => {
    const Native = window.WebSocket;
    const control = { created: 0, refused: 0, refuse: false, dropped: [], live: null };
    class ControlledWebSocket extends Native {
      constructor(...args) {
        if (control.refuse) {
          control.refused += 1;
          throw new DOMException('refused by the test', 'SyntaxError');
        }
        super(...args);
        this.silent = false;
        control.created += 1;
        control.live = this;
      }

      send(data) {
        if (this.silent) control.dropped.push(String(data));
        else super.send(data);
      }

      set onmessage(handler) {
        super.onmessage = handler && ((event) => { if (!this.silent) handler.call(this, event); });
      }

      get onmessage() {
        return super.onmessage;
      }
    }
    window.WebSocket = ControlledWebSocket;
    window.__sockets = control;
  });
}

/** Whether the page is hidden, as the client reads it (document.hidden / visibilityState), then tells it. */
export async function setPageHidden(page, hidden) {
  await page.evaluate((isHidden) => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => isHidden });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (isHidden ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
}

/** Records every `new Notification(title, options)` in `window.__notifications` (and still shows it). */
export async function recordNotifications(page) {
  await page.evaluate(() => {
    const Native = window.Notification;
    window.__notifications = [];
    window.Notification = new Proxy(Native, {
      construct(target, args) {
        const [title, options = {}] = args;
        window.__notifications.push({ title: String(title), body: String(options.body ?? ''), tag: options.tag ?? null });
        return Reflect.construct(target, args);
      },
      get(target, property) {
        const value = target[property];
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
  });
}
