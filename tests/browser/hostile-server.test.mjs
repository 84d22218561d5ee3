// A server that lies: Alice's socket runs through a man in the middle (helpers/mitm.mjs) that forges,
// replays and rewrites frames. What must hold (SECURITY.md): a message shown as verified was written by the
// pinned key's holder, for Alice, in order, and not seen before; a swapped key is never silently accepted.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as openpgp from 'openpgp';
import {
  assertClean, befriend, enterChat, generateKey, incomingMessage, launchBrowser, newChatUser, openChat, openUser, pane,
  sendMessage,
} from './helpers/browser.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { startServer } from './helpers/server.mjs';

let server;
let browser;
let alice;
let mitm;
let bob;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  alice = await openUser(browser, server, { name: 'Alice' });
  mitm = await interceptSocket(alice.page, server.wsUrl);
  await generateKey(alice);
  await enterChat(alice);
  bob = await newChatUser(browser, server, { name: 'Bob' });
  await befriend(bob, alice);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

const incoming = (user, friendId) => pane(user, friendId).locator('.msg-in');
const verifiedCount = (user, friendId) => pane(user, friendId).locator('.msg-in[data-verified="true"]').count();
/** A friend's armored public key, as the server forwarded it to Alice in a FRIEND_REQUEST. */
const forwardedKey = (id) => mitm.received('FRIEND_REQUEST', id)[0].public_key;
/** Moves the clock that a page's own code reads (Date.now: the envelope's signed `ts`) by `ms`; 0 restores it. */
const shiftClock = (user, ms) => user.page.evaluate((shift) => {
  window.__realNow ||= Date.now.bind(Date);
  Date.now = () => window.__realNow() + shift;
}, ms);
const systemLines = (user, friendId, text) => pane(user, friendId).locator('.msg-system', { hasText: text });
/** A fresh armored public key, made here (never seen by anyone): only its fingerprint matters. */
async function strangerKey() {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Mallory' }], format: 'armored' });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  return { armored: publicKey, fingerprint: key.getFingerprint().toUpperCase() };
}

describe('a malicious server', { timeout: 90000 }, () => {
  test('a forged FRIEND_ACCEPT from a live friend is ignored with a warning, and replayed frames show no new verified message', async () => {
    await sendMessage(bob, alice.id, 'bob one');
    await sendMessage(bob, alice.id, 'bob two');
    await incomingMessage(alice, bob.id, 'bob two');
    await sendMessage(alice, bob.id, 'alice one');
    assert.equal(await (await incomingMessage(bob, alice.id, 'alice one')).getAttribute('data-seq'), '1');
    const recorded = mitm.received('MESSAGE', bob.id);
    assert.equal(recorded.length, 2);
    assert.equal(await verifiedCount(alice, bob.id), 2);

    // Same key as before, so no key-change warning could catch it: only the missing request can.
    mitm.inject({ type: 'FRIEND_ACCEPT', from: bob.id, public_key: forwardedKey(bob.id) });
    mitm.inject({ type: 'FRIEND_ACCEPT', from: bob.id, public_key: forwardedKey(bob.id) });
    for (const frame of recorded) mitm.inject(frame);
    await alice.page.waitForFunction((id) => document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-in`).length === 4, bob.id);

    assert.equal(await verifiedCount(alice, bob.id), 2, 'a replayed message was shown as verified');
    await alice.page.locator('#notices [data-notice^="unexpected-accept"]', { hasText: /unexpected friend acceptance/i }).waitFor();
    await pane(alice, bob.id).locator('.msg-system-warn', { hasText: /unexpected friend acceptance/i }).waitFor();
    // The second forgery was handled too (the replayed frames after it were), but added no second line.
    assert.equal(await systemLines(alice, bob.id, /unexpected friend acceptance/i).count(), 1);
    assert.equal(await pane(alice, bob.id).getAttribute('data-trust'), 'unverified');

    // Alice's seq was not reset: Bob sees her next message in order, as seq 2.
    await sendMessage(alice, bob.id, 'alice two');
    const next = await incomingMessage(bob, alice.id, 'alice two');
    assert.equal(await next.getAttribute('data-seq'), '2');
    assert.equal(await next.getAttribute('data-verified'), 'true');
    assert.equal(await next.getAttribute('data-problems'), '');
  });

  test('a forged FRIEND_ACCEPT with no pending request is ignored with a warning and starts no friendship', async () => {
    const stranger = 'ZZZZZZ';
    mitm.inject({ type: 'FRIEND_ACCEPT', from: stranger, public_key: forwardedKey(bob.id) });
    const notice = alice.page.locator(`#notices [data-notice="unexpected-accept-${stranger}"]`);
    await notice.waitFor();
    assert.match(await notice.textContent(), /no pending request/);
    assert.equal(await alice.page.locator(`.friend[data-friend="${stranger}"]`).count(), 0);
    assert.equal(await pane(alice, stranger).count(), 0);
  });

  test('a server time beyond what Date can hold neither hides the message nor stops rendering', async () => {
    await openChat(alice, bob.id);
    const before = await incoming(alice, bob.id).count();
    const fired = mitm.rewriteOnce((frame) => frame.type === 'MESSAGE' && frame.from === bob.id, (frame) => ({ ...frame, ts: 1e300 }));
    await sendMessage(bob, alice.id, 'sent with an absurd server time');
    assert.equal((await fired).ts, 1e300, 'the rewrite never fired');
    await sendMessage(bob, alice.id, 'and one after it');
    const odd = await incomingMessage(alice, bob.id, 'sent with an absurd server time');
    assert.equal(await odd.getAttribute('data-verified'), 'true');
    assert.match(await odd.locator('.msg-time').getAttribute('datetime'), /^\d{4}-\d\d-\d\dT/);
    const after = await incomingMessage(alice, bob.id, 'and one after it');
    assert.equal(await after.getAttribute('data-verified'), 'true');
    assert.equal(await incoming(alice, bob.id).count(), before + 2);
    await assertClean(alice);
  });

  test('an old signed message is flagged by our own clock even when the server sends a matching time, and shows its date', async () => {
    // Bob's message is signed two days ago (his clock moved back), and the server gives it the matching
    // receive time, as a server replaying a recorded message would: comparing with the server's ts finds nothing.
    const twoDays = 2 * 24 * 60 * 60 * 1000;
    const fired = mitm.rewriteOnce((frame) => frame.type === 'MESSAGE' && frame.from === bob.id, (frame) => ({ ...frame, ts: frame.ts - twoDays }));
    await openChat(bob, alice.id);
    const input = pane(bob, alice.id).locator('textarea');
    await input.fill('signed two days ago');
    // Moved only around Enter (the envelope's time is taken then), so Bob's keep-alive never sees it.
    await shiftClock(bob, -twoDays);
    await input.press('Enter');
    await shiftClock(bob, 0);
    const rewritten = await fired;
    const old = await incomingMessage(alice, bob.id, 'signed two days ago');
    const sentTs = Number(await old.getAttribute('data-sent-ts'));
    assert.ok(Math.abs(sentTs - rewritten.ts) < 60000, 'the server time was not rewritten to match the signed time');
    await old.locator('.msg-flag', { hasText: /sender's clock/ }).waitFor();
    // Signed long before this friendship began: a replay, whatever seq it has.
    assert.match(await old.getAttribute('data-problems'), /replay_old/);
    assert.equal(await old.getAttribute('data-verified'), 'false');
    assert.match(await old.locator('.msg-time').textContent(), /^\d{4}-\d\d-\d\d \d\d:\d\d$/, 'a time from another day must show its date');

    await sendMessage(bob, alice.id, 'on time');
    const onTime = await incomingMessage(alice, bob.id, 'on time');
    assert.equal(await onTime.locator('.msg-flag').count(), 0);
    assert.equal(await onTime.getAttribute('data-verified'), 'true');
    assert.match(await onTime.locator('.msg-time').textContent(), /^\d\d:\d\d$/);
  });

  test('a frame delivered twice is shown as a quiet duplicate, not as a REPLAY alarm', async () => {
    await sendMessage(bob, alice.id, 'delivered twice');
    await incomingMessage(alice, bob.id, 'delivered twice');
    const count = await incoming(alice, bob.id).count();
    const verified = await verifiedCount(alice, bob.id);
    const last = mitm.received('MESSAGE', bob.id).at(-1);
    mitm.inject(last);
    await alice.page.waitForFunction(([id, n]) => document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-in`).length === n, [bob.id, count + 1]);
    const duplicate = incoming(alice, bob.id).last();
    assert.equal(await duplicate.getAttribute('data-duplicate'), 'true');
    assert.doesNotMatch(await duplicate.getAttribute('data-problems'), /replay/);
    assert.equal(await duplicate.locator('.msg-flag').count(), 0);
    assert.equal(await verifiedCount(alice, bob.id), verified, 'the duplicate is not a new verified message');
    assert.equal(await alice.page.locator('#notices [data-notice^="flag-"]').count(), 0);

    // A re-send explains one copy, not two: the next copy of the same seq is a REPLAY.
    mitm.inject(last);
    await alice.page.waitForFunction(([id, n]) => document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-in`).length === n, [bob.id, count + 2]);
    const second = incoming(alice, bob.id).last();
    assert.equal(await second.getAttribute('data-duplicate'), null);
    assert.match(await second.getAttribute('data-problems'), /replay/);
    await second.locator('.msg-flag', { hasText: /REPLAY/ }).waitFor();
    assert.equal(await verifiedCount(alice, bob.id), verified);
  });

  test('a faked removal and a forged request from the same ID cannot replay the old conversation as verified', async () => {
    await openChat(alice, bob.id);
    const recorded = mitm.received('MESSAGE', bob.id).filter((frame) => frame.ts < 1e15).slice(0, 2); // bob one, bob two
    assert.equal(recorded.length, 2);

    mitm.inject({ type: 'FRIEND_REMOVE', from: bob.id });
    await pane(alice, bob.id).locator('.banner', { hasText: /removed you/ }).waitFor();
    // Closing the chat, the one thing a gone chat offers, must not make the next friendship look like the first.
    await pane(alice, bob.id).getByRole('button', { name: `Close the chat with ${bob.id}` }).click();
    await pane(alice, bob.id).waitFor({ state: 'detached' });
    mitm.inject({ type: 'FRIEND_REQUEST', from: bob.id, public_key: forwardedKey(bob.id) });
    const card = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
    await card.waitFor();
    assert.match(await card.locator('.request-ended').textContent(), /said this ID removed you as a friend .* ago.*fake/);

    // The real server knows of no such request; the hostile one acknowledges the acceptance anyway.
    const acked = mitm.rewriteOnce(
      (frame) => frame.type === 'ERROR' && mitm.fromPage.some((f) => f.type === 'FRIEND_ACCEPT' && f.to === bob.id && f.ref === frame.ref),
      (frame) => ({ type: 'ACK', ref: frame.ref }));
    await card.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
    await acked;
    await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'online', bob.id);

    const countBefore = await incoming(alice, bob.id).count();
    for (const frame of recorded) mitm.inject(frame);
    await alice.page.waitForFunction(([id, n]) => document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-in`).length === n, [bob.id, countBefore + 2]);
    const replayed = incoming(alice, bob.id);
    for (const index of [countBefore, countBefore + 1]) {
      const message = replayed.nth(index);
      assert.equal(await message.getAttribute('data-verified'), 'false');
      assert.match(await message.getAttribute('data-problems'), /replay_copy/);
      assert.ok(['1', '2'].includes(await message.getAttribute('data-seq')), 'the replay did not restart at seq 1');
    }
    await replayed.nth(countBefore).locator('.msg-flag', { hasText: /REPLAY: a copy of a message received in an earlier friendship/ }).waitFor();
    assert.equal(await verifiedCount(alice, bob.id), 0, 'a replayed message was shown as verified');
  });

  test('a forged DISCONNECT cannot clear a pending request so that a new one swaps its key unnoticed', async () => {
    const dave = await newChatUser(browser, server, { name: 'Dave' });
    await dave.page.fill('#add-friend-id', alice.id);
    await dave.page.click('#add-friend-send');
    const card = alice.page.locator(`.request-card[data-request="${dave.id}"]`);
    await card.waitFor();
    mitm.inject({ type: 'DISCONNECT', id: dave.id });
    await card.waitFor({ state: 'detached' });
    const mallory = await strangerKey();
    mitm.inject({ type: 'FRIEND_REQUEST', from: dave.id, public_key: mallory.armored });
    await card.waitFor();
    assert.equal(await card.locator('.request-key [data-fingerprint]').getAttribute('data-fingerprint'), mallory.fingerprint);
    const assessment = card.locator('.assessment');
    assert.match(await assessment.textContent(), /different key earlier/);
    assert.equal(await assessment.getAttribute('role'), 'alert');
    assert.deepEqual(await card.locator('.request-offered-before [data-fingerprint]').evaluateAll((els) => els.map((el) => el.dataset.fingerprint)), [dave.fingerprint]);
    await dave.context.close();
  });

  test('a request whose ACK was lost with the connection stays pending, and the accept that follows counts', async () => {
    const erin = await newChatUser(browser, server, { name: 'Erin' });
    const dropped = mitm.rewriteOnce(
      (frame) => frame.type === 'ACK' && mitm.fromPage.some((f) => f.type === 'FRIEND_REQUEST' && f.to === erin.id && f.ref === frame.ref),
      () => {
        setTimeout(() => mitm.closePage(), 0);
        return null;
      });
    await alice.page.fill('#add-friend-id', erin.id);
    await alice.page.click('#add-friend-send');
    assert.equal(await dropped, null, 'the ACK was not dropped');
    const sent = alice.page.locator(`.sent-item[data-sent="${erin.id}"]`);
    await sent.waitFor();
    assert.match(await sent.textContent(), /may not have arrived/);
    await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 15000 });

    const card = erin.page.locator(`.request-card[data-request="${alice.id}"]`);
    await card.waitFor();
    await card.getByRole('button', { name: `Accept friend request from ${alice.id}` }).click();
    await alice.page.locator(`.friend[data-friend="${erin.id}"]`).waitFor();
    await sendMessage(erin, alice.id, 'hello after the drop');
    assert.equal(await (await incomingMessage(alice, erin.id, 'hello after the drop')).getAttribute('data-verified'), 'true');
    await erin.context.close();
  });

  test('a repeated FRIEND_REQUEST cannot swap the key on a pending request', async () => {
    const carol = await newChatUser(browser, server, { name: 'Carol' });
    await carol.page.fill('#add-friend-id', alice.id);
    await carol.page.click('#add-friend-send');
    const card = alice.page.locator(`.request-card[data-request="${carol.id}"]`);
    await card.waitFor();
    // A repeat with the same key is harmless and ignored quietly; one with another key is an attack.
    mitm.inject({ type: 'FRIEND_REQUEST', from: carol.id, public_key: forwardedKey(carol.id) });
    mitm.inject({ type: 'FRIEND_REQUEST', from: carol.id, public_key: forwardedKey(bob.id) });
    const warning = card.locator('.request-swap-warning');
    await warning.waitFor();
    assert.match(await warning.textContent(), /different key/);
    assert.deepEqual(await warning.locator('[data-fingerprint]').evaluateAll((els) => els.map((el) => el.dataset.fingerprint)), [bob.fingerprint]);
    assert.equal(await card.locator('.request-key [data-fingerprint]').getAttribute('data-fingerprint'), carol.fingerprint);

    // More swaps: the card names three other keys and counts the rest, and its Accept button is not rebuilt.
    const acceptButton = await card.getByRole('button', { name: `Accept friend request from ${carol.id}` }).elementHandle();
    for (let i = 0; i < 4; i += 1) mitm.inject({ type: 'FRIEND_REQUEST', from: carol.id, public_key: (await strangerKey()).armored });
    await card.locator('.request-more-keys', { hasText: /and 2 more requests with other keys/ }).waitFor();
    assert.equal(await warning.locator('[data-fingerprint]').count(), 3);
    assert.equal(await acceptButton.evaluate((el) => el.isConnected), true, 'the Accept button moved');

    await card.getByRole('button', { name: `Accept friend request from ${carol.id}` }).click();
    await carol.page.locator(`.friend[data-friend="${alice.id}"]`).waitFor();
    assert.equal(await pane(alice, carol.id).locator('.chat-head [data-fingerprint]').getAttribute('data-fingerprint'), carol.fingerprint);
    await sendMessage(carol, alice.id, 'from the real carol');
    assert.equal(await (await incomingMessage(alice, carol.id, 'from the real carol')).getAttribute('data-verified'), 'true');
    await carol.context.close();
  });

  test('a new key with the name of a key pinned earlier under another ID is flagged on the request card', async () => {
    // After a forced ID change Bob would come back under a new ID; a stranger's key named "Bob" is suspicious.
    const impostor = await newChatUser(browser, server, { name: 'Bob' });
    await impostor.page.fill('#add-friend-id', alice.id);
    await impostor.page.click('#add-friend-send');
    const card = alice.page.locator(`.request-card[data-request="${impostor.id}"]`);
    await card.waitFor();
    const assessment = card.locator('.assessment');
    assert.match(await assessment.textContent(), /key with this name was used earlier .* under another ID/i);
    // A notice, not an alarm: a friend who reloads without "remember" brings a new key with the same name.
    assert.equal(await assessment.getAttribute('role'), 'status');
    assert.match(await assessment.getAttribute('class'), /assessment-notice/);
    assert.deepEqual(await card.locator('.request-name-clash [data-fingerprint]').evaluateAll((els) => els.map((el) => el.dataset.fingerprint)), [bob.fingerprint]);
    await impostor.context.close();
  });

  test('a request carrying the user\'s own key is flagged as such, not shown as a new stranger', async () => {
    // Accepted, it would let the server reflect Alice's own signed messages back as this "friend's".
    const ownKey = mitm.fromPage.find((frame) => frame.type === 'FRIEND_ACCEPT' && frame.public_key).public_key;
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'MYKEY1', public_key: ownKey });
    const card = alice.page.locator('.request-card[data-request="MYKEY1"]');
    await card.waitFor();
    assert.equal(await card.locator('.request-key [data-fingerprint]').getAttribute('data-fingerprint'), alice.fingerprint);
    const assessment = card.locator('.assessment');
    assert.match(await assessment.textContent(), /This is YOUR OWN key/);
    assert.equal(await assessment.getAttribute('role'), 'alert');
    assert.match(await card.getAttribute('class'), /request-warn/);
    await card.getByRole('button', { name: 'Decline friend request from MYKEY1' }).click();
    await card.waitFor({ state: 'detached' });
  });

  test('a request with the key of a live friend under another ID is flagged, and accepting it blocks sending until confirmed', async () => {
    const twin = 'TW1NB0';
    mitm.inject({ type: 'FRIEND_REQUEST', from: twin, public_key: forwardedKey(bob.id) });
    const card = alice.page.locator(`.request-card[data-request="${twin}"]`);
    await card.waitFor();
    const assessment = card.locator('.assessment');
    assert.match(await assessment.textContent(), /already belongs to another friend of yours under a different ID/);
    assert.equal(await assessment.getAttribute('role'), 'alert');
    assert.match(await card.locator('.request-shared-with').textContent(), new RegExp(bob.id));

    // The real server knows of no such request; the hostile one acknowledges the acceptance anyway.
    const acked = mitm.rewriteOnce(
      (frame) => frame.type === 'ERROR' && mitm.fromPage.some((f) => f.type === 'FRIEND_ACCEPT' && f.to === twin && f.ref === frame.ref),
      (frame) => ({ type: 'ACK', ref: frame.ref }));
    await card.getByRole('button', { name: `Accept friend request from ${twin}` }).click();
    await acked;
    const chat = pane(alice, twin);
    const banner = chat.locator('.key-changed-banner');
    await banner.waitFor({ state: 'attached' });
    assert.equal(await chat.getAttribute('data-trust'), 'changed');
    assert.match(await banner.textContent(), new RegExp(`KEY ALREADY USED BY ANOTHER FRIEND.*key of your friend ${bob.id}`));
    assert.equal(await chat.locator('textarea').isEditable(), false, 'sending is blocked');
  });

  test('two keys made without a name are not a name clash', async () => {
    const first = await newChatUser(browser, server, { name: '' });
    await befriend(first, alice);
    const second = await newChatUser(browser, server, { name: '' });
    await second.page.fill('#add-friend-id', alice.id);
    await second.page.click('#add-friend-send');
    const card = alice.page.locator(`.request-card[data-request="${second.id}"]`);
    await card.waitFor();
    // The default name of name-less keys says nothing about who holds one: the card shows no name at all.
    assert.equal(await card.locator('.key-name').count(), 0);
    assert.equal(await card.locator('.assessment').textContent(), 'New key: compare the fingerprint with your friend to verify it.');
    assert.equal(await card.locator('.request-name-clash').count(), 0);
    await first.context.close();
    await second.context.close();
  });
});
