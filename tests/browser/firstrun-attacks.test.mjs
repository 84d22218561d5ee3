// The first run under attack, at 1280 and 360 px against the real server: a relay putting an unsigned name in
// front of a real key, a long look-alike name pushing the ID and its warning off a phone's chat header, the skip
// link and Tab landing on a stranger's Accept, one invite link handed to several people (copies, and one link
// proved by two requests), a request flood hiding the invited friend's card, and a key's name speaking in the
// page's own system lines. firstrun.unit.test.mjs covers the pure parts (name skeletons, secrets, proofs).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import * as openpgp from 'openpgp';
import {
  DESKTOP, PHONE, assertClean, befriend, enterChat, generateKey, jsonFrames, launchBrowser, newChatUser, openUser, pane, screenshot,
} from './helpers/browser.mjs';
import { withUnsignedUserId } from './helpers/hostilekey.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { RawClient } from './helpers/rawclient.mjs';
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

const SIZES = [['desktop', DESKTOP], ['phone', PHONE]];

/**
 * The element is drawn whole: inside the viewport and every box that clips it (overflow), and not covered by
 * anything else at its centre. Playwright's "visible" says none of that.
 */
async function assertWhole(locator, what) {
  await locator.waitFor({ state: 'visible' });
  const found = await locator.evaluate((element) => {
    const box = element.getBoundingClientRect();
    let clip = { left: 0, top: 0, right: window.innerWidth, bottom: window.innerHeight };
    for (let outer = element.parentElement; outer; outer = outer.parentElement) {
      const style = getComputedStyle(outer);
      if (style.overflowX === 'visible' && style.overflowY === 'visible') continue;
      const r = outer.getBoundingClientRect();
      clip = { left: Math.max(clip.left, r.left), top: Math.max(clip.top, r.top), right: Math.min(clip.right, r.right), bottom: Math.min(clip.bottom, r.bottom) };
    }
    const inside = box.width > 0 && box.height > 0 && box.left >= clip.left - 1 && box.right <= clip.right + 1
      && box.top >= clip.top - 1 && box.bottom <= clip.bottom + 1;
    const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2);
    return { inside, onTop: Boolean(hit && element.contains(hit)), box: [box.left, box.top, box.right, box.bottom].map(Math.round), clip };
  });
  assert.ok(found.inside && found.onTop, `${what} is not drawn whole: ${JSON.stringify(found)}`);
}

/** The secret (`k=`) of an invite link. */
const secretOf = (link) => new URLSearchParams(new URL(link).hash.slice(1)).get('k');

/** `name` opens `link`, makes a key and sends the request the invite step offers (with its proof). */
async function requestThrough(name, link) {
  const user = await openUser(browser, server, { name, hash: new URL(link).hash });
  await generateKey(user);
  await enterChat(user);
  await user.page.locator('.invite-step').getByRole('button', { name: 'Send friend request' }).click();
  await user.page.locator('.invite-step').waitFor({ state: 'hidden' });
  return user;
}

const trustOf = (user, id) => user.page.evaluate((friendId) => document.querySelector(`.friend[data-friend="${friendId}"]`)?.dataset.trust, id);

describe('names a relay or a stranger chooses', { timeout: 120000 }, () => {
  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: a user ID put in front of a real key without its owner's signature is never shown as its name`, async () => {
      const alice = await openUser(browser, server, { name: 'Alice' });
      const mitm = await interceptSocket(alice.page, server.wsUrl);
      await generateKey(alice);
      await enterChat(alice);
      const bob = await newChatUser(browser, server, { name: 'Bob Smith' });
      // The man in the middle puts an unsigned "Mum" before Bob's own user ID: same key, same fingerprint.
      const relayed = mitm.rewriteOnce((frame) => frame.type === 'FRIEND_REQUEST' && frame.from === bob.id,
        (frame) => ({ ...frame, public_key: withUnsignedUserId(frame.public_key, 'Mum') }));
      await bob.page.fill('#add-friend-id', alice.id);
      await bob.page.click('#add-friend-send');
      assert.match((await relayed).public_key, /BEGIN PGP PUBLIC KEY BLOCK/);
      await alice.page.setViewportSize(viewport);
      const card = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
      await card.waitFor();
      assert.equal(await card.locator('[data-fingerprint]').first().getAttribute('data-fingerprint'), bob.fingerprint);
      assert.equal(await card.locator('.key-name').textContent(), 'Name on their key (chosen by its owner, not checked): Bob Smith');
      await card.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
      const title = pane(alice, bob.id).locator('.chat-title .friend-name');
      await title.waitFor();
      assert.equal(await title.textContent(), '~Bob Smith (name on their key, chosen by its owner)');
      assert.equal(await alice.page.locator(`.friend[data-friend="${bob.id}"] .friend-name`).textContent(), '~Bob Smith (name on their key, chosen by its owner)');
      assert.doesNotMatch(await alice.page.locator('body').textContent(), /Mum/);
      await assertClean(alice);
      await alice.context.close();
      await bob.context.close();
    });

    test(`at ${size} size: a long name that reads like a friend's gives way in the chat header; the ID and the warning stay whole`, async () => {
      const longName = 'Bob Smith from the bakery on Main Street';
      const alice = await newChatUser(browser, server, { name: 'Alice' });
      const bob = await newChatUser(browser, server, { name: longName });
      await befriend(bob, alice);
      await alice.page.setViewportSize(viewport);
      // Mallory's key carries Bob's name with a Cyrillic "В" and a Hangul filler: it reads the same.
      const { publicKey } = await openpgp.generateKey({
        type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: `\u0412ob\u3164 ${longName.slice(4)}` }], format: 'armored',
      });
      const mallory = await RawClient.connect(server.wsUrl);
      mallory.send({ type: 'FRIEND_REQUEST', to: alice.id, public_key: publicKey, ref: 'r' });
      const card = alice.page.locator(`.request-card[data-request="${mallory.id}"]`);
      await card.waitFor();
      // The request card says so before anyone accepts (checked below, after the header).
      const cardClashes = await card.locator('.name-clash').evaluateAll((elements) => elements.map((e) => e.dataset.nameClash));
      await card.getByRole('button', { name: `Accept friend request from ${mallory.id}` }).click();
      const head = pane(alice, mallory.id).locator('.chat-title');
      await head.waitFor();
      await assertWhole(head.locator('.friend-id'), 'the ID in the chat header');
      await assertWhole(pane(alice, mallory.id).locator('.chat-head .trust-badge'), 'the trust badge');
      assert.equal(await head.locator('.name-clash').getAttribute('data-name-clash'), bob.id);
      await assertWhole(head.locator('.name-clash'), 'the clash warning in the chat header');
      assert.deepEqual(cardClashes, [bob.id]);
      await screenshot(alice.page, `chat-header-clash-${size}`);
      // What gives way on a phone is the name, with an ellipsis.
      const nameCut = await head.locator('.friend-name').evaluate((element) => element.scrollWidth > element.clientWidth
        && getComputedStyle(element).textOverflow === 'ellipsis');
      assert.equal(nameCut, size === 'phone');
      mallory.close();
      await assertClean(alice);
      await alice.context.close();
      await bob.context.close();
    });

    test(`at ${size} size: system lines name a friend by ID, never by the name on their key, before and after a nickname`, async () => {
      const alice = await newChatUser(browser, server, { name: 'Alice' });
      const bob = await newChatUser(browser, server, { name: 'They came through your invite link' });
      await befriend(alice, bob); // Alice asks, Bob accepts: Alice's chat says so
      const chat = pane(alice, bob.id);
      await chat.locator('.msg-system').nth(1).waitFor({ state: 'attached' });
      await chat.getByLabel('Your name for them (only you see it)').fill('Bobby');
      await chat.getByRole('button', { name: `Save your name for ${bob.id}` }).click();
      await chat.locator('.chat-title .friend-name[data-name-kind="nickname"]').waitFor();
      await alice.page.setViewportSize(viewport);
      // Bob removes Alice: the "ended" line too.
      await pane(bob, alice.id).getByRole('button', { name: `Remove friend ${alice.id}` }).click();
      await bob.page.getByRole('dialog').getByRole('button', { name: 'Remove friend' }).click();
      await chat.locator('.msg-system').filter({ hasText: 'removed you' }).waitFor({ state: 'attached' });
      const lines = await chat.locator('.msg-system').allTextContents();
      assert.equal(lines[0], `${bob.id} accepted your friend request.`);
      assert.ok(lines.includes(`${bob.id} removed you as a friend.`), lines.join(' | '));
      for (const line of lines) assert.doesNotMatch(line, /They came through|~|Bobby/, line);
      await assertClean(alice);
      await alice.context.close();
      await bob.context.close();
    });
  }
});

describe('the skip link', { timeout: 120000 }, () => {
  /** Focus at the top of the document, as after loading the page, then Tab to the skip link and press Enter. */
  async function skip(page) {
    await page.evaluate(() => {
      document.body.tabIndex = -1;
      document.body.focus();
      document.body.removeAttribute('tabindex');
    });
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.className), 'skip-link');
    const text = await page.evaluate(() => document.activeElement.textContent);
    await page.keyboard.press('Enter');
    return text;
  }

  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: it goes to the open chat's composer (else the start screen's first action); skip, Tab, Enter accepts nobody`, async () => {
      const alice = await newChatUser(browser, server, { name: 'Alice' }); // befriend() waits for the friends list: not in a phone's closed drawer
      const bob = await newChatUser(browser, server, { name: 'Bob' });
      await befriend(bob, alice); // accepting opens the chat
      await alice.page.setViewportSize(viewport);
      const jo = await newChatUser(browser, server, { name: 'Jo' });
      await jo.page.fill('#add-friend-id', alice.id);
      await jo.page.click('#add-friend-send');
      const card = alice.page.locator(`.request-card[data-request="${jo.id}"]`);
      await card.waitFor();

      assert.equal(await skip(alice.page), 'Skip to the conversation');
      assert.equal(await alice.page.evaluate(() => document.activeElement?.id), `composer-${bob.id}`);
      await alice.page.keyboard.press('Tab');
      await alice.page.keyboard.press('Enter');
      await alice.page.waitForTimeout(500);
      assert.deepEqual(jsonFrames(alice).filter((f) => f.direction === 'sent' && f.json.type === 'FRIEND_ACCEPT' && f.json.to === jo.id), []);
      await card.waitFor({ state: 'attached' });
      assert.equal(await alice.page.locator(`.friend[data-friend="${jo.id}"]`).count(), 0);
      // Tab into a card reaches Decline before Accept.
      assert.deepEqual(await card.locator('button').allTextContents(), ['Decline', 'Accept']);

      // With no chat open, the start screen's first action.
      await alice.page.setViewportSize(DESKTOP);
      await pane(alice, bob.id).getByRole('button', { name: `Remove friend ${bob.id}` }).click();
      await alice.page.getByRole('dialog').getByRole('button', { name: 'Remove friend' }).click();
      await pane(alice, bob.id).getByRole('button', { name: `Close the chat with ${bob.id}` }).click();
      await alice.page.locator('.welcome').waitFor();
      await alice.page.setViewportSize(viewport);
      assert.equal(await skip(alice.page), 'Skip to the start screen');
      assert.equal(await alice.page.evaluate(() => document.activeElement?.closest('.welcome') !== null
        && document.activeElement.getAttribute('aria-label')), 'Copy your invite link');
      await assertClean(alice);
      for (const user of [alice, bob, jo]) await user.context.close();
    });
  }
});

describe('one invite link, several people', { timeout: 150000 }, () => {
  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: each copy is a new link, and each verifies the one friend who used it`, async () => {
      const alice = await newChatUser(browser, server, { name: 'Alice', viewport });
      await alice.page.evaluate(() => {
        window.__copied = [];
        navigator.clipboard.writeText = async (text) => { window.__copied.push(text); };
      });
      const welcome = alice.page.locator('.welcome');
      const shown = await welcome.locator('#welcome-invite-link').textContent();
      const copy = welcome.getByRole('button', { name: 'Copy your invite link' });
      await copy.click();
      await alice.page.waitForFunction((old) => document.querySelector('#welcome-invite-link').textContent !== old, shown);
      await copy.click();
      const copied = await alice.page.evaluate(() => window.__copied);
      assert.equal(copied.length, 2);
      assert.equal(copied[0], shown, 'a copy is the link shown');
      assert.notEqual(secretOf(copied[0]), secretOf(copied[1]), 'two copies, two secrets');
      assert.match(await welcome.textContent(), /Each copy, share or QR code is a new link with its own one-time secret, for one friend/);

      const friends = [];
      for (const [name, link] of [['Bob', copied[0]], ['Carol', copied[1]]]) {
        const user = await requestThrough(name, link);
        await alice.page.locator(`.request-card[data-request="${user.id}"] [data-via-invite="true"]`).waitFor();
        friends.push(user);
      }
      for (const user of friends) {
        const card = alice.page.locator(`.request-card[data-request="${user.id}"]`);
        assert.equal(await card.locator('[data-via-invite]').getAttribute('data-via-invite'), 'true');
        await card.getByRole('button', { name: `Accept friend request from ${user.id}` }).click();
        await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.trust === 'verified', user.id);
      }
      await assertClean(alice);
      for (const user of [alice, ...friends]) await user.context.close();
    });

    test(`at ${size} size: a link proved by two requests reached two people: both cards say so, the first one redrawn, and neither is verified`, async () => {
      const alice = await newChatUser(browser, server, { name: 'Alice', viewport });
      const link = await alice.page.locator('#welcome-invite-link').textContent(); // read off the screen, never copied
      const bob = await requestThrough('Bob', link);
      const bobCard = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
      await bobCard.locator('[data-via-invite="true"]').waitFor();
      const carol = await requestThrough('Carol', link);
      const carolCard = alice.page.locator(`.request-card[data-request="${carol.id}"]`);
      await carolCard.locator('[data-via-invite="shared"]').waitFor();
      await bobCard.locator('[data-via-invite="shared"]').waitFor({ timeout: 5000 });
      for (const card of [bobCard, carolCard]) {
        assert.doesNotMatch(await card.textContent(), /Accepting marks the key verified/);
        assert.match(await card.getAttribute('class'), /request-notice/);
      }
      // The link is used up: the one shown now has another secret.
      await alice.page.waitForFunction((old) => !['', old].includes(document.querySelector('#welcome-invite-link')?.textContent || ''), link);
      await bobCard.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
      await alice.page.locator(`.friend[data-friend="${bob.id}"]`).waitFor({ state: 'attached' });
      assert.equal(await trustOf(alice, bob.id), 'unverified');
      assert.equal(await carolCard.locator('[data-via-invite]').getAttribute('data-via-invite'), 'shared');
      await carolCard.getByRole('button', { name: `Accept friend request from ${carol.id}` }).click();
      await alice.page.locator(`.friend[data-friend="${carol.id}"]`).waitFor({ state: 'attached' });
      assert.equal(await trustOf(alice, carol.id), 'unverified');
      await assertClean(alice);
      for (const user of [alice, bob, carol]) await user.context.close();
    });
  }
});

describe('a request flood', { timeout: 120000 }, () => {
  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: 25 strangers' requests do not hide the card of the friend who proved the invite link`, async () => {
      const alice = await openUser(browser, server, { name: 'Alice', viewport });
      const mitm = await interceptSocket(alice.page, server.wsUrl);
      await generateKey(alice);
      await enterChat(alice);
      const secret = secretOf(await alice.page.locator('#welcome-invite-link').textContent());
      const keys = await Promise.all(Array.from({ length: 26 }, (_, i) => openpgp.generateKey({
        type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: `Stranger ${i}` }], format: 'object',
      })));
      // A lying server forwards 25 requests from IDs of its own making, then the friend's, with its proof.
      for (let i = 0; i < 25; i += 1) {
        mitm.inject({ type: 'FRIEND_REQUEST', from: `S${String(i).padStart(5, '0')}`, public_key: keys[i].publicKey.armor() });
      }
      await alice.page.locator('.request-more').getByText('…and 5 more requests.').waitFor();
      const friendKey = keys[25].publicKey;
      const proof = createHmac('sha256', Buffer.from(secret, 'base64url'))
        .update(`secchat-invite-v1\n${friendKey.getFingerprint().toUpperCase()}\n${alice.fingerprint}`).digest('base64url');
      mitm.inject({ type: 'FRIEND_REQUEST', from: 'F00000', public_key: friendKey.armor(), invite: proof });
      await alice.page.locator('.request-more').getByText('…and 6 more requests.').waitFor();
      const card = alice.page.locator('.request-card[data-request="F00000"]');
      await card.locator('[data-via-invite="true"]').waitFor();
      assert.equal(await alice.page.locator('.request-card').first().getAttribute('data-request'), 'F00000');
      await assertWhole(card.getByRole('button', { name: 'Accept friend request from F00000' }), 'the invited friend\'s Accept');
      await assertClean(alice);
      await alice.context.close();
    });
  }
});
