// A server that lies: Alice's socket runs through a man in the middle (helpers/mitm.mjs) that forges,
// replays and rewrites frames. What must hold (SECURITY.md): a message shown as verified was written by the
// pinned key's holder, for Alice, in order, and not seen before; a swapped key is never silently accepted.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
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
    for (const frame of recorded) mitm.inject(frame);
    await alice.page.waitForFunction((id) => document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-in`).length === 4, bob.id);

    assert.equal(await verifiedCount(alice, bob.id), 2, 'a replayed message was shown as verified');
    await alice.page.locator('#notices [data-notice^="unexpected-accept"]', { hasText: /unexpected friend acceptance/i }).waitFor();
    await pane(alice, bob.id).locator('.msg-system-warn', { hasText: /unexpected friend acceptance/i }).waitFor();
    assert.equal(await pane(alice, bob.id).getAttribute('data-trust'), 'unverified');

    // Alice's seq was not reset: Bob sees her next message in order, as seq 2.
    await sendMessage(alice, bob.id, 'alice two');
    const next = await incomingMessage(bob, alice.id, 'alice two');
    assert.equal(await next.getAttribute('data-seq'), '2');
    assert.equal(await next.getAttribute('data-verified'), 'true');
    assert.equal(await next.getAttribute('data-problems'), '');
  });

  test('a server time beyond what Date can hold neither hides the message nor stops rendering', async () => {
    await openChat(alice, bob.id);
    const before = await incoming(alice, bob.id).count();
    mitm.rewrite = (frame) => (frame.type === 'MESSAGE' && frame.ts ? { ...frame, ts: 1e300 } : frame);
    await sendMessage(bob, alice.id, 'sent with an absurd server time');
    mitm.rewrite = null;
    await sendMessage(bob, alice.id, 'and one after it');
    const odd = await incomingMessage(alice, bob.id, 'sent with an absurd server time');
    assert.equal(await odd.getAttribute('data-verified'), 'true');
    assert.match(await odd.locator('.msg-time').getAttribute('datetime'), /^\d{4}-\d\d-\d\dT/);
    const after = await incomingMessage(alice, bob.id, 'and one after it');
    assert.equal(await after.getAttribute('data-verified'), 'true');
    assert.equal(await incoming(alice, bob.id).count(), before + 2);
    await assertClean(alice);
  });

  test('a signed sender time far from the server time is flagged and shown', async () => {
    mitm.rewrite = (frame) => (frame.type === 'MESSAGE' ? { ...frame, ts: frame.ts + 60 * 60 * 1000 } : frame);
    await sendMessage(bob, alice.id, 'an hour apart');
    mitm.rewrite = null;
    const skewed = await incomingMessage(alice, bob.id, 'an hour apart');
    await skewed.locator('.msg-flag', { hasText: /sender's clock/ }).waitFor();
    assert.match(await skewed.getAttribute('data-sent-ts'), /^\d+$/);
    await sendMessage(bob, alice.id, 'on time');
    const onTime = await incomingMessage(alice, bob.id, 'on time');
    assert.equal(await onTime.locator('.msg-flag').count(), 0);
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
    assert.match(await assessment.textContent(), /same name .* different key/i);
    assert.equal(await assessment.getAttribute('role'), 'alert');
    assert.deepEqual(await card.locator('.request-name-clash [data-fingerprint]').evaluateAll((els) => els.map((el) => el.dataset.fingerprint)), [bob.fingerprint]);
    await impostor.context.close();
  });
});
