// Friends who stay, end to end against the real binary: contacts found again after a reload without
// a new request, messages that wait in the mailbox and are confirmed by signed receipts, resends after a server
// restart, the mailbox's refusals in plain words, and the contact book exported and imported.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  DESKTOP, PHONE, assertClean, befriend, closeTab, enterChat, generateKey, incomingMessage, jsonFrames,
  openUser, pane, reloadAndUnlock, screenshot, sendMessage,
} from './helpers/browser.mjs';
import WebSocket from 'ws';
import { browserWithServers } from './helpers/harness.mjs';
import { startServer } from './helpers/server.mjs';

/** Whether the binary speaks PROTOCOL §10 (a LISTEN is answered LISTENING, not unknown_type). */
async function speaksHandles() {
  const probe = await startServer();
  try {
    const socket = new WebSocket(probe.wsUrl);
    await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
    const answers = [];
    socket.on('message', (data) => answers.push(JSON.parse(data.toString())));
    socket.send(JSON.stringify({ type: 'CONNECT', version: 2 }));
    socket.send(JSON.stringify({ type: 'LISTEN', handles: ['A'.repeat(43)], ref: 'l' }));
    for (let waited = 0; waited < 3000 && !answers.some((a) => a.ref === 'l'); waited += 50) await new Promise((r) => setTimeout(r, 50));
    socket.close();
    return answers.some((a) => a.type === 'LISTENING' && a.ref === 'l');
  } finally {
    await probe.stop();
  }
}
const HANDLES = await speaksHandles();

test('the server speaks PROTOCOL §10: a LISTEN is answered with LISTENING', () => {
  assert.equal(HANDLES, true);
});

const harness = browserWithServers();
const server = (args) => harness.server(args);

/** A user with a remembered key, in the chat. */
async function rememberingUser(srv, name, viewport = DESKTOP) {
  const user = await openUser(harness.browser, srv, { name, viewport });
  await generateKey(user, { remember: true });
  await enterChat(user);
  return user;
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

/** No save of the contact book is due or running (the side panel's book says so): it holds the state as it is. */
async function bookSettled(user) {
  await user.page.waitForFunction(() => document.querySelector('.panel.book')?.dataset.pending === 'false', null, { timeout: 15000 });
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
      await bookSettled(alice); // the debounced save of the final state: a reload must not find it pending
      await bookSettled(bob);

      const firstFrames = { alice: alice.frames.length, bob: bob.frames.length };
      await reloadAndUnlock(alice);
      await reloadAndUnlock(bob);
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

/** Alice and Bob, befriended with remembered keys, both contacts, their books saved. Returns their book keys too. */
async function contactPair(srv) {
  const alice = await rememberingUser(srv, 'Alice');
  const bob = await rememberingUser(srv, 'Bob');
  await befriend(bob, alice);
  await waitForContact(alice, bob.id);
  await waitForContact(bob, alice.id);
  await waitForSaved(alice);
  await waitForSaved(bob);
  await bookSettled(alice);
  await bookSettled(bob);
  return { alice, bob, aliceKey: alice.id.toLowerCase(), bobKey: bob.id.toLowerCase() };
}

/** Waits until the friend's pane holds `count` outgoing messages (any number when null), all in `state`. */
async function waitForOutStates(user, friendKey, { count = null, state }, timeout = 20000) {
  await user.page.waitForFunction(([key, n, wanted]) => {
    const states = [...document.querySelectorAll(`.chat-pane[data-friend="${key}"] .msg-out`)].map((m) => m.dataset.state);
    return (n === null || states.length === n) && states.length > 0 && states.every((s) => s === wanted);
  }, [friendKey, count, state], { timeout });
}

describe('messages that wait', { timeout: 180000 }, () => {
  test('Bob closes his tab; Alice sends 5; Bob reopens: all 5 arrive in order, verified, once, and Alice sees "delivered"', async () => {
    const srv = await server();
    const { alice, bob, aliceKey } = await contactPair(srv);
    await reloadAndUnlock(alice); // Alice now reaches Bob by handle only
    const bobKey = bob.id.toLowerCase();
    await waitForPresence(alice, bobKey, 'online');
    const reopen = await closeTab(bob, srv);
    const texts = [1, 2, 3, 4, 5].map((n) => `waiting message ${n}`);
    for (const text of texts) await sendMessage(alice, bobKey, text);
    await waitForOutStates(alice, bobKey, { count: 5, state: 'stored' });
    assert.match(await pane(alice, bobKey).locator('.msg-out').first().textContent(), /kept on the server until they come back/);
    await alice.page.waitForFunction((key) => document.querySelector(`.friend[data-friend="${key}"]`)?.dataset.waiting === '5', bobKey);
    await screenshot(alice.page, 'contacts-waiting');

    await reopen();
    for (const text of texts) assert.equal(await (await incomingMessage(bob, aliceKey, text, 20000)).getAttribute('data-verified'), 'true');
    const shown = await pane(bob, aliceKey).locator('.msg-in .msg-text').allTextContents();
    assert.deepEqual(shown.filter((t) => t.startsWith('waiting message')), texts, 'in order, once each');
    await waitForOutStates(alice, bobKey, { count: 5, state: 'delivered' });
    await alice.page.waitForFunction((key) => document.querySelector(`.friend[data-friend="${key}"]`)?.dataset.waiting === '0', bobKey);
    await assertClean(alice);
    await assertClean(bob);
    await alice.context.close();
    await bob.context.close();
  });

  test('the server restarts while Alice has unconfirmed messages: after both reconnect they arrive once', async () => {
    let srv = await server();
    const { alice, bob, aliceKey } = await contactPair(srv);
    const bobId = bob.id; // Alice's name for him in this page (reopening gives Bob a new session ID)
    const reopen = await closeTab(bob, srv);
    await sendMessage(alice, bobId, 'before the restart 1');
    await sendMessage(alice, bobId, 'before the restart 2');
    await waitForOutStates(alice, bobId, { count: 2, state: 'stored' });
    srv = await harness.restart(srv);
    await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 30000 });
    // The mailbox was lost with the restart: Alice's client sent both again (same payload, same seq).
    await waitForOutStates(alice, bobId, { count: 2, state: 'stored' }, 30000);
    await reopen();
    for (const text of ['before the restart 1', 'before the restart 2']) {
      assert.equal(await (await incomingMessage(bob, aliceKey, text, 20000)).getAttribute('data-verified'), 'true');
    }
    await waitForOutStates(alice, bobId, { state: 'delivered' });
    await alice.page.waitForTimeout(1000);
    const shown = await pane(bob, aliceKey).locator('.msg-in .msg-text').allTextContents();
    assert.deepEqual(shown.filter((t) => t.startsWith('before the restart')), ['before the restart 1', 'before the restart 2'], 'once each');
    await assertClean(bob);
    await alice.context.close();
    await bob.context.close();
  });

  test('a full mailbox and an expired message are shown to the sender in plain words, with Retry', async () => {
    // Room for two or three of these letters (each counts its frame and 512 bytes): the fourth
    // makes room by evicting the oldest (all are from one address block).
    const srv = await server(['--mailbox-bytes', '4000', '--mailbox-ttl', '3']);
    const { alice, bob } = await contactPair(srv);
    await closeTab(bob, srv);
    for (const n of [1, 2, 3, 4]) await sendMessage(alice, bob.id, `filler ${n} ${'x'.repeat(300)}`);
    const bubbles = pane(alice, bob.id).locator('.msg-out');
    await alice.page.waitForFunction((id) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
      .some((m) => m.dataset.state === 'undelivered' && /mailbox for your friend was full/.test(m.textContent)), bob.id, { timeout: 20000 });
    // The TTL (3 s) ends for what is still stored: expired, in words.
    await alice.page.waitForFunction((id) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
      .some((m) => m.dataset.state === 'undelivered' && /longer than the server keeps messages/.test(m.textContent)), bob.id, { timeout: 20000 });
    const retry = bubbles.filter({ hasText: 'longer than the server keeps' }).first().getByRole('button', { name: 'Retry sending this message' });
    assert.equal(await retry.isVisible(), true);
    await screenshot(alice.page, 'contacts-undelivered');
    await assertClean(alice);
    await alice.context.close();
    await bob.context.close();
  });
});

describe('leaving the page', { timeout: 120000 }, () => {
  test('a page whose friends are all remembered contacts closes without asking, unless a message is not sealed yet or the book not saved', async () => {
    const srv = await server();
    const { alice, bob } = await contactPair(srv);
    const bookSettled = () => alice.page.waitForFunction(() => document.querySelector('section.book')?.dataset.pending === 'false', null, { timeout: 15000 });
    alice.page.removeAllListeners('dialog');
    const dialogs = [];
    let asked;
    const question = new Promise((resolve) => { asked = resolve; });
    alice.page.on('dialog', (dialog) => {
      dialogs.push(dialog.type());
      dialog.dismiss().then(asked, asked); // "stay": the page remains open
    });

    // Offline, Alice writes to Bob: the message cannot be sealed (no seq yet), so the book cannot hold it.
    await alice.context.setOffline(true);
    await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'offline');
    await sendMessage(alice, bob.id, 'written offline');
    await bookSettled();
    await alice.page.close({ runBeforeUnload: true });
    await question;
    assert.deepEqual(dialogs, ['beforeunload'], 'asked, since the message would be lost');
    assert.equal(alice.page.isClosed(), false);

    // Back online the message goes (and is in the book while unconfirmed); once delivered and the book is
    // saved, nothing would be lost: the page closes without a question.
    await alice.context.setOffline(false);
    await alice.page.waitForFunction((id) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
      .some((m) => m.dataset.state === 'delivered'), bob.id, { timeout: 20000 });
    await bookSettled();
    const closed = new Promise((resolve) => alice.page.once('close', resolve));
    await alice.page.close({ runBeforeUnload: true });
    await closed;
    assert.deepEqual(dialogs, ['beforeunload'], 'no second question');
    await bob.context.close();
    await alice.context.close();
  });
});

describe('the contact book file', { timeout: 120000 }, () => {
  test('exported, then imported in a fresh browser context with the same key: the contacts are back', async () => {
    const srv = await server();
    const { alice, bob } = await contactPair(srv);
    const [download] = await Promise.all([alice.page.waitForEvent('download'), alice.page.click('#book-export')]);
    const path = await download.path();
    const { readFileSync } = await import('node:fs');
    const armored = readFileSync(path, 'utf8');
    assert.match(armored, /^-----BEGIN PGP MESSAGE-----/);
    assert.ok(!armored.includes(bob.fingerprint), 'the file is encrypted');
    const stored = await alice.page.evaluate(() => ({
      key: localStorage.getItem('secchat.key.v1'),
    }));

    // A fresh context: the same key (its protected export), no contacts, then the file.
    const fresh = await openUser(harness.browser, srv, { name: 'Alice again' });
    await fresh.page.evaluate((key) => localStorage.setItem('secchat.key.v1', key), stored.key);
    await reloadAndUnlock(fresh);
    assert.equal(await fresh.page.locator('.friend').count(), 0);
    await fresh.page.setInputFiles('#book-import-file', { name: 'secchat-contacts.asc', mimeType: 'text/plain', buffer: Buffer.from(armored) });
    await fresh.page.waitForFunction(() => /Imported: 1 new contact/.test(document.querySelector('#book-note')?.textContent || ''));
    const bobKey = bob.id.toLowerCase();
    await contactEntry(fresh, bobKey).waitFor();
    await waitForPresence(fresh, bobKey, 'online');

    // A file not made with this key is refused.
    const stranger = await openUser(harness.browser, srv, { name: 'Stranger' });
    await generateKey(stranger);
    await enterChat(stranger);
    await stranger.page.setInputFiles('#book-import-file', { name: 'secchat-contacts.asc', mimeType: 'text/plain', buffer: Buffer.from(armored) });
    await stranger.page.waitForFunction(() => /Not imported/.test(document.querySelector('#book-note')?.textContent || ''));
    assert.equal(await stranger.page.locator('.friend').count(), 0);
    await assertClean(fresh);
    for (const user of [alice, bob, fresh, stranger]) await user.context.close();
  });
});
