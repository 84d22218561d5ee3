// Invite links: the fragment carries ID + fingerprint, fills in the request, and proves the key; a link
// whose fingerprint does not match the key that comes back gives the loud "key changed" state, on every path
// that can befriend the link's ID (the card, the add-friend form it prefills, a request from that ID, an
// acceptance after a reconnect), with a man in the middle (helpers/mitm.mjs) swapping the key.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as openpgp from 'openpgp';
import {
  assertClean, assertWireIsOpaque, enterChat, generateKey, incomingMessage, launchBrowser, newChatUser, openUser,
  outgoingState, pane, screenshot, sendMessage,
} from './helpers/browser.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { startServer } from './helpers/server.mjs';

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Opens `link`, makes a key, enters the chat and sends the request the invite card offers. */
async function openInvite(name, link) {
  const fragment = new URL(link).hash;
  const user = await openUser(browser, server, { name, hash: fragment });
  await generateKey(user);
  await enterChat(user);
  const card = user.page.locator('.invite-card');
  await card.waitFor();
  return { user, card };
}

test('an invite link fills in the request and marks the inviter verified', { timeout: 60000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice' });
  const link = await alice.page.textContent('#invite-link');
  assert.match(link, new RegExp(`^${server.url}#id=${alice.id}&fp=${alice.fingerprint}&k=[A-Za-z0-9_-]{22}$`));

  const { user: bob, card } = await openInvite('Bob', link);
  assert.equal(await card.locator('[data-fingerprint]').getAttribute('data-fingerprint'), alice.fingerprint);
  assert.equal(await bob.page.inputValue('#add-friend-id'), alice.id);
  // Nothing is sent before Bob clicks.
  assert.equal(bob.frames.filter((f) => f.text.includes('FRIEND_REQUEST')).length, 0);
  await screenshot(bob.page, 'invite-opened-desktop');
  await card.getByRole('button', { name: 'Send friend request' }).click();
  await card.waitFor({ state: 'hidden' });
  assert.equal(new URL(bob.page.url()).hash, '', 'the invite is cleared from the address bar once used');

  await alice.page.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
  const friend = bob.page.locator(`.friend[data-friend="${alice.id}"]`);
  await friend.waitFor();
  assert.equal(await friend.getAttribute('data-trust'), 'verified');
  assert.equal(await pane(bob, alice.id).locator('.chat-head .trust-badge').getAttribute('data-trust'), 'verified');
  // Bob's request proved the link's secret for his key (PROTOCOL §9 invite): verified for Alice too.
  const bobAtAlice = alice.page.locator(`.friend[data-friend="${bob.id}"]`);
  await bobAtAlice.waitFor();
  assert.equal(await bobAtAlice.getAttribute('data-trust'), 'verified');
  // She can still take that back and compare fingerprints herself.
  await pane(alice, bob.id).getByRole('button', { name: 'Mark unverified' }).click();
  await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.trust === 'unverified', bob.id);
  await pane(alice, bob.id).getByRole('button', { name: 'Verify fingerprint…' }).click();
  const dialog = alice.page.getByRole('dialog');
  assert.equal(await dialog.locator('[data-fingerprint]').getAttribute('data-fingerprint'), bob.fingerprint);
  await dialog.getByRole('button', { name: 'Fingerprints match' }).click();
  await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.trust === 'verified', bob.id);

  await sendMessage(bob, alice.id, 'invited and verified');
  assert.equal(await (await incomingMessage(alice, bob.id, 'invited and verified')).getAttribute('data-verified'), 'true');
  assertWireIsOpaque(bob, ['invited and verified']);
  await assertClean(alice);
  await assertClean(bob);
});

test('an invite whose fingerprint does not match the key blocks sending until the user confirms', { timeout: 60000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice2' });
  const forged = `${server.url}#id=${alice.id.toLowerCase()}&fp=${'AB12'.repeat(10)}`;
  const { user: mallory, card } = await openInvite('Mallory', forged);
  await card.getByRole('button', { name: 'Send friend request' }).click();
  await alice.page.getByRole('button', { name: `Accept friend request from ${mallory.id}` }).click();

  const chat = pane(mallory, alice.id);
  await chat.locator('.key-changed-banner').waitFor();
  assert.equal(await chat.getAttribute('data-trust'), 'changed');
  assert.match(await chat.locator('.key-changed-banner').textContent(), /DOES NOT MATCH THE INVITE LINK/);
  assert.equal(await chat.locator('textarea').isEditable(), false);
  assert.equal(await chat.locator('.composer-send').isDisabled(), true);
  await mallory.page.click(`.friend[data-friend="${alice.id}"]`);
  await screenshot(mallory.page, 'key-changed-desktop');

  await chat.getByRole('button', { name: 'Continue with the new key' }).click();
  await mallory.page.getByRole('dialog').getByRole('button', { name: 'Use the new key' }).click();
  await mallory.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.trust === 'unverified', alice.id);
  assert.equal(await chat.locator('textarea').isEditable(), true);
  await sendMessage(mallory, alice.id, 'confirmed new key');
  await incomingMessage(alice, mallory.id, 'confirmed new key');
  await mallory.page.waitForFunction(() => document.querySelector('.msg-out')?.dataset.state === 'delivered');
  assert.equal(await outgoingState(mallory, alice.id, 'confirmed new key'), 'delivered');
  await assertClean(alice);
  await assertClean(mallory);
});

/** Opens `link` with a man in the middle on the page's socket, makes a key and enters the chat. */
async function openInviteBehindMitm(name, link) {
  const user = await openUser(browser, server, { name, hash: new URL(link).hash });
  const mitm = await interceptSocket(user.page, server.wsUrl);
  await generateKey(user);
  await enterChat(user);
  await user.page.locator('.invite-card').waitFor();
  return { user, mitm };
}

/** A fresh armored public key, made here: the server's substitute. */
async function substituteKey() {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Mallory' }], format: 'armored' });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  return { armored: publicKey, fingerprint: key.getFingerprint().toUpperCase() };
}

/** The chat shows the invite mismatch: link's fingerprint, then the key pinned; sending blocked. */
async function assertInviteMismatch(user, friendId, expected, pinned) {
  const chat = pane(user, friendId);
  const banner = chat.locator('.key-changed-banner');
  await banner.waitFor({ state: 'attached' });
  assert.equal(await chat.getAttribute('data-trust'), 'changed');
  assert.match(await banner.textContent(), /KEY DOES NOT MATCH THE INVITE LINK/);
  assert.deepEqual(await banner.locator('[data-fingerprint]').evaluateAll((els) => els.map((el) => el.dataset.fingerprint)), [expected, pinned]);
  assert.equal(await chat.locator('textarea').isEditable(), false, 'sending is blocked');
}

const swapKeyOnce = (mitm, type, from, substitute) => mitm.rewriteOnce(
  (frame) => frame.type === type && frame.from === from, (frame) => ({ ...frame, public_key: substitute.armored }));

test('Enter in the add-friend field the invite prefilled still checks the link: a key swapped in the acceptance is "key changed"', { timeout: 60000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice3' });
  const { user: bob, mitm } = await openInviteBehindMitm('Bob3', await alice.page.textContent('#invite-link'));
  assert.equal(await bob.page.inputValue('#add-friend-id'), alice.id);
  const substitute = await substituteKey();
  const swapped = swapKeyOnce(mitm, 'FRIEND_ACCEPT', alice.id, substitute);
  await bob.page.press('#add-friend-id', 'Enter');
  await alice.page.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
  await swapped;
  await assertInviteMismatch(bob, alice.id, alice.fingerprint, substitute.fingerprint);
  await assertClean(bob);
  await alice.context.close();
  await bob.context.close();
});

test('a request from the invite link\'s ID is checked against the link: a swapped key is flagged on the card and "key changed" once accepted', { timeout: 60000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice4' });
  const { user: bob, mitm } = await openInviteBehindMitm('Bob4', await alice.page.textContent('#invite-link'));
  const substitute = await substituteKey();
  const swapped = swapKeyOnce(mitm, 'FRIEND_REQUEST', alice.id, substitute);
  await alice.page.fill('#add-friend-id', bob.id);
  await alice.page.click('#add-friend-send');
  await swapped;
  const card = bob.page.locator(`.request-card[data-request="${alice.id}"]`);
  await card.waitFor();
  const assessment = card.locator('.assessment');
  assert.match(await assessment.textContent(), /does NOT match the fingerprint in the invite link/);
  assert.equal(await assessment.getAttribute('role'), 'alert');
  await card.getByRole('button', { name: `Accept friend request from ${alice.id}` }).click();
  await assertInviteMismatch(bob, alice.id, alice.fingerprint, substitute.fingerprint);
  await alice.context.close();
  await bob.context.close();
});

test('"Send request" in the prefilled form, then a reconnect: the acceptance that arrives afterwards is still checked against the link', { timeout: 60000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice5' });
  const { user: bob, mitm } = await openInviteBehindMitm('Bob5', await alice.page.textContent('#invite-link'));
  await bob.page.click('#add-friend-send');
  const card = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
  await card.waitFor();
  mitm.closePage();
  const resumed = () => mitm.toPage.some((frame) => frame.type === 'CONNECT' && frame.resumed === true);
  for (let waited = 0; !resumed() && waited < 15000; waited += 100) await new Promise((resolve) => setTimeout(resolve, 100));
  assert.ok(resumed(), 'the page resumed its session');
  await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 15000 });
  assert.equal(await bob.page.textContent('#my-id'), bob.id, 'with the same ID');

  const substitute = await substituteKey();
  const swapped = swapKeyOnce(mitm, 'FRIEND_ACCEPT', alice.id, substitute);
  await card.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
  await swapped;
  await assertInviteMismatch(bob, alice.id, alice.fingerprint, substitute.fingerprint);
  await alice.context.close();
  await bob.context.close();
});

test('the link stays checked after a mismatching key was pinned: a faked removal and a request with the same swapped key is "key changed" again', { timeout: 60000 }, async () => {
  const alice = await newChatUser(browser, server, { name: 'Alice6' });
  const { user: bob, mitm } = await openInviteBehindMitm('Bob6', await alice.page.textContent('#invite-link'));
  const substitute = await substituteKey();
  const swapped = swapKeyOnce(mitm, 'FRIEND_ACCEPT', alice.id, substitute);
  await bob.page.locator('.invite-card').getByRole('button', { name: 'Send friend request' }).click();
  await alice.page.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
  await swapped;
  await assertInviteMismatch(bob, alice.id, alice.fingerprint, substitute.fingerprint);

  // The server fakes the end of that friendship and offers the same swapped key again "from" Alice.
  mitm.inject({ type: 'FRIEND_REMOVE', from: alice.id });
  await pane(bob, alice.id).locator('.banner', { hasText: /removed you/ }).waitFor();
  mitm.inject({ type: 'FRIEND_REQUEST', from: alice.id, public_key: substitute.armored });
  const card = bob.page.locator(`.request-card[data-request="${alice.id}"]`);
  await card.waitFor();
  assert.equal(await card.locator('.request-key [data-fingerprint]').getAttribute('data-fingerprint'), substitute.fingerprint);
  const assessment = card.locator('.assessment');
  assert.match(await assessment.textContent(), /does NOT match the fingerprint in the invite link/);
  assert.equal(await assessment.getAttribute('role'), 'alert');
  assert.match(await card.getAttribute('class'), /request-warn/);

  // The real server knows of no such request; the hostile one acknowledges the acceptance anyway.
  const acked = mitm.rewriteOnce(
    (frame) => frame.type === 'ERROR' && mitm.fromPage.some((f) => f.type === 'FRIEND_ACCEPT' && f.to === alice.id && f.ref === frame.ref),
    (frame) => ({ type: 'ACK', ref: frame.ref }));
  await card.getByRole('button', { name: `Accept friend request from ${alice.id}` }).click();
  await acked;
  await bob.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'online', alice.id);
  await assertInviteMismatch(bob, alice.id, alice.fingerprint, substitute.fingerprint);
  assert.equal(await pane(bob, alice.id).locator('.composer-send').isDisabled(), true, 'sending is blocked');
  await alice.context.close();
  await bob.context.close();
});
