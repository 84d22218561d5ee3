// Going offline and back: the session resumes (same ID, same friend), what the friend sent meanwhile is
// delivered, and what was typed offline is sent after the resume. Without a resume window the page says
// plainly that the ID changed.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean, assertWireIsOpaque, befriend, enterChat, generateKey, incomingMessage, jsonFrames, newChatUser, openUser,
  outgoingState, pane, screenshot, sendMessage,
} from './helpers/browser.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { browserWithServers } from './helpers/harness.mjs';

const harness = browserWithServers();
const server = (args) => harness.server(args);

/**
 * A user whose socket runs through a man in the middle that answers LISTEN as a server without PROTOCOL §10 does
 * (unknown_type): the client turns handles off, offers no rendezvous secret, and a friendship with this user
 * stays a friendship by session ID only. These tests are about that friendship's resume window; a contact
 * outlives a session instead (contacts.test.mjs, firstrun.test.mjs "leaving by accident").
 */
async function idOnlyUser(srv, name) {
  const user = await openUser(harness.browser, srv, { name });
  user.mitm = await interceptSocket(user.page, srv.wsUrl);
  user.mitm.rewrite = (frame) => (frame.type === 'LISTENING' ? { type: 'ERROR', code: 'unknown_type', message: 'unknown message type', ref: frame.ref } : frame);
  await generateKey(user);
  await enterChat(user);
  return user;
}

/** `requester` (an idOnlyUser) asked to LISTEN for the friendship it requested, was told "unknown type", and the two are no contacts. */
async function assertNeverContacts(accepter, requester) {
  const { mitm } = requester;
  for (let waited = 0; !mitm.toPage.some((f) => f.type === 'LISTENING') && waited < 10000; waited += 50) await requester.page.waitForTimeout(50);
  assert.ok(mitm.toPage.some((f) => f.type === 'LISTENING'), `${requester.name} asked to LISTEN`);
  await requester.page.waitForTimeout(500); // time for a rendezvous offer, if one were (wrongly) sent
  assert.equal(mitm.fromPage.filter((f) => f.type === 'MESSAGE').length, 0, 'no rendezvous offer');
  for (const [user, other] of [[accepter, requester], [requester, accepter]]) {
    assert.equal(await user.page.getAttribute(`.friend[data-friend="${other.id}"]`, 'data-contact'), 'false');
  }
}

const statusOf = (user) => user.page.getAttribute('#conn-status', 'data-status');

test('offline and back: the session resumes and queued messages arrive both ways', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
  const bob = await idOnlyUser(srv, 'Bob'); // a friendship by ID only: see idOnlyUser
  await befriend(bob, alice);
  await assertNeverContacts(alice, bob);
  const bobId = bob.id;

  await bob.context.setOffline(true);
  await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'offline');
  await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.className.includes('presence-away'), bobId);

  await sendMessage(alice, bobId, 'sent while Bob was away');
  await alice.page.waitForFunction(() => document.querySelector('.msg-out')?.dataset.state === 'queued');
  await sendMessage(bob, alice.id, 'typed while offline');
  assert.equal(await outgoingState(bob, alice.id, 'typed while offline'), 'waiting');
  await screenshot(bob.page, 'offline-desktop');

  await bob.context.setOffline(false);
  await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 20000 });
  assert.equal(await bob.page.textContent('#my-id'), bobId, 'same ID after the resume');
  const resumes = jsonFrames(bob).filter((f) => f.direction === 'sent' && f.json.type === 'CONNECT' && f.json.resume);
  assert.equal(resumes.length, 1);
  assert.equal(resumes[0].json.resume.id, bobId);

  const queued = await incomingMessage(bob, alice.id, 'sent while Bob was away');
  assert.equal(await queued.getAttribute('data-verified'), 'true');
  const late = await incomingMessage(alice, bobId, 'typed while offline');
  assert.equal(await late.getAttribute('data-verified'), 'true');
  await bob.page.waitForFunction(() => document.querySelector('.msg-out')?.dataset.state === 'delivered');
  await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.className.includes('presence-online'), bobId);
  assert.equal(await outgoingState(alice, bobId, 'sent while Bob was away'), 'delivered');
  assert.equal(await statusOf(alice), 'online');
  await assertClean(alice);
  await assertClean(bob);
});

test('when the resume window ends: queued messages are reported undelivered, and the page says the ID changed', { timeout: 60000 }, async () => {
  const srv = await server(['--resume-grace', '1']);
  const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
  const bob = await idOnlyUser(srv, 'Bob');
  await befriend(bob, alice);
  await assertNeverContacts(alice, bob);
  const oldId = bob.id;

  await bob.context.setOffline(true);
  await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'offline');
  await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.className.includes('presence-away'), oldId);
  await sendMessage(alice, oldId, 'lost in the resume window');
  await sendMessage(bob, alice.id, 'this cannot be delivered');

  // The window (1 s) ends: the server drops what it queued for Bob and tells Alice.
  await alice.page.waitForFunction(() => document.querySelector('.msg-out')?.dataset.state === 'undelivered');
  await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.className.includes('presence-gone'), oldId);
  assert.match(await pane(alice, oldId).locator('.msg-out').textContent(), /undelivered/);
  const acks = jsonFrames(alice).filter((f) => f.direction === 'received' && f.json.type === 'ACK' && f.json.queued === true);
  assert.equal(acks.length, 1, 'the message was first acknowledged as queued');

  await bob.context.setOffline(false);
  const notice = bob.page.locator('[data-notice="session"]');
  await notice.waitFor({ timeout: 20000 });
  const newId = await bob.page.textContent('#my-id');
  assert.notEqual(newId, oldId);
  assert.match(await notice.textContent(), new RegExp(`ID changed from ${oldId} to ${newId}`));
  assert.match(await notice.textContent(), /Friends must add you again/);
  assert.equal(await pane(bob, alice.id).getAttribute('data-presence'), 'gone');
  assert.notEqual(await outgoingState(bob, alice.id, 'this cannot be delivered'), 'delivered');
  assertWireIsOpaque(bob, ['this cannot be delivered', 'lost in the resume window']);
  await screenshot(bob.page, 'session-lost-desktop');
  await assertClean(alice);
  await assertClean(bob);
});
