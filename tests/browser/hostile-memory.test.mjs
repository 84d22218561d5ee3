// A server that tries to exhaust the page's memory or queue it to death (SECURITY.md "What a crafted key or
// request costs the browser"): frames of any size, an announced message limit of any size, keys far over the
// size the server accepts (hundreds of them, refused), and thousands of MESSAGE frames "from" one friend.
// Alice's socket runs through a man in the middle (helpers/mitm.mjs).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, befriend, enterChat, generateKey, incomingMessage, launchBrowser, newChatUser, openChat, openUser, pane,
  sendMessage,
} from './helpers/browser.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { startServer } from './helpers/server.mjs';

const DEFAULT_CEILING = 2 * 65536 + 1024; // frames read at most with the default limit (transport.js frameCeiling)
const CLAMPED_CEILING = 1048576 + 1024; // ...with any announced limit of 1 MiB or more

let server;
let browser;
let alice;
let mitm;
let bob;
const warnings = [];

/** Waits until `user`'s outgoing message holding `text` is delivered (for a contact: its receipt arrived). */
async function waitForOutgoingDelivered(user, friendId, text) {
  await user.page.waitForFunction(([id, wanted]) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
    .some((m) => m.textContent.includes(wanted) && m.dataset.state === 'delivered'), [friendId, text], { timeout: 30000 });
}

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  alice = await openUser(browser, server, { name: 'Alice' });
  alice.page.on('console', (message) => {
    if (message.type() === 'warning') warnings.push(message.text());
  });
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
/** A "public key" of `length` characters, unique per `tag`: far over the 16,384 bytes the server accepts. */
const fakeKey = (tag, length) => `-----BEGIN PGP PUBLIC KEY BLOCK-----\n${tag}\n${'A'.repeat(length)}\n-----END PGP PUBLIC KEY BLOCK-----\n`;
const card = (id) => alice.page.locator(`.request-card[data-request="${id}"]`);
/** Pending requests: the cards drawn (at most 20) and "…and N more requests." */
const pendingRequests = () => alice.page.evaluate(() => document.querySelectorAll('.request-card').length
  + Number(/and (\d+) more/.exec(document.querySelector('.request-more')?.textContent || '')?.[1] || 0));

/** Records, in the page, the longest `armored` text posted to any crypto worker from now on. */
async function watchWorkerPosts() {
  await alice.page.evaluate(() => {
    if (window.__longestArmored !== undefined) return;
    window.__longestArmored = 0;
    const post = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function watched(message, ...rest) {
      const armored = message && message.args && message.args.armored;
      if (typeof armored === 'string') window.__longestArmored = Math.max(window.__longestArmored, armored.length);
      return post.call(this, message, ...rest);
    };
  });
}

/** The page's JavaScript heap in use after a full garbage collection, in bytes. */
async function heapAfterGc(cdp) {
  await cdp.send('HeapProfiler.collectGarbage');
  await cdp.send('HeapProfiler.collectGarbage');
  return (await cdp.send('Runtime.getHeapUsage')).usedSize;
}

describe('a server exhausting memory', { timeout: 120000 }, () => {
  test('a frame longer than the client reads is dropped unparsed and logged once; the next frame is read', async () => {
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'B1GFR1', public_key: fakeKey('one', DEFAULT_CEILING) });
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'B1GFR2', public_key: fakeKey('two', 3 * 1024 * 1024) });
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'SMA111', public_key: 'not a key' });
    await card('SMA111').waitFor();
    assert.equal(await card('B1GFR1').count(), 0, 'a frame over the ceiling was read');
    assert.equal(await card('B1GFR2').count(), 0, 'a frame over the ceiling was read');
    const dropped = warnings.filter((text) => /dropped a server frame/.test(text));
    assert.equal(dropped.length, 1, `logged once: ${JSON.stringify(dropped)}`);
    assert.match(dropped[0], /dropped a server frame of 132,\d{3} characters unread \(the most it reads is 132,096\)/);
    // Just under the ceiling is read as usual (and its key refused for its size).
    const justUnder = fakeKey('three', DEFAULT_CEILING - 20000);
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'VNDER1', public_key: justUnder });
    await card('VNDER1').waitFor();
    assert.match(await card('VNDER1').locator('.request-refused').textContent(), /This key is 11\d,\d{3} bytes; SecChat accepts keys of at most 16,384 bytes\./);
    await card('SMA111').getByRole('button', { name: 'Decline friend request from SMA111' }).click();
    await card('SMA111').waitFor({ state: 'detached' });
  });

  test('keys over the size limit are refused on the page\'s thread, never posted to the worker, and not kept', async () => {
    await watchWorkerPosts();
    const cdp = await alice.context.newCDPSession(alice.page);
    const heapBefore = await heapAfterGc(cdp);
    const before = await pendingRequests();
    const count = 150;
    const length = 100000; // 15 MB of key text in all
    for (let i = 0; i < count; i += 1) {
      mitm.inject({ type: 'FRIEND_REQUEST', from: `M${String(i).padStart(5, '0')}`, public_key: fakeKey(`key ${i}`, length) });
    }
    for (let waited = 0; (await pendingRequests()) < before + count && waited < 20000; waited += 100) await sleep(100);
    assert.equal(await pendingRequests(), before + count);
    assert.match(await card('M00000').locator('.request-refused').textContent(), /This key is 100,\d{3} bytes/);
    const grown = (await heapAfterGc(cdp)) - heapBefore;
    assert.ok(grown < (count * length) / 3, `the page holds ${grown} more bytes after ${count} refused keys of ${length} characters`);
    assert.equal(await alice.page.evaluate(() => window.__longestArmored), 0, 'an oversized key was posted to the worker');
    await cdp.detach();
  });

  test('an announced max_message_bytes over 1 MiB is clamped: frames over 1 MiB + 1024 are still dropped', async () => {
    const announced = mitm.rewriteOnce((frame) => frame.type === 'CONNECT',
      (frame) => ({ ...frame, limits: { max_message_bytes: 16 * 1024 * 1024 } }));
    mitm.closePage();
    assert.equal((await announced).limits.max_message_bytes, 16 * 1024 * 1024);
    await alice.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 15000 });
    const before = await pendingRequests();
    // The ceiling follows the (clamped) limit: half a megabyte is read now...
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'HA1FMB', public_key: fakeKey('half', 500000) });
    // ...but not more than the clamp allows, whatever the server announced.
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'QVER1M', public_key: fakeKey('over', CLAMPED_CEILING) });
    mitm.inject({ type: 'FRIEND_REQUEST', from: 'SMA112', public_key: 'not a key' });
    // HA1FMB and SMA112 (checked last, in the worker): QVER1M was not read.
    for (let waited = 0; (await pendingRequests()) < before + 2 && waited < 10000; waited += 100) await sleep(100);
    await sleep(500);
    assert.equal(await pendingRequests(), before + 2);
    assert.equal(await alice.page.evaluate(() => window.__longestArmored), 'not a key'.length, 'an oversized key was posted to the worker');
    // The composer follows the clamped limit, not the announced one: (1 MiB - 1024 - 4096) / (4/3 x 62/60).
    await openChat(alice, bob.id);
    const input = pane(alice, bob.id).locator('textarea');
    await input.fill('x'.repeat(1000000));
    await pane(alice, bob.id).locator('.composer-note', { hasText: /Too long to send: 1000\.0 KB, at most 757\.3 KB/ }).waitFor();
    await input.fill('');
    await sendMessage(alice, bob.id, 'still fine');
    await incomingMessage(bob, alice.id, 'still fine');
  });
});

describe('a server flooding one friend\'s queue', { timeout: 120000 }, () => {
  test('frames "from" one friend beyond 256 waiting are dropped with a notice in that chat; the friend\'s real message still arrives', async () => {
    // Bob is Alice's contact by now: his messages come to her rendezvous handle (PROTOCOL §10), with no `from`.
    // The handle says which contact a frame is for, and frames for one contact share that contact's bound
    // (peerqueue.js), exactly as frames "from" one session ID do.
    await alice.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'true', bob.id, { timeout: 15000 });
    await bob.page.waitForFunction((id) => document.querySelector(`.friend[data-friend="${id}"]`)?.dataset.contact === 'true', alice.id, { timeout: 15000 });
    const bobSent = bob.frames.length;
    await sendMessage(bob, alice.id, 'the one to copy');
    await incomingMessage(alice, bob.id, 'the one to copy');
    const textFrame = bob.frames.slice(bobSent).map((f) => JSON.parse(f.text))
      .find((f) => f.type === 'MESSAGE' && /^m/.test(f.ref) && typeof f.handle === 'string');
    assert.ok(textFrame, 'Bob\'s message went to Alice\'s handle');
    const recorded = mitm.received('MESSAGE').find((f) => f.handle === textFrame.handle && f.payload === textFrame.payload);
    assert.ok(recorded && !('from' in recorded), 'forwarded to her handle as sent, without a sender');
    await alice.page.waitForFunction(() => [...document.querySelectorAll('.msg-in')].some((m) => m.textContent.includes('the one to copy')));
    // Alice's message worker takes its time: jobs to open a payload wait until the test lets them go (within
    // the 5 s budget), as a payload crafted to be slow would.
    await alice.page.evaluate(() => {
      window.__held = [];
      window.__hold = true;
      const post = Worker.prototype.postMessage;
      window.__releaseHeld = () => {
        window.__hold = false;
        for (const [worker, message] of window.__held.splice(0)) post.call(worker, message);
      };
      Worker.prototype.postMessage = function held(message, ...rest) {
        if (window.__hold && message && message.op === 'open') window.__held.push([this, message]);
        else post.call(this, message, ...rest);
      };
    });
    const shownBefore = await pane(alice, bob.id).locator('.msg-in').count();
    const aliceSentBefore = mitm.fromPage.length;
    const copies = 400;
    for (let i = 0; i < copies; i += 1) mitm.inject(recorded);
    const lines = pane(alice, bob.id).locator('.msg-system-warn', { hasText: /from the server were dropped: too many waiting/ });
    await lines.first().waitFor({ state: 'attached', timeout: 5000 });
    await alice.page.evaluate(() => window.__releaseHeld());
    // One running and 255 waiting were kept; the rest are counted, in one line or a few (rate-limited).
    const droppedSoFar = async () => (await lines.allTextContents()).reduce((sum, text) => sum + Number(/^(\d+) messages/.exec(text)[1]), 0);
    for (let waited = 0; (await droppedSoFar()) < copies - 256 && waited < 15000; waited += 250) await sleep(250);
    assert.equal(await droppedSoFar(), copies - 256);
    assert.ok((await lines.count()) <= 2, 'the notice is rate-limited');

    await sendMessage(bob, alice.id, 'the real one after the flood');
    const real = await incomingMessage(alice, bob.id, 'the real one after the flood', 30000);
    assert.equal(await real.getAttribute('data-verified'), 'true');
    assert.equal(await real.getAttribute('data-seq'), String(Number(await (await incomingMessage(alice, bob.id, 'the one to copy')).getAttribute('data-seq')) + 1));
    // Every kept copy was checked: to a handle, a copy of a message accepted before is a duplicate, shown once
    // (no line of its own, no REPLAY alarm) and answered with its receipt again. The receipts waiting for their
    // turn are one envelope, so 256 copies do not queue 256 receipts.
    assert.equal(await pane(alice, bob.id).locator('.msg-in').count(), shownBefore + 1);
    assert.equal(await pane(alice, bob.id).locator('.msg-in', { hasText: 'the one to copy' }).count(), 1);
    assert.equal(await pane(alice, bob.id).locator('.msg-in[data-problems~="replay"]').count(), 0);
    await waitForOutgoingDelivered(bob, alice.id, 'the real one after the flood');
    await sleep(1000); // receipts still waiting for their turn (one per 50 ms) go out
    const receipts = mitm.fromPage.slice(aliceSentBefore).filter((f) => f.type === 'MESSAGE' && typeof f.handle === 'string');
    assert.ok(receipts.length >= 2, `receipts went out (${receipts.length})`);
    assert.ok(receipts.length < 64, `${receipts.length} receipts for 256 copies: they are merged while they wait`);
    await assertClean(alice);
  });
});
