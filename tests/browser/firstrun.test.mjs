// A newcomer's first minute, at 1280 px and at 360 px: an invite link carried through key setup to a clear
// "Send a friend request to …?" step, the inviter seeing that the request came through the link, requests
// where the eye is, names instead of codes (and what a crafted name on a key cannot do), the ID explained,
// the QR code and Web Share, one vocabulary for trust, a compact phone header, system lines in order, a
// warning before closing live chats, "went offline" before "session ended", the installable manifest, and
// axe-core plus a keyboard-only pass on every screen. Screenshots of each screen go to tests/browser/artifacts/.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import decodeQR from '@paulmillr/qr/decode.js';
import * as openpgp from 'openpgp';
import { seriousViolations } from './helpers/axe.mjs';
import {
  DESKTOP, PHONE, assertClean, befriend, enterChat, generateKey, incomingMessage, jsonFrames, launchBrowser, newChatUser,
  openChat, openUser, pane, screenshot, sendMessage, strayText,
} from './helpers/browser.mjs';
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

async function assertAccessible(page, what) {
  assert.deepEqual(await seriousViolations(page), [], `axe-core found serious or critical violations on ${what}`);
}

/** The element is drawn inside the viewport as it is (no scrolling): where the eye already is. */
async function assertInView(page, locator, what) {
  await locator.waitFor({ state: 'visible' });
  const box = await locator.boundingBox();
  const viewport = page.viewportSize();
  assert.ok(box && box.y >= 0 && box.y + box.height <= viewport.height && box.x >= 0 && box.x + box.width <= viewport.width,
    `${what} is outside the ${viewport.width}×${viewport.height} viewport: ${JSON.stringify(box)}`);
}

/** The page's system lines in a chat, as shown, oldest first. */
const systemLinesOf = (user, friendId) => pane(user, friendId).locator('.msg-system').allTextContents();

describe('an invite link, from key setup to chatting', { timeout: 120000 }, () => {
  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: the key screen says who invited, the request step follows, the inviter accepts from the top of the page`, async () => {
      const alice = await newChatUser(browser, server, { name: 'Alice', viewport });
      const link = await alice.page.locator('#welcome-invite-link').textContent();
      const { hash } = new URL(link);
      const secret = new URLSearchParams(hash.slice(1)).get('k');
      assert.match(secret, /^[A-Za-z0-9_-]{22}$/, 'the link carries a one-time secret');
      await screenshot(alice.page, `start-screen-${size}`);
      await assertAccessible(alice.page, `the start screen at ${size} size`);

      const bob = await openUser(browser, server, { name: 'Bob', viewport, hash });
      const banner = bob.page.locator('.invite-banner');
      await banner.waitFor();
      assert.match(await banner.textContent(), new RegExp(`invited to chat by ${alice.id}`));
      await screenshot(bob.page, `key-screen-invited-${size}`);
      await assertAccessible(bob.page, `the key screen with an invite at ${size} size`);
      await generateKey(bob);
      await enterChat(bob);

      // The step is in the main area, on screen, and has the keyboard's focus.
      const step = bob.page.locator('.invite-step');
      assert.equal(await step.locator('h2').textContent(), `Send a friend request to ${alice.id}?`);
      await assertInView(bob.page, step.getByRole('button', { name: 'Send friend request' }), 'the invite step\'s button');
      assert.equal(await bob.page.evaluate(() => document.activeElement?.id), 'invite-title');
      assert.equal(await step.locator('[data-fingerprint]').getAttribute('data-fingerprint'), alice.fingerprint);
      assert.deepEqual(await strayText(bob.page), [], 'no stray "null" on the invitee\'s screen');
      await screenshot(bob.page, `invite-step-${size}`);
      await assertAccessible(bob.page, `the invite step at ${size} size`);
      assert.equal(jsonFrames(bob).filter((f) => f.json.type === 'FRIEND_REQUEST').length, 0, 'nothing is sent before the click');
      await step.getByRole('button', { name: 'Send friend request' }).click();
      await step.waitFor({ state: 'hidden' });
      await bob.page.locator(`[data-waiting="${alice.id}"]`).waitFor();

      // The request carries the proof of the link's secret for Bob's key (PROTOCOL.md §9), computed as documented.
      const sent = jsonFrames(bob).find((f) => f.direction === 'sent' && f.json.type === 'FRIEND_REQUEST').json;
      const expected = createHmac('sha256', Buffer.from(secret, 'base64url'))
        .update(`secchat-invite-v1\n${bob.fingerprint}\n${alice.fingerprint}`).digest('base64url');
      assert.equal(sent.invite, expected);

      // Alice sees the request at the top of her main area, its Accept button on screen at either size.
      const card = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
      const accept = card.getByRole('button', { name: `Accept friend request from ${bob.id}` });
      await assertInView(alice.page, accept, 'the Accept button');
      assert.match(await card.locator('.key-name').textContent(), /Name on their key \(chosen by its owner, not checked\): Bob$/);
      // The server forwarded the proof (PROTOCOL.md §9): Alice learns the request came through her link.
      const received = jsonFrames(alice).find((f) => f.direction === 'received' && f.json.type === 'FRIEND_REQUEST' && f.json.from === bob.id).json;
      assert.equal(received.invite, expected, 'the server forwards the proof unchanged');
      await card.locator('[data-via-invite="true"]').waitFor();
      await screenshot(alice.page, `request-${size}`);
      await accept.click();
      // Trust both ways: Bob's key is verified for Alice, and her link now carries a new secret.
      await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.trust === 'verified', bob.id);
      await alice.page.waitForFunction((old) => {
        const now = document.querySelector('#invite-link')?.textContent || '';
        return now.includes('&k=') && now !== old;
      }, link);

      // Bob's side: Alice verified by the link's fingerprint; "accepted" before "friendship started".
      const aliceAtBob = bob.page.locator(`.friend[data-friend="${alice.id}"]`);
      await aliceAtBob.waitFor({ state: 'attached' });
      await bob.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.trust === 'verified', alice.id);
      await pane(bob, alice.id).locator('.msg-system').nth(1).waitFor({ state: 'attached' });
      const lines = await systemLinesOf(bob, alice.id);
      assert.match(lines[0], /accepted your friend request/);
      assert.match(lines[1], /^Friendship started\. Key matches your invite link: verified\./);
      // Her name, marked as chosen by its owner, then her ID.
      assert.equal(await pane(bob, alice.id).locator('.chat-title .friend-name').textContent(), '~Alice (name on their key, chosen by its owner)');
      assert.equal(await pane(bob, alice.id).locator('.chat-title .friend-id').textContent(), alice.id);
      await screenshot(bob.page, `chat-${size}`);
      await assertAccessible(bob.page, `a chat at ${size} size`);
      await assertClean(alice);
      await assertClean(bob);
      await alice.context.close();
      await bob.context.close();
    });
  }

  test('the inviter learns the request came through the link: its proof verifies Bob\'s key and the link gets a new secret; a swapped key does not', async () => {
    // The server forwards the request's "invite" field unchanged (PROTOCOL.md §9); this man in the middle sets
    // it on the request Alice receives to the value computed here, and checks it is exactly what the invitee's
    // page sent; for Dave it also swaps the key, as a hostile server would.
    const alice = await openUser(browser, server, { name: 'Alice' });
    const mitm = await interceptSocket(alice.page, server.wsUrl);
    await generateKey(alice);
    await enterChat(alice);
    const firstLink = await alice.page.locator('#invite-link').textContent();

    /** `name` opens `link`, makes a key and sends the request the invite step offers; the server forwards its proof. */
    async function requestThrough(name, link, change = (frame) => frame) {
      const user = await openUser(browser, server, { name, hash: new URL(link).hash });
      await generateKey(user);
      await enterChat(user);
      const proof = proofFor(link, user.fingerprint, alice.fingerprint);
      const forwarded = mitm.rewriteOnce((frame) => frame.type === 'FRIEND_REQUEST' && frame.from === user.id,
        (frame) => change({ ...frame, invite: proof }));
      await user.page.locator('.invite-step').getByRole('button', { name: 'Send friend request' }).click();
      await forwarded;
      const sent = jsonFrames(user).find((f) => f.direction === 'sent' && f.json.type === 'FRIEND_REQUEST').json;
      assert.equal(sent.invite, proof, `${name}'s page sent the proof`);
      return user;
    }

    const bob = await requestThrough('Bob', firstLink);
    const card = alice.page.locator(`.request-card[data-request="${bob.id}"]`);
    await card.locator('[data-via-invite="true"]').waitFor();
    assert.match(await card.locator('.request-via-invite').textContent(), /Came through your invite link/);
    await screenshot(alice.page, 'request-via-invite-desktop');
    await card.getByRole('button', { name: `Accept friend request from ${bob.id}` }).click();
    await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.trust === 'verified', bob.id);
    await pane(alice, bob.id).getByText(/They came through your invite link: key verified/).waitFor({ state: 'attached' });
    // Used once: the link now carries another secret.
    await alice.page.waitForFunction((old) => {
      const now = document.querySelector('#invite-link')?.textContent || '';
      return now.includes('&k=') && now !== old;
    }, firstLink);
    const newLink = await alice.page.locator('#invite-link').textContent();

    // Carol opens the *old* link: its secret is used up, so her proof counts for nothing.
    const carol = await requestThrough('Carol', firstLink);
    await alice.page.locator(`.request-card[data-request="${carol.id}"] [data-via-invite="false"]`).waitFor();

    // Dave opens the new link, but the server swaps his key and forwards his proof: it does not fit that key.
    const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Dave' }], format: 'armored' });
    const dave = await requestThrough('Dave', newLink, (frame) => ({ ...frame, public_key: publicKey }));
    await alice.page.locator(`.request-card[data-request="${dave.id}"] [data-via-invite="false"]`).waitFor();
    for (const user of [alice, bob, carol, dave]) {
      await assertClean(user);
      await user.context.close();
    }
  });
});

/** The proof PROTOCOL.md §9 defines, for the secret in `link`, computed here independently of the page. */
function proofFor(link, requesterFingerprint, inviterFingerprint) {
  const secret = new URLSearchParams(new URL(link).hash.slice(1)).get('k');
  return createHmac('sha256', Buffer.from(secret, 'base64url'))
    .update(`secchat-invite-v1\n${requesterFingerprint}\n${inviterFingerprint}`).digest('base64url');
}

describe('names, not codes', { timeout: 90000 }, () => {
  test('a friend shows as the name on their key (marked), the user can give a nickname, and a crafted name is cleaned, bounded and flagged when it copies another', async () => {
    const alice = await newChatUser(browser, server, { name: 'Alice' });
    const bob = await newChatUser(browser, server, { name: 'Bob' });
    await befriend(bob, alice);
    const bobItem = alice.page.locator(`.friend[data-friend="${bob.id}"]`);
    assert.equal(await bobItem.locator('.friend-name').getAttribute('data-name-kind'), 'key');
    // Its accessible name is what it shows, with the words behind the marks.
    assert.match((await bobItem.textContent()).replace(/\s+/g, ' '), new RegExp(`^~Bob \\(name on their key, chosen by its owner\\)${bob.id}\\? ?unverified ?online`));

    // A nickname, set on a phone through the header's details.
    await openChat(alice, bob.id);
    await alice.page.setViewportSize(PHONE);
    const chat = pane(alice, bob.id);
    await chat.getByRole('button', { name: `Details of the chat with ${bob.id}` }).click();
    await chat.getByLabel('Your name for them (only you see it)').fill('Bobby');
    await chat.getByRole('button', { name: `Save your name for ${bob.id}` }).click();
    await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"] .friend-name`)?.dataset.nameKind === 'nickname', bob.id);
    assert.equal(await bobItem.locator('.friend-name').textContent(), 'Bobby');
    assert.equal(await chat.locator('.chat-title .friend-name').textContent(), 'Bobby');

    // A stranger's key claims "Bobby", with a right-to-left override, a zero-width space and a check mark
    // (firstrun.unit.test.mjs covers every stripped character and the length bound).
    const crafted = '\u202EBob\u200Bby ✔';
    const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: crafted }], format: 'armored' });
    const mallory = await RawClient.connect(server.wsUrl);
    mallory.send({ type: 'FRIEND_REQUEST', to: alice.id, public_key: publicKey, ref: 'r' });
    const card = alice.page.locator(`.request-card[data-request="${mallory.id}"]`);
    await card.waitFor();
    const shownName = (await card.locator('.key-name').textContent()).replace('Name on their key (chosen by its owner, not checked): ', '');
    assert.equal(shownName, 'Bobby');
    await card.getByRole('button', { name: `Accept friend request from ${mallory.id}` }).click();
    const malloryItem = alice.page.locator(`.friend[data-friend="${mallory.id}"]`);
    await malloryItem.waitFor({ state: 'attached' });
    // The crafted name cannot take Bob's nickname: it is marked as the key's, the ID is beside it, and it is flagged.
    assert.equal(await malloryItem.locator('.friend-name').getAttribute('data-name-kind'), 'key');
    await alice.page.locator(`.friend[data-friend="${mallory.id}"] .name-clash`).waitFor({ state: 'attached' });
    // Bobby stays the only nickname; giving it to Mallory as well is refused.
    await alice.page.setViewportSize(DESKTOP); // the details are always open there
    await openChat(alice, mallory.id);
    const malloryChat = pane(alice, mallory.id);
    await malloryChat.getByLabel('Your name for them (only you see it)').fill('bobby');
    await malloryChat.getByRole('button', { name: `Save your name for ${mallory.id}` }).click();
    await malloryChat.getByText(`You already call ${bob.id} "bobby".`).waitFor();
    // Nothing in the name can look like the page's own verified state: the badge says unverified.
    assert.equal(await malloryItem.getAttribute('data-trust'), 'unverified');
    assert.equal(await malloryItem.locator('.trust-badge').textContent(), '?');
    await screenshot(alice.page, 'names-desktop');
    await assertClean(alice);
    mallory.socket.close();
    await alice.context.close();
    await bob.context.close();
  });
});

describe('the start screen, the ID and sharing', { timeout: 90000 }, () => {
  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: the ID is explained where it is shown, the invite link is preferred, and its QR code decodes to the link`, async () => {
      const alice = await newChatUser(browser, server, { name: 'Alice', viewport });
      const welcome = alice.page.locator('.welcome');
      await assertInView(alice.page, welcome.getByRole('heading', { name: 'Start a conversation' }), 'the start screen');
      assert.match(await welcome.textContent(), /changes every time you open SecChat/);
      assert.match(await welcome.textContent(), /checks your key by itself/);
      assert.doesNotMatch(await alice.page.locator('#chat-area').textContent(), /on the left|No conversation open/);
      const link = await welcome.locator('#welcome-invite-link').textContent();
      await welcome.getByRole('button', { name: 'Show QR code' }).click();
      const canvas = welcome.getByRole('img', { name: 'QR code of your invite link' });
      await canvas.waitFor();
      const image = await canvas.evaluate((element) => {
        const { width, height } = element;
        return { width, height, data: [...element.getContext('2d').getImageData(0, 0, width, height).data] };
      });
      assert.equal(decodeQR({ width: image.width, height: image.height, data: Uint8Array.from(image.data) }), link);
      await assertInView(alice.page, canvas, 'the QR code');
      await screenshot(alice.page, `qr-${size}`);
      await assertAccessible(alice.page, `the start screen with the QR code at ${size} size`);
      await assertClean(alice);
      await alice.context.close();
    });
  }

  test('Share… hands the invite link to the Web Share API where the browser has one, and is absent where it has none', async () => {
    const plain = await newChatUser(browser, server, { name: 'NoShare' });
    const hasShare = await plain.page.evaluate(() => typeof navigator.share === 'function');
    assert.equal(await plain.page.getByRole('button', { name: 'Share your invite link' }).count(), hasShare ? 2 : 0);
    await plain.context.close();

    const context = await browser.newContext({ viewport: PHONE });
    await context.addInitScript(() => {
      window.__shared = [];
      Object.defineProperty(navigator, 'share', { configurable: true, value: async (data) => { window.__shared.push(data); } });
    });
    const page = await context.newPage();
    await page.goto(server.url);
    const user = { page, context, name: 'Sharer', frames: [], problems: [] };
    await generateKey(user);
    await enterChat(user);
    const link = await page.locator('#welcome-invite-link').textContent();
    await page.locator('.welcome').getByRole('button', { name: 'Share your invite link' }).click();
    await page.waitForFunction(() => window.__shared.length === 1);
    assert.deepEqual(await page.evaluate(() => window.__shared[0]), { title: 'Chat with me on SecChat', url: link });
    await context.close();
  });
});

describe('the phone chat header', { timeout: 90000 }, () => {
  test('is one line at 360 px, with the fingerprint and actions on demand', async () => {
    const alice = await newChatUser(browser, server, { name: 'Alice' });
    const bob = await newChatUser(browser, server, { name: 'Bob' });
    await befriend(bob, alice);
    await openChat(alice, bob.id);
    await alice.page.setViewportSize(PHONE);
    const chat = pane(alice, bob.id);
    const head = chat.locator('.chat-head');
    const height = await head.evaluate((element) => element.getBoundingClientRect().height);
    console.log(`# chat header at 360 px: ${Math.round(height)} px`);
    assert.ok(height <= 64, `the header is ${height} px tall`);
    assert.equal(await chat.locator('.chat-head [data-fingerprint]').isVisible(), false);
    const toggle = chat.getByRole('button', { name: `Details of the chat with ${bob.id}` });
    assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
    await toggle.click();
    assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
    await chat.locator('.chat-head [data-fingerprint]').waitFor({ state: 'visible' });
    await chat.getByRole('button', { name: 'Verify fingerprint…' }).waitFor({ state: 'visible' });
    await screenshot(alice.page, 'chat-details-phone');
    await toggle.click();
    await chat.locator('.chat-head [data-fingerprint]').waitFor({ state: 'hidden' });
    // At desktop width the details are always shown, without a toggle.
    await alice.page.setViewportSize(DESKTOP);
    await chat.locator('.chat-head [data-fingerprint]').waitFor({ state: 'visible' });
    assert.equal(await toggle.isVisible(), false);
    await assertClean(alice);
    await alice.context.close();
    await bob.context.close();
  });
});

describe('leaving by accident', { timeout: 90000 }, () => {
  let shortServer;
  before(async () => { shortServer = await startServer(['--resume-grace', '3']); });
  after(async () => { await shortServer?.stop(); });

  test('closing the page asks first while a friendship is live, and not before', async () => {
    const lonely = await newChatUser(browser, shortServer, { name: 'Lonely' });
    lonely.page.removeAllListeners('dialog');
    let asked = 0;
    lonely.page.on('dialog', (dialog) => { asked += 1; dialog.accept(); });
    const closed = new Promise((resolve) => lonely.page.once('close', resolve));
    await lonely.page.close({ runBeforeUnload: true });
    await closed;
    assert.equal(asked, 0, 'no friendship, nothing to lose: no question');
    await lonely.context.close();

    const alice = await newChatUser(browser, shortServer, { name: 'Alice' });
    const bob = await newChatUser(browser, shortServer, { name: 'Bob' });
    await befriend(bob, alice);
    alice.page.removeAllListeners('dialog');
    const dialog = new Promise((resolve) => alice.page.once('dialog', resolve));
    await alice.page.close({ runBeforeUnload: true });
    const shown = await dialog;
    assert.equal(shown.type(), 'beforeunload');
    await shown.dismiss(); // "stay": the page and the friendship remain
    assert.equal(alice.page.isClosed(), false);
    await alice.page.locator('#conn-status[data-status="online"]').waitFor();
    await alice.context.close();
    await bob.context.close();
  });

  test('a friend whose page closed "went offline" first; only when the server stops waiting is their session over', async () => {
    const alice = await newChatUser(browser, shortServer, { name: 'Alice' });
    const bob = await newChatUser(browser, shortServer, { name: 'Bob' });
    await befriend(bob, alice);
    await openChat(alice, bob.id);
    // On a §10 server the friendship becomes a contact (PROTOCOL §6): it outlives Bob's session. A message Bob's
    // connection took (an ACK without `queued`) is the last proof that he was reachable.
    for (const [user, other] of [[alice, bob], [bob, alice]]) {
      await user.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'true', other.id, { timeout: 15000 });
    }
    const clock = () => alice.page.evaluate(() => new Date().toTimeString().slice(0, 5));
    const before = await clock();
    await sendMessage(alice, bob.id, 'are you still there?');
    await incomingMessage(bob, alice.id, 'are you still there?');
    await alice.page.waitForFunction(() => [...document.querySelectorAll('.msg-out')].some((m) => m.textContent.includes('are you still there?') && m.dataset.state === 'delivered'), null, { timeout: 15000 });
    const reachableAt = new Set([before, await clock()]);
    const entry = alice.page.locator(`.friend[data-friend="${bob.id}"]`);
    await bob.context.close(); // the tab is gone; its session waits in the resume window
    const chat = pane(alice, bob.id);
    await alice.page.waitForFunction((id) => document.querySelector(`.chat-pane[data-friend="${id}"]`)?.dataset.presence === 'away', bob.id);
    assert.equal(await chat.locator('.presence-text').textContent(), 'went offline (may come back)');
    const offline = /^offline, last reachable (\d\d:\d\d)$/;
    await alice.page.waitForFunction((id) => /^offline, last reachable \d\d:\d\d$/.test(document.querySelector(`.friend[data-friend="${id}"] .presence-text`)?.textContent || ''), bob.id);
    const shown = (await entry.locator('.presence-text').textContent()).match(offline)[1];
    assert.ok(reachableAt.has(shown), `last reachable ${shown}, expected one of ${[...reachableAt]}`);
    assert.doesNotMatch(await chat.textContent(), /left SecChat|session ended/);
    await screenshot(alice.page, 'friend-offline-desktop');

    // The server stops waiting (DISCONNECT): Bob's session is over, said in so many words, but the contact is not:
    // he stays offline, last reachable as before, and what Alice writes now waits for him on the server.
    await chat.getByText(/session ended; the contact stays, and messages wait for them on the server/).waitFor({ timeout: 15000 });
    assert.equal(await chat.getAttribute('data-presence'), 'away');
    assert.equal(await chat.getAttribute('data-friendship'), 'friends');
    assert.equal(await entry.getAttribute('data-contact'), 'true');
    assert.equal(await entry.locator('.presence-text').textContent(), `offline, last reachable ${shown}`);
    assert.doesNotMatch(await chat.textContent(), /this friendship has ended/);
    assert.equal(await chat.locator('textarea').isEditable(), true);
    await sendMessage(alice, bob.id, 'for when you are back');
    await alice.page.waitForFunction(() => [...document.querySelectorAll('.msg-out')].some((m) => m.textContent.includes('for when you are back') && m.dataset.state === 'stored'), null, { timeout: 15000 });
    await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"] .presence-text`)?.textContent.endsWith('· 1 waiting'), bob.id);
    await assertClean(alice);
    await alice.context.close();
  });
});

describe('keyboard only', { timeout: 120000 }, () => {
  /** Presses Tab until the focused element matches `selector`; fails after `max` presses. */
  async function tabTo(page, selector, max = 60) {
    for (let i = 0; i < max; i += 1) {
      if (await page.evaluate((s) => document.activeElement?.matches(s) === true, selector)) return;
      await page.keyboard.press('Tab');
    }
    assert.fail(`${selector} was not reached with Tab`);
  }

  for (const [size, viewport] of SIZES) {
    test(`at ${size} size: key creation, adding a friend, accepting and sending a message without a mouse`, async () => {
      const kim = await openUser(browser, server, { name: 'Kim', viewport });
      const { page } = kim;
      await assertAccessible(page, `the key screen at ${size} size`);
      // Both tabs are Tab stops: the import tab is reached without arrow keys.
      await tabTo(page, '#tab-import');
      await page.keyboard.press('Enter');
      await page.locator('#panel-import').waitFor({ state: 'visible' });
      await page.keyboard.press('Shift+Tab');
      await page.keyboard.press('Enter');
      await page.locator('#panel-generate').waitFor({ state: 'visible' });
      await tabTo(page, '#gen-name');
      await page.keyboard.type('Kim');
      await page.keyboard.press('Tab');
      await page.keyboard.type('correct horse battery');
      await page.keyboard.press('Tab');
      await page.keyboard.type('correct horse battery');
      await page.keyboard.press('Enter');
      await page.locator('#enter-chat:focus').waitFor({ timeout: 15000 });
      await page.keyboard.press('Enter');
      await page.locator('#conn-status[data-status="online"]').waitFor();
      kim.id = (await page.locator('#topbar-id').textContent()).trim();
      await page.waitForFunction(() => /^[0-9A-Z]{6}$/.test(document.querySelector('#my-id')?.textContent || ''));
      kim.id = await page.locator('#my-id').textContent();

      // The first Tab stop is the skip link, and Leave is not among the first ten.
      // Start from the top of the document, as after loading the page.
      await page.evaluate(() => {
        document.body.tabIndex = -1;
        document.body.focus();
        document.body.removeAttribute('tabindex');
      });
      const stops = [];
      for (let i = 0; i < 10; i += 1) {
        await page.keyboard.press('Tab');
        stops.push(await page.evaluate(() => document.activeElement?.id || document.activeElement?.className || ''));
      }
      assert.equal(stops[0], 'skip-link', `first Tab stops: ${stops.join(', ')}`);
      // Leave comes after the everyday controls of the side panel, not first.
      assert.ok(stops.indexOf('leave') === -1 || stops.indexOf('leave') > stops.indexOf('add-friend-send'), `Tab stops: ${stops.join(', ')}`);
      await assertAccessible(page, `the main screen at ${size} size`);

      // Adding a friend: "Add a friend by ID" on the start screen takes the focus to the form (in the drawer on a phone).
      const lee = await newChatUser(browser, server, { name: 'Lee' });
      await tabTo(page, '#welcome-add');
      await page.keyboard.press('Enter');
      await page.locator('#add-friend-id:focus').waitFor();
      await page.keyboard.type(lee.id);
      await page.keyboard.press('Enter');
      await page.locator(`[data-sent="${lee.id}"]`).waitFor({ state: 'attached' });
      await lee.page.getByRole('button', { name: `Accept friend request from ${kim.id}` }).click();
      await page.locator(`.friend[data-friend="${lee.id}"]`).waitFor({ state: 'attached' });
      if (size === 'phone') {
        await page.keyboard.press('Escape');
        await page.waitForFunction(() => !document.body.classList.contains('drawer-open'));
      }

      // Accepting: Jo's request shows at the top of the main area; Tab reaches Accept.
      const jo = await newChatUser(browser, server, { name: 'Jo' });
      await jo.page.fill('#add-friend-id', kim.id);
      await jo.page.click('#add-friend-send');
      await page.locator(`.request-card[data-request="${jo.id}"]`).waitFor();
      await tabTo(page, `.request-card[data-request="${jo.id}"] button.btn-primary`);
      await page.keyboard.press('Enter');
      // Accepting opens the chat with the composer focused: type and Enter sends.
      await page.locator(`#composer-${jo.id}:focus`).waitFor();
      await assertAccessible(page, `a chat at ${size} size`);
      await page.keyboard.type('typed without a mouse');
      await page.keyboard.press('Enter');
      const received = await incomingMessage(jo, kim.id, 'typed without a mouse');
      assert.equal(await received.getAttribute('data-verified'), 'true');
      await assertClean(kim);
      for (const user of [kim, lee, jo]) await user.context.close();
    });
  }
});

describe('installable', { timeout: 60000 }, () => {
  test('the manifest is served as a web app manifest under the same CSP, parses, and its icons exist at their sizes', async () => {
    const response = await fetch(`${server.url}manifest.webmanifest`);
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/manifest+json');
    assert.match(response.headers.get('content-security-policy'), /manifest-src 'self'/);
    const manifest = await response.json();
    assert.equal(manifest.name, 'SecChat');
    assert.equal(manifest.display, 'standalone');
    assert.equal(manifest.start_url, './');
    const pngs = manifest.icons.filter((icon) => icon.type === 'image/png');
    assert.ok(pngs.some((icon) => icon.sizes === '192x192') && pngs.some((icon) => icon.sizes === '512x512'));
    for (const icon of manifest.icons) {
      const file = await fetch(new URL(icon.src, `${server.url}manifest.webmanifest`));
      assert.equal(file.status, 200, icon.src);
      assert.equal(file.headers.get('content-type'), icon.type, icon.src);
      const bytes = Buffer.from(await file.arrayBuffer());
      if (icon.type === 'image/png') {
        assert.equal(bytes.subarray(1, 4).toString(), 'PNG', icon.src);
        assert.equal(`${bytes.readUInt32BE(16)}x${bytes.readUInt32BE(20)}`, icon.sizes, `${icon.src} is not ${icon.sizes}`);
      } else {
        assert.match(bytes.toString(), /^<svg /);
      }
    }

    // Chromium itself finds the manifest through the page's <link rel="manifest"> and reads it without errors.
    const user = await openUser(browser, server, { name: 'Installer' });
    await user.page.locator('#generate').waitFor();
    const cdp = await user.context.newCDPSession(user.page);
    const { url, errors, data } = await cdp.send('Page.getAppManifest');
    assert.equal(url, `${server.url}manifest.webmanifest`);
    assert.deepEqual(errors, []);
    assert.equal(JSON.parse(data).short_name, 'SecChat');
    await assertClean(user);
    await user.context.close();
  });
});
