// A server that strips what makes contacts work: both pages' sockets run through a man in the middle
// (helpers/mitm.mjs) that keeps some of their frames from the real server and answers each with the ACK an
// honest server would send, so the pages cannot tell. What must hold (SECURITY.md "Stripping"): the user sees
// what really happened (a contact not made, a contact not reachable), never a contact shown online without the
// friend's signature, and a message is never shown delivered without the friend's signed receipt.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { assertClean, befriend, incomingMessage, pane, reloadAndUnlock, sendMessage } from './helpers/browser.mjs';
import { browserWithServers } from './helpers/harness.mjs';
import { interceptedChatUser } from './helpers/mitm.mjs';

const harness = browserWithServers();

/** A user with a remembered key, in the chat, whose socket runs through a man in the middle. */
const interceptedUser = (srv, name) => interceptedChatUser(harness.browser, srv, { name, remember: true });

const entry = (user, friendKey) => user.page.locator(`.friend[data-friend="${friendKey}"]`);

async function waitForContact(user, friendKey) {
  await user.page.waitForFunction((key) => document.querySelector(`.friend[data-friend="${key}"]`)?.dataset.contact === 'true', friendKey, { timeout: 15000 });
}

/** Resolves once the man in the middle kept back a page frame matching `matches`. */
async function waitForStripped(user, matches, what) {
  for (let waited = 0; !user.mitm.stripped.some(matches); waited += 50) {
    if (waited > 20000) assert.fail(`${user.name}: nothing stripped yet (${what})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A probe or its answer: the only frames a client sends with "mailbox": false (PROTOCOL §6 `here`). */
const isProbe = (frame) => frame.type === 'MESSAGE' && frame.mailbox === false;
/** A control envelope by ID: a rendezvous offer (text messages carry refs "m…", control envelopes "r…"). */
const isOfferById = (frame) => frame.type === 'MESSAGE' && typeof frame.to === 'string' && /^r/.test(frame.ref || '');

describe('a server stripping what contacts need', { timeout: 120000 }, () => {
  test('probes stripped: contacts stay "offline" on both sides, yet messages still go and turn delivered by receipt', async () => {
    const srv = await harness.server();
    const alice = await interceptedUser(srv, 'Alice');
    const bob = await interceptedUser(srv, 'Bob');
    await befriend(bob, alice);
    await waitForContact(alice, bob.id);
    await waitForContact(bob, alice.id);
    const aliceKey = alice.id.toLowerCase();
    const bobKey = bob.id.toLowerCase();
    for (const user of [alice, bob]) {
      await user.page.waitForFunction(() => Boolean(localStorage.getItem('secchat.contacts.v1')), null, { timeout: 10000 });
    }
    await alice.page.waitForTimeout(1500); // the book's save of the final state (at most 1 s after the last change)

    // From now on the server drops every probe and every answer, acknowledging each as if it were delivered.
    alice.mitm.strip = isProbe;
    bob.mitm.strip = isProbe;
    await reloadAndUnlock(alice);
    await reloadAndUnlock(bob);
    await waitForStripped(alice, isProbe, 'Alice\'s probe');
    await waitForStripped(bob, isProbe, 'Bob\'s probe');
    // Both contacts are back (from the book, by handle), and each is shown offline: nothing signed says otherwise.
    await entry(alice, bobKey).waitFor();
    await entry(bob, aliceKey).waitFor();
    assert.match(await entry(alice, bobKey).getAttribute('class'), /presence-away/);
    assert.match(await entry(bob, aliceKey).getAttribute('class'), /presence-away/);

    // A message still goes to Bob's handle; his signed receipt, not the server, makes it delivered.
    await sendMessage(alice, bobKey, 'through the stripping server');
    assert.equal(await (await incomingMessage(bob, aliceKey, 'through the stripping server', 20000)).getAttribute('data-verified'), 'true');
    await alice.page.waitForFunction((key) => [...document.querySelectorAll(`.chat-pane[data-friend="${key}"] .msg-out`)]
      .some((m) => m.dataset.state === 'delivered'), bobKey, { timeout: 20000 });
    assert.match(await entry(alice, bobKey).getAttribute('class'), /presence-away/, 'a receipt is no proof of presence');
    assert.match(await entry(bob, aliceKey).getAttribute('class'), /presence-away/);
    assert.ok(alice.mitm.stripped.filter(isProbe).length >= 1 && bob.mitm.stripped.filter(isProbe).length >= 1);
    await assertClean(alice);
    await assertClean(bob);
    await alice.context.close();
    await bob.context.close();
  });

  test('the rendezvous offer stripped: the friendship by ID works, the contact is never made, and closing the page asks first', async () => {
    const srv = await harness.server();
    const alice = await interceptedUser(srv, 'Alice');
    const bob = await interceptedUser(srv, 'Bob');
    // Bob asks, so Bob offers his secret first (by ID): the server drops it and acknowledges it.
    bob.mitm.strip = isOfferById;
    await befriend(bob, alice);
    await waitForStripped(bob, isOfferById, 'Bob\'s rendezvous offer');

    // The friendship by ID is unaffected: messages both ways, verified.
    await sendMessage(bob, alice.id, 'hello by ID');
    assert.equal(await (await incomingMessage(alice, bob.id, 'hello by ID')).getAttribute('data-verified'), 'true');
    await sendMessage(alice, bob.id, 'and back by ID');
    assert.equal(await (await incomingMessage(bob, alice.id, 'and back by ID')).getAttribute('data-verified'), 'true');
    // But Alice never got Bob's secret, so she never answered with hers: neither side is a contact, and
    // neither chat says "is now a contact".
    assert.equal(await entry(alice, bob.id).getAttribute('data-contact'), 'false');
    assert.equal(await entry(bob, alice.id).getAttribute('data-contact'), 'false');
    for (const [user, friendId] of [[alice, bob.id], [bob, alice.id]]) {
      assert.equal(await pane(user, friendId).getByText('is now a contact').count(), 0, `${user.name}: no contact line`);
    }
    assert.equal(alice.mitm.fromPage.filter(isOfferById).length, 0, 'Alice, the accepter, offers nothing unasked');

    // Since the friend is not a contact, a reload would lose them: the page asks first.
    bob.page.removeAllListeners('dialog');
    const dialog = new Promise((resolve) => bob.page.once('dialog', resolve));
    await bob.page.close({ runBeforeUnload: true });
    const shown = await dialog;
    assert.equal(shown.type(), 'beforeunload');
    await shown.dismiss();
    await assertClean(alice);
    await alice.context.close();
    await bob.context.close();
  });
});
