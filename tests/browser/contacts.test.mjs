// Friends who stay (issue 15), end to end against the real binary: contacts found again after a reload without
// a new request, messages that wait in the mailbox and are confirmed by signed receipts, resends after a server
// restart, the mailbox's refusals in plain words, and the contact book exported and imported.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  DESKTOP, PASSPHRASE, PHONE, assertClean, befriend, enterChat, generateKey, incomingMessage, jsonFrames, launchBrowser,
  openUser, pane, screenshot, sendMessage, waitForSession,
} from './helpers/browser.mjs';
import { startServer } from './helpers/server.mjs';

let browser;
const servers = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await Promise.all(servers.map((server) => server.stop()));
});

async function server(args = []) {
  const started = await startServer(args);
  servers.push(started);
  return started;
}

/** A user with a remembered key, in the chat. */
async function rememberingUser(srv, name, viewport = DESKTOP) {
  const user = await openUser(browser, srv, { name, viewport });
  await generateKey(user, { remember: true });
  await enterChat(user);
  return user;
}

/** Reloads (or reopens) the page and unlocks the remembered key; resolves with the new session ID. */
async function unlockAgain(user) {
  await user.page.fill('#saved-passphrase', PASSPHRASE);
  await user.page.click('#unlock-saved');
  user.id = null;
  return waitForSession(user);
}

async function reload(user) {
  await user.page.reload();
  return unlockAgain(user);
}

/** The friends-list entry of the contact whose fingerprint is `fingerprint` (its key in the list is not an ID after a reload). */
function contactEntry(user, friendKey) {
  return user.page.locator(`.friend[data-friend="${friendKey}"]`);
}

async function waitForPresence(user, friendKey, presence, timeout = 20000) {
  await user.page.waitForFunction(([key, wanted]) => document.querySelector(`.friend[data-friend="${key}"]`)?.className.includes(`presence-${wanted}`),
    [friendKey, presence], { timeout });
}

/** Both sides became contacts: each has the other's rendezvous secret (the book is saved a second later). */
async function waitForContact(user, friendKey) {
  await user.page.waitForFunction((key) => document.querySelector(`.friend[data-friend="${key}"]`)?.dataset.contact === 'true', friendKey, { timeout: 15000 });
}

async function waitForSaved(user) {
  await user.page.waitForFunction(() => Boolean(localStorage.getItem('secchat.contacts.v1')), null, { timeout: 10000 });
}

const KEY_OR_FINGERPRINT = (user, other) => (frame) => frame.text.includes('PUBLIC KEY BLOCK') || frame.text.includes(user.fingerprint)
  || frame.text.includes(other.fingerprint);

for (const viewport of [DESKTOP, PHONE]) {
  const size = viewport === DESKTOP ? '1280 px' : '360 px';
  describe(`contacts at ${size}`, { timeout: 120000 }, () => {
    test('befriend once; both reload and unlock: online again, verified messages both ways, no key or fingerprint on the wire again', async () => {
      const srv = await server();
      // Befriended at desktop size (befriend() uses the side panel); at 360 px the rest runs on a phone screen.
      const alice = await rememberingUser(srv, 'Alice');
      const bob = await rememberingUser(srv, 'Bob');
      await befriend(bob, alice);
      await alice.page.setViewportSize(viewport);
      await bob.page.setViewportSize(viewport);
      const aliceKey = alice.id.toLowerCase();
      const bobKey = bob.id.toLowerCase();
      await waitForContact(alice, bob.id);
      await waitForContact(bob, alice.id);
      await waitForSaved(alice);
      await waitForSaved(bob);
      await alice.page.waitForTimeout(1500); // the debounced save of the final state

      const firstFrames = { alice: alice.frames.length, bob: bob.frames.length };
      await reload(alice);
      await reload(bob);
      await waitForPresence(alice, bobKey, 'online');
      await waitForPresence(bob, aliceKey, 'online');
      if (viewport === PHONE) await alice.page.click('.drawer-toggle');
      await sendMessage(alice, bobKey, 'hello after the reload');
      const got = await incomingMessage(bob, aliceKey, 'hello after the reload', 15000);
      assert.equal(await got.getAttribute('data-verified'), 'true');
      if (viewport === PHONE) await bob.page.click('.drawer-toggle');
      await sendMessage(bob, aliceKey, 'and back');
      assert.equal(await (await incomingMessage(alice, bobKey, 'and back', 15000)).getAttribute('data-verified'), 'true');
      await alice.page.waitForFunction(() => [...document.querySelectorAll('.msg-out')].some((m) => m.dataset.state === 'delivered'), null, { timeout: 15000 });

      for (const [user, other, from] of [[alice, bob, firstFrames.alice], [bob, alice, firstFrames.bob]]) {
        const later = user.frames.slice(from);
        assert.deepEqual(later.filter(KEY_OR_FINGERPRINT(user, other)).map((f) => f.text.slice(0, 80)), [], `${user.name}: no key or fingerprint after the first friendship`);
        assert.equal(jsonFrames({ frames: later }).filter((f) => f.direction === 'sent' && f.json.type === 'FRIEND_REQUEST').length, 0, 'no new request');
        assert.ok(jsonFrames({ frames: later }).some((f) => f.direction === 'sent' && f.json.type === 'LISTEN'));
      }
      await screenshot(alice.page, `contacts-after-reload-${viewport.width}`);
      await assertClean(alice);
      await assertClean(bob);
      await alice.context.close();
      await bob.context.close();
    });
  });
}
