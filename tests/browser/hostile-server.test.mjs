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
let firstTwo = []; // Bob's first two messages (bob one, bob two) as the server forwarded them to Alice's handle

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
/** Both listening secrets are known on `user`'s side: the friend is a contact (PROTOCOL §6). */
const waitForContact = (user, friendId) => user.page.waitForFunction(
  (id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'true', friendId, { timeout: 15000 });
/**
 * Bob's text messages (MESSAGE frames with a ref "m…"; his control envelopes use "r…") sent since his frame
 * `since`, as the server forwarded them to Alice (before any rewrite): the same payload, to her handle.
 */
function bobTextFrames(since = 0) {
  const payloads = bob.frames.slice(since).filter((f) => f.direction === 'sent').map((f) => JSON.parse(f.text))
    .filter((f) => f.type === 'MESSAGE' && /^m/.test(f.ref)).map((f) => f.payload);
  return payloads.map((payload) => mitm.received('MESSAGE').find((f) => f.payload === payload)).filter(Boolean);
}
/**
 * bobTextFrames(since) once it holds at least `count` frames: Playwright reports the frames a page sent
 * asynchronously, so under load the server may have forwarded one before his page's record of it arrives.
 */
async function bobTextFramesAtLeast(since, count) {
  for (let attempt = 0; attempt < 200 && bobTextFrames(since).length < count; attempt += 1) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return bobTextFrames(since);
}
/** Bob's next message to Alice's handle. Only his text comes there during these tests: Alice sends him no text (no receipts) and no probe (no new CONNECT) meanwhile. */
const toAliceHandle = (frame) => frame.type === 'MESSAGE' && typeof frame.handle === 'string';
/** Resolves once Alice has sent a MESSAGE to a handle (a receipt: her answer to a copy) after her frame `since`. */
const aliceReceiptAfter = async (since) => {
  for (let waited = 0; waited < 10000; waited += 50) {
    if (mitm.fromPage.slice(since).some(toAliceHandle)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  assert.fail('Alice sent no receipt');
};
const systemLines = (user, friendId, text) => pane(user, friendId).locator('.msg-system', { hasText: text });
/** A fresh armored public key, made here (never seen by anyone): only its fingerprint matters. */
async function strangerKey() {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Mallory' }], format: 'armored' });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  return { armored: publicKey, fingerprint: key.getFingerprint().toUpperCase() };
}

describe('a malicious server', { timeout: 90000 }, () => {
  test('a forged FRIEND_ACCEPT from a live friend is ignored with a warning, and replayed frames show no new verified message', async () => {
    // Bob and Alice become contacts (PROTOCOL §6): from then on Bob's messages come to Alice's handle, with no
    // `from`, and a copy of one (a resend, or a server replaying it) is recognised by its seq and shown once.
    await waitForContact(alice, bob.id);
    await waitForContact(bob, alice.id);
    const bobSent = bob.frames.length;
    await sendMessage(bob, alice.id, 'bob one');
    await sendMessage(bob, alice.id, 'bob two');
    await incomingMessage(alice, bob.id, 'bob two');
    await sendMessage(alice, bob.id, 'alice one');
    assert.equal(await (await incomingMessage(bob, alice.id, 'alice one')).getAttribute('data-seq'), '1');
    const recorded = bobTextFrames(bobSent);
    assert.equal(recorded.length, 2);
    firstTwo = recorded;
    assert.ok(recorded.every((frame) => !('from' in frame)));
    assert.equal(await verifiedCount(alice, bob.id), 2);
    assert.equal(await incoming(alice, bob.id).count(), 2);

    // Same key as before, so no key-change warning could catch it: only the missing request can.
    mitm.inject({ type: 'FRIEND_ACCEPT', from: bob.id, public_key: forwardedKey(bob.id) });
    mitm.inject({ type: 'FRIEND_ACCEPT', from: bob.id, public_key: forwardedKey(bob.id) });
    for (const frame of recorded) mitm.inject(frame);
    // A real message after the replays: Alice's frames about Bob are handled in order, so once it shows, the
    // replays were handled too.
    await sendMessage(bob, alice.id, 'bob three');
    const third = await incomingMessage(alice, bob.id, 'bob three');
    assert.equal(await third.getAttribute('data-seq'), '3');
    assert.equal(await third.getAttribute('data-verified'), 'true');

    // The replayed copies are duplicates: no new line, no new verified message, no alarm.
    assert.equal(await incoming(alice, bob.id).count(), 3, 'a replayed copy was shown again');
    assert.equal(await verifiedCount(alice, bob.id), 3, 'bob one, bob two, bob three: each once');
    for (const text of ['bob one', 'bob two']) assert.equal(await incoming(alice, bob.id).filter({ hasText: text }).count(), 1);
    assert.equal(await pane(alice, bob.id).locator('.msg-in[data-problems~="replay"]').count(), 0);
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
    // Its receipt is back: from here on, what comes to Alice's handle from Bob is his text only (tests below).
    await alice.page.waitForFunction(() => [...document.querySelectorAll('.msg-out')].some((m) => m.textContent.includes('alice two') && m.dataset.state === 'delivered'), null, { timeout: 15000 });
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
    const fired = mitm.rewriteOnce(toAliceHandle, (frame) => ({ ...frame, ts: 1e300 }));
    const bobSent = bob.frames.length;
    await sendMessage(bob, alice.id, 'sent with an absurd server time');
    const rewritten = await fired;
    assert.equal(rewritten.ts, 1e300, 'the rewrite never fired');
    const [his] = await bobTextFramesAtLeast(bobSent, 1);
    assert.equal(rewritten.payload, his?.payload, 'the rewrite hit his message');
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
    // Bob's message is signed ten days ago (his clock moved back), and the server gives it the matching
    // receive time, as a server replaying a recorded message would: comparing with the server's ts finds nothing.
    // To a handle a message may wait a week in the mailbox, so only a signed time beyond that is a clock warning.
    const tenDays = 10 * 24 * 60 * 60 * 1000;
    const fired = mitm.rewriteOnce(toAliceHandle, (frame) => ({ ...frame, ts: frame.ts - tenDays }));
    await openChat(bob, alice.id);
    const input = pane(bob, alice.id).locator('textarea');
    await input.fill('signed ten days ago');
    // Moved for one reading only: the time the message is written with (taken when Enter dispatches it). The
    // rest of Bob's page (the day his handles are derived for, his keep-alive) keeps the real clock.
    await bob.page.evaluate((shift) => {
      const real = Date.now.bind(Date);
      Date.now = () => {
        if (!new Error().stack.includes('dispatch')) return real();
        Date.now = real;
        return real() + shift;
      };
    }, -tenDays);
    await input.press('Enter');
    const rewritten = await fired;
    const old = await incomingMessage(alice, bob.id, 'signed ten days ago');
    const sentTs = Number(await old.getAttribute('data-sent-ts'));
    assert.ok(Math.abs(sentTs - rewritten.ts) < 60000, 'the server time was not rewritten to match the signed time');
    await old.locator('.msg-flag', { hasText: /sender's clock/ }).waitFor();
    // Signed long before this friendship began: a replay, whatever seq it has.
    assert.match(await old.getAttribute('data-problems'), /replay_old/);
    assert.equal(await old.getAttribute('data-verified'), 'false');
    assert.match(await old.locator('.msg-time').textContent(), /^\d{4}-\d\d-\d\d \d\d:\d\d$/, 'a time from another day must show its date');

    await sendMessage(bob, alice.id, 'on time');
    const onTime = await incomingMessage(alice, bob.id, 'on time');
    // No clock warning and no replay mark. To a handle, the refused old message was not accepted, so its seq is
    // still missing here (a copy from Bob's resend could fill it): the only note is that gap.
    assert.deepEqual(await onTime.locator('.msg-flag').allTextContents(), ['⚠ 1 earlier message missing (sequence gap)']);
    assert.equal(await onTime.getAttribute('data-problems'), '');
    assert.equal(await onTime.getAttribute('data-verified'), 'true');
    assert.match(await onTime.locator('.msg-time').textContent(), /^\d\d:\d\d$/);
  });

  test('a frame delivered twice is shown as a quiet duplicate, not as a REPLAY alarm', async () => {
    const bobSent = bob.frames.length;
    await sendMessage(bob, alice.id, 'delivered twice');
    await incomingMessage(alice, bob.id, 'delivered twice');
    const count = await incoming(alice, bob.id).count();
    const verified = await verifiedCount(alice, bob.id);
    const [last] = await bobTextFramesAtLeast(bobSent, 1);
    assert.ok(last, 'his message was forwarded to Alice');
    // To a handle, copies are normal (resends after every reconnect, the mailbox): each copy of a seq accepted
    // before is a duplicate, shown once (no line of its own, no flag, no notice) and answered with its receipt
    // again (Bob's client stops resending only then). The receipt is how we know the copy was handled.
    for (let copy = 1; copy <= 2; copy += 1) {
      const since = mitm.fromPage.length;
      mitm.inject(last);
      await aliceReceiptAfter(since);
      assert.equal(await incoming(alice, bob.id).count(), count, `copy ${copy} was shown again`);
      assert.equal(await incoming(alice, bob.id).filter({ hasText: 'delivered twice' }).count(), 1);
      assert.equal(await pane(alice, bob.id).locator('.msg-in[data-problems~="replay"]').count(), 0);
      assert.equal(await incoming(alice, bob.id).filter({ hasText: 'delivered twice' }).locator('.msg-flag').count(), 0);
      assert.equal(await incoming(alice, bob.id).filter({ hasText: 'delivered twice' }).getAttribute('data-problems'), '');
      assert.equal(await verifiedCount(alice, bob.id), verified, 'the duplicate is not a new verified message');
      assert.equal(await alice.page.locator('#notices [data-notice^="flag-"]').count(), 0);
    }
  });

  test('a faked removal and a forged request from the same ID cannot replay the old conversation as verified', async () => {
    await openChat(alice, bob.id);
    // Bob one and bob two, recorded as they came to Alice's handle. The lying server can also hand them over
    // as if from Bob's session ID (it knows which session wrote to the handle): both are tried below.
    const recorded = firstTwo;
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
    // To the old handles: the ended contact's handles are not listened to any more, nothing is shown.
    for (const frame of recorded) mitm.inject(frame);
    for (const { payload, ts } of recorded) mitm.inject({ type: 'MESSAGE', from: bob.id, payload, ts });
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
