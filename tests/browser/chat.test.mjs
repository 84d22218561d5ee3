// Two people in two browser contexts: keys, friendship, encrypted chat both ways, nothing readable on the
// wire, markup shown as text, screenshots at desktop and phone widths.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  DESKTOP, PHONE, assertClean, assertControlsNamed, assertWireIsOpaque, enterChat, generateKey, incomingMessage, jsonFrames,
  launchBrowser, newChatUser, openChat, openUser, pane, screenshot, sendMessage, waitForSession,
} from './helpers/browser.mjs';
import { startServer } from './helpers/server.mjs';

let server;
let browser;
let alice;
let bob;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** Both listening secrets are known on `user`'s side: the friend is a contact (PROTOCOL §6, CLIENT.md "Contacts"). */
async function waitForContact(user, friendId) {
  await user.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'true', friendId, { timeout: 15000 });
}

/** Waits until `user`'s outgoing message holding `text` reaches `state` (a receipt may take a round trip). */
async function waitForOutgoing(user, friendId, text, state) {
  await user.page.waitForFunction(([id, wanted, expected]) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
    .some((m) => m.textContent.includes(wanted) && m.dataset.state === expected), [friendId, text, state], { timeout: 15000 });
}

describe('two browsers chatting', { timeout: 90000 }, () => {
  test('keys are generated in the page and the key screen looks right', async () => {
    alice = await openUser(browser, server, { name: 'Alice' });
    await alice.page.getByRole('heading', { name: /secchat/i }).waitFor();
    await screenshot(alice.page, 'key-screen-desktop');
    await assertControlsNamed(alice.page);
    // The font comes from our own origin (the CSP allows nothing else) and is really used.
    assert.equal(await alice.page.evaluate(async () => {
      await document.fonts.ready;
      return document.fonts.check('700 16px "JetBrains Mono"') && [...document.fonts].some((f) => f.family.includes('JetBrains Mono') && f.status === 'loaded');
    }), true);
    const phone = await openUser(browser, server, { name: 'phone', viewport: PHONE });
    await screenshot(phone.page, 'key-screen-phone');
    await assertClean(phone);
    await phone.context.close();

    // A too-short passphrase is refused with a message, before any key is made.
    await alice.page.fill('#gen-passphrase', 'short');
    await alice.page.fill('#gen-passphrase2', 'short');
    await alice.page.click('#generate');
    await alice.page.locator('#key-error', { hasText: /Choose a passphrase of at least 8 characters/ }).waitFor();

    const fingerprint = await generateKey(alice);
    await screenshot(alice.page, 'key-ready-desktop');
    // Shown in 4-hex groups, exactly the generated key's fingerprint.
    const grouped = (await alice.page.textContent('.key-result [data-fingerprint]')).replace(/\s+/g, ' ').trim();
    assert.equal(grouped, fingerprint.match(/.{4}/g).join(' '));
    // Nothing stored without "remember".
    assert.equal(await alice.page.evaluate(() => localStorage.length), 0);
    await enterChat(alice);
    bob = await newChatUser(browser, server, { name: 'Bob' });
    assert.notEqual(alice.id, bob.id);
  });

  test('a friend request by ID (typed in lower case with a dash) shows the fingerprint and needs a click', async () => {
    const typed = ` ${alice.id.slice(0, 3).toLowerCase()}-${alice.id.slice(3).toLowerCase()} `;
    await bob.page.fill('#add-friend-id', typed);
    await bob.page.click('#add-friend-send');
    await bob.page.locator(`[data-sent="${alice.id}"]`).waitFor();

    const card = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
    await card.waitFor();
    assert.equal(await card.locator('[data-fingerprint]').getAttribute('data-fingerprint'), bob.fingerprint);
    // Not a friend until Alice clicks.
    assert.equal(await alice.page.locator(`.friend[data-friend="${bob.id}"]`).count(), 0);
    assert.match(await alice.page.title(), /^\(1\) SecChat$/);
    await card.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();

    await alice.page.locator(`.friend[data-friend="${bob.id}"]`).waitFor();
    await bob.page.locator(`.friend[data-friend="${alice.id}"]`).waitFor();
    // Each side pinned the other's key, unverified until compared.
    assert.equal(await pane(alice, bob.id).locator('.chat-head [data-fingerprint]').getAttribute('data-fingerprint'), bob.fingerprint);
    assert.equal(await pane(bob, alice.id).locator('.chat-head [data-fingerprint]').getAttribute('data-fingerprint'), alice.fingerprint);
    assert.equal(await alice.page.getAttribute(`.friend[data-friend="${bob.id}"]`, 'data-trust'), 'unverified');
    assert.equal(await bob.page.getAttribute(`.friend[data-friend="${alice.id}"]`, 'data-trust'), 'unverified');
  });

  test('messages go both ways, decrypted and verified, and only ciphertext crosses the wire', async () => {
    const fromBob = 'Hello Alice — this is Bob. Ünïcödé ✓ and a newline:\nsecond line';
    await openChat(bob, alice.id);
    const input = pane(bob, alice.id).locator('textarea');
    await input.fill('Hello Alice — this is Bob. Ünïcödé ✓ and a newline:');
    await input.press('Shift+Enter'); // a newline, not a send
    await input.pressSequentially('second line');
    assert.equal(await input.inputValue(), fromBob);
    await input.press('Enter');
    assert.equal(await input.inputValue(), '');

    const received = await incomingMessage(alice, bob.id, 'second line');
    assert.equal(await received.locator('.msg-text').textContent(), fromBob);
    assert.equal(await received.getAttribute('data-verified'), 'true');
    assert.equal(await received.getAttribute('data-problems'), '');
    assert.equal(await received.getAttribute('data-seq'), '1');
    // A message that passed every check carries no mark of its own: it is simply Bob's, under his key's name.
    assert.equal(await received.locator('.msg-mark').count(), 0);
    assert.equal(await received.locator('.msg-who').textContent(), '~Bob');
    await waitForOutgoing(bob, alice.id, 'second line', 'delivered');

    // On a §10 server the friendship becomes a contact: each side gets the other's rendezvous secret inside the
    // encrypted channel (PROTOCOL §6). From then on messages go to handles, and "delivered" is the friend's receipt.
    await waitForContact(alice, bob.id);
    await waitForContact(bob, alice.id);

    const fromAlice = 'Hi Bob! Got it. https://example.org/docs?x=1';
    await sendMessage(alice, bob.id, fromAlice);
    const reply = await incomingMessage(bob, alice.id, 'Got it');
    assert.equal(await reply.locator('.msg-text').textContent(), fromAlice);
    assert.equal(await reply.getAttribute('data-verified'), 'true');
    assert.equal(await reply.getAttribute('data-problems'), '');
    assert.equal(await reply.getAttribute('data-seq'), '1');
    const link = reply.locator('a');
    assert.equal(await link.getAttribute('href'), 'https://example.org/docs?x=1');
    assert.equal(await link.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await link.getAttribute('target'), '_blank');
    await waitForOutgoing(alice, bob.id, 'Got it', 'delivered');

    // More messages keep seq in order, both ways.
    await sendMessage(alice, bob.id, 'third message');
    assert.equal(await (await incomingMessage(bob, alice.id, 'third message')).getAttribute('data-seq'), '2');
    await waitForOutgoing(alice, bob.id, 'third message', 'delivered');
    await sendMessage(bob, alice.id, 'fourth, from Bob');
    const fourth = await incomingMessage(alice, bob.id, 'fourth, from Bob');
    assert.equal(await fourth.getAttribute('data-seq'), '2');
    assert.equal(await fourth.getAttribute('data-verified'), 'true');
    await waitForOutgoing(bob, alice.id, 'fourth, from Bob', 'delivered');

    for (const user of [alice, bob]) {
      const payloads = assertWireIsOpaque(user, ['Hello Alice', 'second line', 'Got it', 'third message', 'fourth, from', 'Bob.', 'example.org']);
      assert.ok(payloads >= 4, `${user.name} saw ${payloads} payloads`);
    }

    // The text messages' MESSAGE frames (refs "m…"; the contact's control envelopes use the transport's "r…")
    // carry ciphertext only. Bob's first went before the rendezvous may have completed: by Alice's session ID or
    // already by her handle. Every one sent after both were contacts goes to a handle the friend LISTENs on,
    // never `to` an ID, and the server forwards it with no `from`.
    const listenedBy = (user) => new Set(jsonFrames(user).filter((f) => f.direction === 'sent' && f.json.type === 'LISTEN').flatMap((f) => f.json.handles));
    const textFrames = (user) => jsonFrames(user).filter((f) => f.direction === 'sent' && f.json.type === 'MESSAGE' && /^m/.test(f.json.ref)).map((f) => f.json);
    const bobText = textFrames(bob);
    const aliceText = textFrames(alice);
    assert.equal(bobText.length, 2, 'Bob sent two text messages, each once');
    assert.equal(aliceText.length, 2, 'Alice sent two text messages, each once');
    const [first, ...afterContact] = bobText;
    if ('to' in first) {
      assert.deepEqual(Object.keys(first).sort(), ['payload', 'ref', 'to', 'type']);
      assert.equal(first.to, alice.id);
    } else {
      assert.deepEqual(Object.keys(first).sort(), ['handle', 'payload', 'ref', 'type']);
      assert.ok(listenedBy(alice).has(first.handle));
    }
    for (const [frames, recipient] of [[afterContact, alice], [aliceText, bob]]) {
      for (const frame of frames) {
        assert.deepEqual(Object.keys(frame).sort(), ['handle', 'payload', 'ref', 'type']);
        assert.match(frame.handle, /^[A-Za-z0-9_-]{43}$/);
        assert.ok(listenedBy(recipient).has(frame.handle), `${recipient.name} listens on the handle`);
      }
    }
    for (const user of [alice, bob]) {
      const byHandle = jsonFrames(user).filter((f) => f.direction === 'received' && f.json.type === 'MESSAGE' && 'handle' in f.json);
      assert.ok(byHandle.length >= 2, `${user.name} received messages by handle`);
      assert.ok(byHandle.every((f) => !('from' in f.json)), 'a MESSAGE to a handle carries no sender');
    }
    // "Delivered" for a message to a handle is the friend's signed receipt, not the server's ACK: the ACK of
    // Alice's "Got it" came first, a MESSAGE to her handle (Bob's receipt) after it.
    const aliceFrames = jsonFrames(alice);
    const gotItRef = aliceText[0].ref;
    const ackAt = aliceFrames.findIndex((f) => f.direction === 'received' && f.json.type === 'ACK' && f.json.ref === gotItRef);
    assert.ok(ackAt >= 0, 'the server acknowledged it');
    assert.ok(aliceFrames.slice(ackAt + 1).some((f) => f.direction === 'received' && f.json.type === 'MESSAGE' && 'handle' in f.json),
      'a receipt came to her handle after the ACK');

    await screenshot(alice.page, 'chat-desktop');
    await assertControlsNamed(alice.page);
    await bob.page.setViewportSize(PHONE);
    await bob.page.waitForTimeout(300); // the drawer's slide-out transition
    await screenshot(bob.page, 'chat-phone');
    await bob.page.getByRole('button', { name: /Show friends and requests/ }).click();
    await bob.page.locator('#sidebar').waitFor({ state: 'visible' });
    await bob.page.waitForTimeout(300);
    await screenshot(bob.page, 'friends-drawer-phone');
    await bob.page.keyboard.press('Escape');
    await bob.page.setViewportSize(DESKTOP);
  });

  test('unread messages are counted in the friends list and the tab title', async () => {
    const carol = await newChatUser(browser, server, { name: 'Carol' });
    await carol.page.fill('#add-friend-id', alice.id);
    await carol.page.click('#add-friend-send');
    await alice.page.getByRole('button', { name: `Accept friend request from ${carol.id}` }).click();
    await carol.page.locator(`.friend[data-friend="${alice.id}"]`).waitFor();
    await openChat(alice, bob.id); // Alice looks at Bob's chat while Carol writes
    await sendMessage(carol, alice.id, 'one');
    await sendMessage(carol, alice.id, 'two');
    await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.unread === '2', carol.id);
    assert.equal(await alice.page.title(), '(2) SecChat');
    await openChat(alice, carol.id);
    await alice.page.waitForFunction(() => document.title === 'SecChat');
    await assertClean(carol);
    await carol.context.close();
  });

  test('a message with HTML and script renders as text and runs nothing', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
      + '<b id="injected">bold?</b> <a href="javascript:window.__pwned=3">click</a> javascript:alert(1) ✔ verified';
    await sendMessage(bob, alice.id, hostile);
    const shown = await incomingMessage(alice, bob.id, 'bold?');
    assert.equal(await shown.locator('.msg-text').textContent(), hostile);
    assert.equal(await alice.page.locator('#injected').count(), 0);
    assert.equal(await shown.locator('img, script, b').count(), 0);
    assert.equal(await shown.locator('a').count(), 0, 'no link may be made from javascript: text');
    await alice.page.waitForTimeout(200);
    assert.equal(await alice.page.evaluate(() => window.__pwned), undefined);
    // The text's own "✔ verified" stays inside the text; the page draws no mark on a message that passed its
    // checks, so nothing the text says can pose as one.
    assert.equal(await shown.getAttribute('data-verified'), 'true');
    assert.equal(await shown.locator('.msg-meta .msg-mark').count(), 0);
  });

  test('removing a friend ends the chat on both sides, and leaving tells friends', async () => {
    // Alice and Bob are contacts by now (previous tests); their friendship by ID is live too, so the removal goes
    // as FRIEND_REMOVE, and it ends the contact on both sides: no "the contact stays".
    await openChat(bob, alice.id);
    await pane(bob, alice.id).getByRole('button', { name: `Remove friend ${alice.id}` }).click();
    await bob.page.getByRole('dialog').getByRole('button', { name: 'Remove friend' }).click();
    await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'gone', bob.id);
    await openChat(alice, bob.id);
    await pane(alice, bob.id).getByText(`${bob.id} removed you as a friend`).first().waitFor();
    assert.equal(await pane(alice, bob.id).locator('textarea').isEditable(), false);
    assert.equal(await pane(alice, bob.id).locator('.composer-send').isDisabled(), true);
    await bob.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'gone', alice.id);
    for (const [user, other] of [[alice, bob], [bob, alice]]) {
      await user.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'false', other.id);
      assert.doesNotMatch(await pane(user, other.id).textContent(), /contact stays/);
    }
    assert.equal(jsonFrames(bob).filter((f) => f.direction === 'sent' && f.json.type === 'FRIEND_REMOVE' && f.json.to === alice.id).length, 1);

    // Alice leaves; a new friend of hers (Dave) is told. He is her contact, so her session ending does not end
    // the contact: he sees her offline ("the contact stays"), and can still write (messages wait for her).
    const dave = await newChatUser(browser, server, { name: 'Dave' });
    await dave.page.fill('#add-friend-id', alice.id);
    await dave.page.click('#add-friend-send');
    await alice.page.getByRole('button', { name: `Accept friend request from ${dave.id}` }).click();
    await dave.page.locator(`.friend[data-friend="${alice.id}"]`).waitFor();
    await waitForContact(dave, alice.id);
    await waitForContact(alice, dave.id);
    await openChat(dave, alice.id);
    await alice.page.click('#leave');
    await alice.page.getByRole('dialog').getByRole('button', { name: 'Leave' }).click();
    await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'left');
    await pane(dave, alice.id).getByText(/session ended; the contact stays, and messages wait for them/).waitFor();
    await dave.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.classList.contains('presence-away'), alice.id);
    assert.match(await dave.page.locator(`.friend[data-friend="${alice.id}"] .presence-text`).textContent(), /^offline(, last reachable \d\d:\d\d)?$/);
    assert.equal(await pane(dave, alice.id).getAttribute('data-presence'), 'away');
    assert.equal(await pane(dave, alice.id).locator('textarea').isEditable(), true);
    const disconnects = jsonFrames(alice).filter((f) => f.direction === 'sent' && f.json.type === 'DISCONNECT');
    assert.equal(disconnects.length, 1);

    // Alice starts a new session (a new ID): the contact finds her again by handle. Dave removes her now, when
    // no friendship by ID exists for FRIEND_REMOVE to end: a signed `remove` to her handle ends it on her side too.
    await alice.page.getByRole('button', { name: 'Start a new session' }).click();
    const oldAliceId = alice.id;
    await waitForSession(alice);
    assert.notEqual(alice.id, oldAliceId);
    await dave.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.classList.contains('presence-online'), oldAliceId, { timeout: 15000 });
    const daveSentBefore = jsonFrames(dave).filter((f) => f.direction === 'sent').length;
    await pane(dave, oldAliceId).getByRole('button', { name: `Remove friend ${oldAliceId}` }).click();
    await dave.page.getByRole('dialog').getByRole('button', { name: 'Remove friend' }).click();
    await dave.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'gone', oldAliceId);
    await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'gone', dave.id, { timeout: 15000 });
    await openChat(alice, dave.id);
    await pane(alice, dave.id).getByText(`${dave.id} removed you as a friend`).first().waitFor();
    assert.equal(await pane(alice, dave.id).locator('textarea').isEditable(), false);
    await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'false', dave.id);
    const daveSent = jsonFrames(dave).filter((f) => f.direction === 'sent').slice(daveSentBefore).map((f) => f.json);
    assert.equal(daveSent.filter((f) => f.type === 'FRIEND_REMOVE').length, 0, 'no ID friendship to end');
    assert.ok(daveSent.some((f) => f.type === 'MESSAGE' && typeof f.handle === 'string' && !('to' in f)), 'the removal went to her handle');
    await assertClean(dave);
  });

  test('no console error or CSP violation happened in any flow', async () => {
    await assertClean(alice);
    await assertClean(bob);
  });
});
