// Friend requests as a flood and as a lie: any ID can send requests, and a lying server can send any number of
// them, withdraw them (FRIEND_CANCEL) or refuse ours. Alice's socket runs through a man in the middle
// (helpers/mitm.mjs). What must hold: the DOM never holds more than the cap of request cards, the page keeps
// answering, a friend's messages still show promptly, a withdrawal removes only that card and leaves the key it
// offered on record, and the server's refusals read as plain words.
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import * as openpgp from 'openpgp';
import {
  DESKTOP, PHONE, assertClean, befriend, enterChat, generateKey, incomingMessage, launchBrowser, newChatUser, openUser, pane,
  screenshot, sendMessage, watchResponsiveness,
} from './helpers/browser.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { RawClient } from './helpers/rawclient.mjs';
import { startServer } from './helpers/server.mjs';

const CARDS_SHOWN = 20; // view/sidebar.js REQUEST_CARDS_SHOWN
const KEPT_REQUESTS = 500; // requests.js MAX_KEPT_REQUESTS
// "Shown promptly" and "the page answers" as bounds that a page doing the flood's work on its main thread
// misses by tens of seconds, and that a loaded CI machine (two cores shared with the server and the browser's
// other processes) still meets: they tell a frozen page from a busy one, they do not measure speed.
const MESSAGE_SHOWN_WITHIN_MS = 4000;
const SLOWEST_ROUND_TRIP_MS = 3000;
const ID_ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function strangerKey(name = 'Stranger') {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name }], format: 'armored' });
  const key = await openpgp.readKey({ armoredKey: publicKey });
  return { armored: publicKey, fingerprint: key.getFingerprint().toUpperCase() };
}

/** `count` distinct IDs that are neither Alice's nor Bob's nor in `taken`. */
function freshIds(count, taken = new Set()) {
  const ids = new Set();
  while (ids.size < count) {
    const id = Array.from({ length: 6 }, () => ID_ALPHABET[randomInt(ID_ALPHABET.length)]).join('');
    if (id !== alice.id && id !== bob.id && !taken.has(id)) ids.add(id);
  }
  return [...ids];
}

describe('request floods and withdrawals', { timeout: 120000 }, () => {
  test('FRIEND_CANCEL removes only that card, with a short note; a stray one changes nothing; a re-sent request with another key is still flagged', async () => {
    const carolKey = await strangerKey('Carol');
    const carol = await RawClient.connect(server.wsUrl);
    try {
      await carol.request({ type: 'FRIEND_REQUEST', to: alice.id, public_key: carolKey.armored }, 'carol');
      const card = alice.page.locator(`.request-card[data-request="${carol.id}"]`);
      await card.waitFor();
      mitm.inject({ type: 'FRIEND_CANCEL', from: carol.id });
      await card.waitFor({ state: 'detached', timeout: 5000 });
      const note = alice.page.locator(`.request-withdrawn[data-withdrawn="${carol.id}"]`);
      assert.equal(await note.textContent(), `${carol.id} withdrew the friend request (their session ended).`);

      // For a friend, or an ID with no card: nothing happens.
      mitm.inject({ type: 'FRIEND_CANCEL', from: bob.id });
      mitm.inject({ type: 'FRIEND_CANCEL', from: freshIds(1)[0] });
      await sendMessage(bob, alice.id, 'still friends after a stray withdrawal');
      assert.equal(await (await incomingMessage(alice, bob.id, 'still friends after a stray withdrawal')).getAttribute('data-verified'), 'true');
      assert.equal(await pane(alice, bob.id).getAttribute('data-presence'), 'online');

      // The withdrawal may have been forged to clear the way for another key: the earlier one is remembered.
      const mallory = await strangerKey('Carol');
      mitm.inject({ type: 'FRIEND_REQUEST', from: carol.id, public_key: mallory.armored });
      await card.waitFor();
      await note.waitFor({ state: 'detached' });
      const assessment = card.locator('.assessment');
      assert.match(await assessment.textContent(), /different key earlier/);
      assert.equal(await assessment.getAttribute('role'), 'alert');
      assert.deepEqual(await card.locator('.request-offered-before [data-fingerprint]').evaluateAll((els) => els.map((el) => el.dataset.fingerprint)), [carolKey.fingerprint]);
      await card.getByRole('button', { name: `Decline friend request from ${carol.id}` }).click();
      await card.waitFor({ state: 'detached' });
    } finally {
      carol.close();
    }
  });

  test('too_many_requests and key_too_large answering our request are said in plain words', async () => {
    const cases = [
      ['too_many_requests', 'That person has too many pending requests right now; try again in a minute.'],
      ['key_too_large', 'The server refused your public key as too large. Import a smaller export of it (gpg --export-options export-minimal).'],
    ];
    for (const [code, text] of cases) {
      const target = await RawClient.connect(server.wsUrl);
      try {
        const refused = mitm.rewriteOnce(
          (frame) => frame.type === 'ACK' && mitm.fromPage.some((f) => f.type === 'FRIEND_REQUEST' && f.to === target.id && f.ref === frame.ref),
          (frame) => ({ type: 'ERROR', code, message: 'words from the server', ref: frame.ref }));
        await alice.page.fill('#add-friend-id', target.id);
        await alice.page.click('#add-friend-send');
        assert.equal((await refused).code, code);
        await alice.page.locator('#add-friend-error', { hasText: text }).waitFor({ timeout: 5000 });
      } finally {
        target.close();
      }
    }
  });

  test('every CONNECT announces protocol version 2, and a reply without it (a version 1 server) is fine', async () => {
    const stripped = mitm.rewriteOnce((frame) => frame.type === 'CONNECT', (frame) => {
      const { version, ...v1 } = frame;
      return v1;
    });
    mitm.closePage();
    await stripped;
    await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 15000 });
    const connects = mitm.fromPage.filter((frame) => frame.type === 'CONNECT');
    assert.ok(connects.length >= 2);
    assert.ok(connects.every((frame) => frame.version === 2), JSON.stringify(connects.map((frame) => frame.version)));
    assert.ok(connects.at(-1).resume, 'the second CONNECT resumes the session');
    assert.equal(await alice.page.textContent('#my-id'), alice.id);
    await sendMessage(bob, alice.id, 'after the resume');
    assert.equal(await (await incomingMessage(alice, bob.id, 'after the resume')).getAttribute('data-verified'), 'true');
    await assertClean(alice);
  });

  test('300 requests from a lying server: at most 20 cards in the DOM, the rest counted, the page answers, a friend\'s message shows promptly', async () => {
    const floodIds = freshIds(300);
    const keys = await Promise.all(floodIds.map((_, i) => strangerKey(`Flood ${i}`)));
    // Counts the cards at every DOM change, so a moment with more than the cap cannot go unseen.
    await alice.page.evaluate(() => {
      window.__mostCards = 0;
      new MutationObserver(() => {
        window.__mostCards = Math.max(window.__mostCards, document.querySelectorAll('.request-card').length);
      }).observe(document.body, { childList: true, subtree: true });
    });
    const watch = watchResponsiveness(alice.page);
    try {
      floodIds.forEach((id, i) => mitm.inject({ type: 'FRIEND_REQUEST', from: id, public_key: keys[i].armored }));
      await sleep(1000);
      const sentAt = Date.now();
      await sendMessage(bob, alice.id, 'sent during the flood');
      const shown = await incomingMessage(alice, bob.id, 'sent during the flood', MESSAGE_SHOWN_WITHIN_MS);
      const took = Date.now() - sentAt;
      assert.ok(took < MESSAGE_SHOWN_WITHIN_MS, `the friend's message took ${took} ms`);
      assert.equal(await shown.getAttribute('data-verified'), 'true');
      await alice.page.locator('.request-more', { hasText: '…and 280 more requests.' }).waitFor({ timeout: 30000 });
    } finally {
      const slowest = await watch.stop();
      assert.ok(slowest < SLOWEST_ROUND_TRIP_MS, `the page did not answer for ${slowest} ms`);
    }
    assert.equal(await alice.page.locator('.request-card').count(), CARDS_SHOWN);
    assert.equal(await alice.page.evaluate(() => window.__mostCards), CARDS_SHOWN, 'more cards than the cap were in the DOM at some moment');
    // The oldest requests are the ones shown, in arrival order.
    assert.deepEqual(await alice.page.locator('.request-card').evaluateAll((els) => els.map((el) => el.dataset.request)), floodIds.slice(0, CARDS_SHOWN));
    await screenshot(alice.page, 'request-flood-desktop');

    await alice.page.getByRole('button', { name: `Show ${CARDS_SHOWN} more` }).click();
    await alice.page.locator('.request-more', { hasText: '…and 260 more requests.' }).waitFor();
    assert.equal(await alice.page.locator('.request-card').count(), 2 * CARDS_SHOWN);

    // On a phone the list is in the main area too (no drawer to open): the count and the button fit the 360 px screen.
    await alice.page.setViewportSize(PHONE);
    const more = alice.page.locator('.request-more');
    await more.scrollIntoViewIfNeeded();
    const box = await more.boundingBox();
    assert.ok(box && box.x >= 0 && box.x + box.width <= PHONE.width, `the "more" line is off screen: ${JSON.stringify(box)}`);
    assert.equal(await alice.page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), true, 'the page scrolls sideways');
    await screenshot(alice.page, 'request-flood-phone');
    await alice.page.setViewportSize(DESKTOP);
  });

  test(`beyond ${KEPT_REQUESTS} pending requests, more are ignored unread and counted`, async () => {
    const pending = await alice.page.evaluate(() => Number(document.title.match(/^\((\d+)\)/)?.[1] || 0));
    assert.ok(pending >= 300, `${pending} pending`);
    const extra = KEPT_REQUESTS - 300 + 50;
    // Not even keys: refusing them is cheap, and they still count as pending cards.
    for (const id of freshIds(extra, new Set())) mitm.inject({ type: 'FRIEND_REQUEST', from: id, public_key: 'not a key' });
    const ignored = alice.page.locator('.request-ignored');
    await ignored.filter({ hasText: '50 more requests were ignored: too many are pending.' }).waitFor({ timeout: 30000 });
    // The ignored notice can come before the last kept keys are checked: wait for the count to settle.
    await alice.page.locator('.request-more', { hasText: `…and ${KEPT_REQUESTS - 2 * CARDS_SHOWN} more requests.` }).waitFor({ timeout: 30000 });
  });
});
