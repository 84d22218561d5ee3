// Rough edges a user would hit: a "server full" notice that outlives the problem, a message too long to ever
// send that wipes the composer, and a draft locked in a disabled box after the friendship ended.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  assertClean, befriend, generateKey, incomingMessage, newChatUser, openChat, openUser, pane,
} from './helpers/browser.mjs';
import { RawClient } from './helpers/rawclient.mjs';
import { browserWithServers } from './helpers/harness.mjs';

const harness = browserWithServers();
const server = (args) => harness.server(args);

test('the "server is full" notice goes away once a session is made', { timeout: 60000 }, async () => {
  const srv = await server(['--max-connections', '1']);
  const squatter = await RawClient.connect(srv.wsUrl);
  const alice = await openUser(harness.browser, srv, { name: 'Alice' });
  await generateKey(alice);
  await alice.page.click('#enter-chat');
  const full = alice.page.locator('#notices [data-notice="server"]', { hasText: /server is full/i });
  await full.waitFor();
  squatter.send({ type: 'DISCONNECT' }); // frees the only session slot
  squatter.close();
  await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 20000 });
  await full.waitFor({ state: 'detached', timeout: 2000 });
  await assertClean(alice);
  await alice.context.close();
});

test('a message too long for the server is refused in the composer, which keeps the text', { timeout: 90000 }, async () => {
  const srv = await server();
  const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
  const bob = await newChatUser(harness.browser, srv, { name: 'Bob' });
  await befriend(bob, alice);
  await openChat(alice, bob.id);
  const chat = pane(alice, bob.id);
  const input = chat.locator('textarea');
  const send = chat.locator('.composer-send');

  // 16,000 CJK characters: within the old 16,000-character cap, but 48 KB of UTF-8, over what fits a frame.
  const tooLong = '漢'.repeat(16000);
  await input.fill(tooLong);
  await chat.locator('.composer-note', { hasText: /too long/i }).waitFor();
  assert.equal(await send.isDisabled(), true);
  await input.press('Enter');
  assert.equal(await input.inputValue(), tooLong, 'the composer was cleared for a message that cannot be sent');
  assert.equal(await chat.locator('.msg-out').count(), 0);

  // Shorter (and ASCII longer than the old character cap) goes through, and the note goes away.
  const fits = `${'漢'.repeat(8000)} and ${'x'.repeat(17000)}`;
  await input.fill(fits);
  await chat.locator('.composer-note', { hasText: /too long/i }).waitFor({ state: 'detached' });
  assert.equal(await send.isDisabled(), false);
  await input.press('Enter');
  assert.equal(await input.inputValue(), '');
  const received = await incomingMessage(bob, alice.id, 'and xxxx', 20000);
  assert.equal(await received.locator('.msg-text').textContent(), fits);
  assert.equal(await received.getAttribute('data-verified'), 'true');
  await assertClean(alice);
  await alice.context.close();
  await bob.context.close();
});

test('a draft left when the friendship ends can still be selected and copied', { timeout: 60000 }, async () => {
  const srv = await server();
  const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
  const bob = await newChatUser(harness.browser, srv, { name: 'Bob' });
  await befriend(bob, alice);
  await openChat(alice, bob.id);
  const input = pane(alice, bob.id).locator('textarea');
  await input.fill('a long draft I do not want to lose');
  // Bob ends the friendship by removing Alice. (Leaving no longer ends it once the two are contacts, which on a
  // §10 server happens within moments of the friendship: a contact stays, offline. A removal ends it for both.)
  await openChat(bob, alice.id);
  await pane(bob, alice.id).getByRole('button', { name: `Remove friend ${alice.id}` }).click();
  await bob.page.getByRole('dialog').getByRole('button', { name: 'Remove friend' }).click();
  await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'gone', bob.id);
  assert.equal(await input.isDisabled(), false, 'a disabled textarea cannot be selected or copied');
  assert.equal(await input.isEditable(), false);
  assert.equal(await input.inputValue(), 'a long draft I do not want to lose');
  const selected = await input.evaluate((el) => {
    el.focus();
    el.select();
    return el.value.slice(el.selectionStart, el.selectionEnd);
  });
  assert.equal(selected, 'a long draft I do not want to lose');
  await input.press('Enter'); // still not sent, still kept
  assert.equal(await input.inputValue(), 'a long draft I do not want to lose');
  assert.equal(await pane(alice, bob.id).locator('.msg-out').count(), 0);
  await assertClean(alice);
  await alice.context.close();
  await bob.context.close();
});

test('a server message limit too small for any message says sending is not possible, not a negative size', { timeout: 60000 }, async () => {
  const srv = await server(['--max-message-bytes', '4000']);
  const alice = await newChatUser(harness.browser, srv, { name: 'Alice' });
  const bob = await newChatUser(harness.browser, srv, { name: 'Bob' });
  await befriend(bob, alice);
  await openChat(alice, bob.id);
  const chat = pane(alice, bob.id);
  const input = chat.locator('textarea');
  await input.fill('hi');
  const note = chat.locator('.composer-note');
  await note.filter({ hasText: /sending is not possible/ }).waitFor();
  assert.doesNotMatch(await note.textContent(), /-\d/);
  assert.equal(await chat.locator('.composer-send').isDisabled(), true);
  await input.press('Enter');
  assert.equal(await input.inputValue(), 'hi');
  assert.equal(await chat.locator('.msg-out').count(), 0);
  await assertClean(alice);
  await alice.context.close();
  await bob.context.close();
});
