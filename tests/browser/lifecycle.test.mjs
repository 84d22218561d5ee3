// The page's life around its socket, its friends' keys and its visibility: a socket that dies while the tab
// stays open is resumed under the same ID (at once when the page wakes up: visibilitychange, pageshow,
// online), a friend whose ID comes back with a different key gets the loud "key changed" state, and a
// hidden tab gets a desktop notification that names the sender but never the text.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  assertClean, assertWireIsOpaque, befriend, enterChat, generateKey, incomingMessage, installSocketControl, jsonFrames,
  launchBrowser, newChatUser, openUser, outgoingState, pane, recordNotifications, sendMessage, setPageHidden,
} from './helpers/browser.mjs';
import { createGpgHome, decryptAndVerify, generateGpgKey, importKey } from './helpers/gpg.mjs';
import { RawClient } from './helpers/rawclient.mjs';
import { startServer } from './helpers/server.mjs';

const GPG_PASSPHRASE = 'gpg pass phrase';

let server;
let browser;
const cleanups = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  for (const cleanup of cleanups) cleanup();
  await browser?.close();
  await server?.stop();
});

/** A chat user whose page WebSocket the test controls (see installSocketControl). */
async function newControlledUser(name) {
  const user = await openUser(browser, server, { name });
  await generateKey(user);
  await installSocketControl(user.page);
  await enterChat(user);
  return user;
}

/** A chat user who allowed notifications, whose page records every one it shows. */
async function newNotifyingUser(name) {
  const user = await openUser(browser, server, { name });
  await user.context.grantPermissions(['notifications'], { origin: new URL(server.url).origin });
  await generateKey(user);
  await recordNotifications(user.page);
  await enterChat(user);
  return user;
}

const statusOf = (user) => user.page.getAttribute('#conn-status', 'data-status');

function waitForOutgoingState(user, friendId, text, wanted, timeout = 15000) {
  return user.page.waitForFunction(({ id, body, state }) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
    .some((el) => el.textContent.includes(body) && el.dataset.state === state), { id: friendId, body: text, state: wanted }, { timeout });
}

function sentResumes(user) {
  return jsonFrames(user).filter((f) => f.direction === 'sent' && f.json.type === 'CONNECT' && f.json.resume);
}

test('a socket that died unnoticed: back on the tab, a probe finds it dead and the same ID resumes; the message typed meanwhile is delivered', { timeout: 45000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice' });
  const bob = await newControlledUser('Bob');
  await befriend(bob, alice);
  const bobId = bob.id;

  // The network vanishes without the browser noticing: the socket stays "open" but nothing gets through.
  await bob.page.evaluate(() => { window.__sockets.live.silent = true; });
  const text = 'typed into a dead connection';
  await sendMessage(bob, alice.id, text);
  await bob.page.waitForFunction(() => window.__sockets.dropped.some((f) => JSON.parse(f).type === 'MESSAGE'));
  // The page redraws once per animation frame, so the line may show its state a frame after the send.
  await waitForOutgoingState(bob, alice.id, text, 'sending');
  assert.equal(await statusOf(bob), 'online', 'the page cannot know yet that the socket is dead');

  await setPageHidden(bob.page, true);
  await setPageHidden(bob.page, false);
  const probes = await bob.page.evaluate(() => window.__sockets.dropped.map((f) => JSON.parse(f)).filter((f) => f.type === 'PING' && f.ref === 'probe'));
  assert.equal(probes.length, 1, 'coming back to the tab sends one liveness probe');

  // No answer to the probe: the page drops the socket and resumes on a new one (well before the 40 s keepalive limit).
  await bob.page.waitForFunction(() => window.__sockets.created === 2 && document.querySelector('#conn-status')?.dataset.status === 'online',
    null, { timeout: 15000 });
  assert.equal(await bob.page.textContent('#my-id'), bobId, 'same ID after the resume');
  const resumes = sentResumes(bob);
  assert.equal(resumes.length, 1);
  assert.equal(resumes[0].json.resume.id, bobId);

  const received = await incomingMessage(alice, bobId, text);
  assert.equal(await received.getAttribute('data-verified'), 'true');
  await waitForOutgoingState(bob, alice.id, text, 'delivered');
  assert.equal(await pane(alice, bobId).locator('.msg-in').filter({ hasText: text }).count(), 1, 'delivered exactly once');
  assert.equal(await pane(bob, alice.id).getAttribute('data-presence'), 'online');
  assertWireIsOpaque(bob, [text]);
  await assertClean(alice);
  await assertClean(bob);
});

test('a socket closed under an open tab: pageshow, visibilitychange and online each reconnect at once, same ID, waiting message delivered', { timeout: 45000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice' });
  const bob = await newControlledUser('Bob');
  await befriend(bob, alice);
  const bobId = bob.id;

  for (const [round, wakeUp] of ['pageshow', 'visibilitychange', 'online'].entries()) {
    // The socket closes and every reconnection attempt fails, so the page is waiting out its backoff.
    await bob.page.evaluate(() => {
      window.__sockets.refuse = true;
      window.__sockets.live.close();
    });
    await bob.page.waitForFunction(() => window.__sockets.refused >= 2
      && document.querySelector('#conn-status')?.dataset.status === 'reconnecting', null, { timeout: 10000 });
    const text = `typed while disconnected (${wakeUp})`;
    await sendMessage(bob, alice.id, text);
    assert.equal(await outgoingState(bob, alice.id, text), 'waiting');
    if (wakeUp === 'visibilitychange') await setPageHidden(bob.page, true);

    // The connection works again; the page only learns of it from the event. Fired synchronously, so a socket
    // created during dispatch was opened by the event handler, not by the backoff timer.
    const wake = await bob.page.evaluate((eventName) => {
      const control = window.__sockets;
      control.refuse = false;
      const statusBefore = document.querySelector('#conn-status')?.dataset.status;
      const createdBefore = control.created;
      if (eventName === 'pageshow') {
        window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true }));
      } else if (eventName === 'online') {
        window.dispatchEvent(new Event('online'));
      } else {
        Object.defineProperty(document, 'hidden', { configurable: true, get: () => false });
        Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'visible' });
        document.dispatchEvent(new Event('visibilitychange'));
      }
      return { statusBefore, opened: control.created - createdBefore };
    }, wakeUp);
    assert.equal(wake.statusBefore, 'reconnecting', `${wakeUp}: still waiting for the backoff`);
    assert.equal(wake.opened, 1, `${wakeUp}: the handler opened a new socket at once`);

    await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 10000 });
    assert.equal(await bob.page.textContent('#my-id'), bobId, `${wakeUp}: same ID after the resume`);
    assert.equal(sentResumes(bob).length, round + 1);
    assert.ok(sentResumes(bob).every((f) => f.json.resume.id === bobId));
    const received = await incomingMessage(alice, bobId, text);
    assert.equal(await received.getAttribute('data-verified'), 'true');
    await waitForOutgoingState(bob, alice.id, text, 'delivered');
  }
  assert.equal(await bob.page.evaluate(() => window.__sockets.created), 4, 'one socket per resume, no extra attempts');
  assertWireIsOpaque(bob, ['typed while disconnected']);
  await assertClean(alice);
  await assertClean(bob);
});

test('a friend whose ID comes back with a different key: loud "key changed", sending blocked until confirmed', { timeout: 45000 }, async () => {
  const oldHome = createGpgHome();
  const newHome = createGpgHome();
  cleanups.push(() => oldHome.destroy(), () => newHome.destroy());
  const oldKey = generateGpgKey(oldHome, { name: 'Carol', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
  const newKey = generateGpgKey(newHome, { name: 'Carol', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
  const alice = await newChatUser(browser, server, { name: 'Alice' });
  const carol = await RawClient.connect(server.wsUrl);
  cleanups.push(() => carol.close());

  // First friendship, with the old key.
  await carol.request({ type: 'FRIEND_REQUEST', to: alice.id, public_key: oldKey.publicArmored }, 'req-old');
  let card = alice.page.locator(`.request-card[data-request="${carol.id}"]`);
  await card.waitFor();
  assert.equal(await card.locator('[data-fingerprint]').getAttribute('data-fingerprint'), oldKey.fingerprint);
  assert.match(await card.locator('.assessment').textContent(), /New key/);
  await card.getByRole('button', { name: `Accept friend request from ${carol.id}` }).click();
  await carol.next((f) => f.type === 'FRIEND_ACCEPT' && f.from === alice.id);
  const chat = pane(alice, carol.id);
  await chat.waitFor({ state: 'attached' });
  assert.equal(await chat.getAttribute('data-trust'), 'unverified');

  // Carol ends the friendship and asks again under the same ID, now with another key.
  await carol.request({ type: 'FRIEND_REMOVE', to: alice.id }, 'remove');
  await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'gone', carol.id);
  await carol.request({ type: 'FRIEND_REQUEST', to: alice.id, public_key: newKey.publicArmored }, 'req-new');
  card = alice.page.locator(`.request-card[data-request="${carol.id}"]`);
  await card.waitFor();
  assert.equal(await card.locator('[data-fingerprint]').getAttribute('data-fingerprint'), newKey.fingerprint);
  assert.match(await card.getAttribute('class'), /request-warn/);
  assert.match(await card.getByRole('alert').textContent(), /used a different key earlier in this session/);
  await card.getByRole('button', { name: `Accept friend request from ${carol.id}` }).click();
  const accepted = await carol.next((f) => f.type === 'FRIEND_ACCEPT' && f.from === alice.id);
  importKey(newHome, accepted.public_key);

  const banner = chat.locator('.key-changed-banner');
  await banner.waitFor();
  assert.equal(await chat.getAttribute('data-trust'), 'changed');
  assert.equal(await alice.page.getAttribute(`.friend[data-friend="${carol.id}"]`, 'data-trust'), 'changed');
  assert.match(await banner.textContent(), /KEY CHANGED/);
  const shown = await banner.locator('[data-fingerprint]').evaluateAll((els) => els.map((el) => el.getAttribute('data-fingerprint')));
  assert.deepEqual(shown, [oldKey.fingerprint, newKey.fingerprint], 'previous key, then the key now pinned');
  assert.equal(await chat.locator('textarea').isEditable(), false, 'sending is blocked');
  assert.equal(await chat.locator('.composer-send').isDisabled(), true);

  await chat.getByRole('button', { name: 'Continue with the new key' }).click();
  await alice.page.getByRole('dialog').getByRole('button', { name: 'Use the new key' }).click();
  await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.trust === 'unverified', carol.id);
  assert.equal(await banner.isHidden(), true);
  assert.equal(await chat.locator('textarea').isEditable(), true);
  assert.equal(jsonFrames(alice).filter((f) => f.direction === 'sent' && f.json.type === 'MESSAGE').length, 0, 'nothing was sent while blocked');

  const text = 'after confirming the new key';
  await sendMessage(alice, carol.id, text);
  const message = await carol.next((f) => f.type === 'MESSAGE' && f.from === alice.id);
  await waitForOutgoingState(alice, carol.id, text, 'delivered');
  const withNewKey = decryptAndVerify(newHome, { payload: message.payload, passphrase: GPG_PASSPHRASE });
  assert.equal(withNewKey.status, 0, withNewKey.stderr);
  assert.ok(withNewKey.plaintext.includes(text), 'encrypted to the new key');
  assert.equal(withNewKey.signerPrimary, alice.fingerprint, 'signed by Alice');
  const withOldKey = decryptAndVerify(oldHome, { payload: message.payload, passphrase: GPG_PASSPHRASE });
  assert.ok(!withOldKey.stderr.includes('DECRYPTION_OKAY') && !withOldKey.plaintext.includes(text), 'not readable with the old key');
  await assertClean(alice);
});

test('a hidden tab with notifications on: a notification names the sender, never the text', { timeout: 45000 }, async () => {
  const alice = await newNotifyingUser('Alice');
  const bob = await newChatUser(browser, server, { name: 'Bob' });
  await befriend(bob, alice);
  const notifications = () => alice.page.evaluate(() => window.__notifications);

  await alice.page.check('#notify-toggle');
  await alice.page.waitForFunction(() => document.querySelector('#notify-toggle')?.checked === true);

  await sendMessage(bob, alice.id, 'read while looking');
  await incomingMessage(alice, bob.id, 'read while looking');
  assert.deepEqual(await notifications(), [], 'no notification while the tab is visible');

  await setPageHidden(alice.page, true);
  const secret = 'the meeting moved to 7pm';
  await sendMessage(bob, alice.id, secret);
  await incomingMessage(alice, bob.id, secret);
  await alice.page.waitForFunction(() => window.__notifications.length === 1);
  const [shown] = await notifications();
  assert.equal(shown.title, 'SecChat');
  assert.match(shown.body, new RegExp(`\\b${bob.id}\\b`), 'names the sender');
  for (const word of secret.split(' ').filter((w) => w.length > 3)) {
    assert.ok(!`${shown.title} ${shown.body}`.includes(word), `the notification leaks "${word}"`);
  }
  assert.equal(await alice.page.title(), '(1) SecChat');

  // Opted out: a hidden tab stays quiet.
  await alice.page.uncheck('#notify-toggle');
  await sendMessage(bob, alice.id, 'after opting out');
  await incomingMessage(alice, bob.id, 'after opting out');
  assert.equal((await notifications()).length, 1, 'no notification after opting out');

  await setPageHidden(alice.page, false);
  await alice.page.waitForFunction(() => document.title === 'SecChat');
  await assertClean(alice);
  await assertClean(bob);
});

/** `from` asks `to` to be friends (by ID); resolves with the request card `to` sees. */
async function sendFriendRequest(from, to) {
  await from.page.fill('#add-friend-id', to.id);
  await from.page.click('#add-friend-send');
  const card = to.page.locator(`.request-card[data-request="${from.id}"]`);
  await card.waitFor();
  return card;
}

/** The armored public key `to` received in `from`'s FRIEND_REQUEST frame. */
function receivedRequestKey(to, from) {
  const [frame] = jsonFrames(to).filter((f) => f.direction === 'received' && f.json.type === 'FRIEND_REQUEST' && f.json.from === from.id);
  assert.ok(frame, `${to.name} received no FRIEND_REQUEST from ${from.name}`);
  return frame.json.public_key;
}

test('a hidden tab with notifications on: a friend request gets one notification naming the requester, no key material', { timeout: 45000 }, async () => {
  const alice = await newNotifyingUser('Alice');
  const notifications = () => alice.page.evaluate(() => window.__notifications);

  await alice.page.check('#notify-toggle');
  await alice.page.waitForFunction(() => document.querySelector('#notify-toggle')?.checked === true);

  const bob = await newChatUser(browser, server, { name: 'Bob' });
  await sendFriendRequest(bob, alice);
  assert.deepEqual(await notifications(), [], 'no notification for a friend request while the tab is visible');
  assert.equal(await alice.page.title(), '(1) SecChat', 'the request is still counted in the title');

  await setPageHidden(alice.page, true);
  const carol = await newChatUser(browser, server, { name: 'Carol' });
  const card = await sendFriendRequest(carol, alice);
  await alice.page.waitForFunction(() => window.__notifications.length >= 1);
  assert.equal(await alice.page.title(), '(2) SecChat');
  const shown = await notifications();
  assert.equal(shown.length, 1, 'exactly one notification for one friend request');
  const [{ title, body }] = shown;
  assert.equal(title, 'SecChat');
  assert.match(body, /friend request/i, 'says it is a friend request');
  assert.match(body, new RegExp(`\\b${carol.id}\\b`), 'names the requester');
  assert.ok(!body.includes(bob.id), 'only the new request is announced');

  // Nothing secret: no armor, no key material, no fingerprint.
  const text = `${title} ${body}`;
  const armored = receivedRequestKey(alice, carol);
  assert.equal(await card.locator('[data-fingerprint]').getAttribute('data-fingerprint'), carol.fingerprint);
  assert.ok(!/BEGIN|PGP|-----/.test(text), 'the notification holds armored text');
  for (const line of armored.split(/\r?\n/).filter((l) => l.length >= 16 && !l.startsWith('-----'))) {
    assert.ok(!text.includes(line.slice(0, 16)), 'the notification holds part of the public key');
  }
  assert.ok(!text.replace(/\s/g, '').toUpperCase().includes(carol.fingerprint.slice(-16)), 'the notification holds the key ID / fingerprint');

  await setPageHidden(alice.page, false);
  assert.equal((await notifications()).length, 1, 'still exactly one notification');
  await assertClean(alice);
  await assertClean(bob);
  await assertClean(carol);
});
