// The web client against a cluster (PROTOCOL §12, DEPLOY §4): two `secchat` nodes sharing one real
// redis-server. Alice's page is served by node A; Bob's (and Carol's) by a load balancer in front of node B then
// node A, so their page keeps its origin and storage while the node behind it changes, as behind a real
// balancer. Friends made across nodes chat both ways by handle; when node B shuts down, Bob's page reconnects
// through node A, keeps its session, and the conversation goes on with nothing lost or doubled, also for what
// either side wrote while Bob had no node; a group spread over both nodes reaches everyone.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import {
  DESKTOP, PHONE, assertClean, assertWireIsOpaque, befriend, incomingMessage, jsonFrames, newChatUser, pane, problemsOf,
  screenshot, sendMessage,
} from './helpers/browser.mjs';
import { startBalancer, startRedis, waitForClusterLinks } from './helpers/cluster.mjs';
import { browserWithServers } from './helpers/harness.mjs';

const harness = browserWithServers();
const cleanups = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/**
 * A redis-server, nodes A and B joined to it (both links up), and a balancer that sends new connections to B,
 * or to A while B refuses them.
 */
async function startCluster() {
  const redis = await startRedis();
  cleanups.push(redis.stop);
  const a = await harness.server(['--cluster', redis.url]);
  const b = await harness.server(['--cluster', redis.url]);
  await waitForClusterLinks(a);
  await waitForClusterLinks(b);
  const balancer = await startBalancer([b.port, a.port]);
  cleanups.push(balancer.close);
  return { redis, a, b, balancer };
}

/** Polls `condition()` until it is true (a wait, not an assertion); fails naming `what` after `timeout` ms. */
async function until(condition, what, timeout = 20000) {
  const deadline = Date.now() + timeout;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Both sides became contacts: messages now go to rendezvous handles (PROTOCOL §10). */
async function waitForContact(user, friendKey) {
  await user.page.waitForFunction((key) => document.querySelector(`.friend[data-friend="${key}"]`)?.dataset.contact === 'true', friendKey, { timeout: 20000 });
}

async function waitForOutgoing(user, friendId, text, state, timeout = 20000) {
  await user.page.waitForFunction(([id, t, s]) => [...document.querySelectorAll(`.chat-pane[data-friend="${id}"] .msg-out`)]
    .some((m) => m.querySelector('.msg-text')?.textContent === t && m.dataset.state === s), [friendId, text, state], { timeout });
}

async function waitForPresence(user, friendId, presence, timeout = 20000) {
  await user.page.waitForFunction(([id, wanted]) => document.querySelector(`.friend[data-friend="${id}"]`)?.className.includes(`presence-${wanted}`),
    [friendId, presence], { timeout });
}

/** Reads `text` from `from` in `user`'s chat with `from`: verified, under `from`'s key name. */
async function assertReceived(user, from, text) {
  const line = await incomingMessage(user, from.id, text, 20000);
  assert.equal(await line.getAttribute('data-verified'), 'true', `${user.name} reads "${text}" as verified`);
  assert.equal(await line.getAttribute('data-problems'), '', `${user.name} sees no problem on "${text}"`);
  assert.equal(await line.locator('.msg-who').textContent(), `~${from.name}`);
}

/** The conversation in `user`'s pane with `friendId`, in page order: [direction, text, state]. */
function conversation(user, friendId) {
  return pane(user, friendId).locator('.msg-in, .msg-out').evaluateAll((lines) => lines.map((m) => [
    m.classList.contains('msg-out') ? 'out' : 'in',
    m.querySelector('.msg-text')?.textContent,
    m.classList.contains('msg-out') ? m.dataset.state : m.dataset.verified,
  ]));
}

describe('two nodes sharing one Redis', { timeout: 180000 }, () => {
  test('friends on two nodes chat both ways; Bob\'s node shuts down, his page resumes through the other node and the chat goes on, nothing lost or doubled', async () => {
    const { a, b, balancer } = await startCluster();
    const alice = await newChatUser(harness.browser, a, { name: 'Alice' });
    const bob = await newChatUser(harness.browser, balancer, { name: 'Bob' });
    assert.deepEqual(balancer.webSocketBackends(), [b.port], 'Bob\'s page is on node B');

    // A request and its acceptance between the nodes; then the rendezvous secrets, sent as messages by ID.
    await befriend(bob, alice);
    await waitForContact(alice, bob.id);
    await waitForContact(bob, alice.id);

    await sendMessage(alice, bob.id, 'hello from node A');
    await assertReceived(bob, alice, 'hello from node A');
    await waitForOutgoing(alice, bob.id, 'hello from node A', 'delivered');
    await sendMessage(bob, alice.id, 'hello back from node B');
    await assertReceived(alice, bob, 'hello back from node B');
    await waitForOutgoing(bob, alice.id, 'hello back from node B', 'delivered');
    // Both went by handle: a MESSAGE to a handle whose listener is on the other node.
    for (const user of [alice, bob]) {
      assert.ok(jsonFrames(user).some((f) => f.direction === 'sent' && f.json.type === 'MESSAGE' && typeof f.json.handle === 'string'),
        `${user.name} sent to a handle`);
    }

    // Node B shuts down (SIGTERM: every WebSocket closed with 1001). The balancer now only reaches node A.
    const bobId = bob.id;
    const framesBefore = bob.frames.length;
    await b.stop();
    const bobLater = () => jsonFrames({ frames: bob.frames.slice(framesBefore) });
    await until(() => bobLater().some((f) => f.direction === 'received' && f.json.type === 'CONNECT'), 'Bob\'s page to connect again');
    const reply = bobLater().find((f) => f.direction === 'received' && f.json.type === 'CONNECT').json;
    const resume = bobLater().find((f) => f.direction === 'sent' && f.json.type === 'CONNECT');
    assert.deepEqual(resume.json.resume?.id, bobId, 'the page asked to resume its session');
    assert.equal(reply.resumed, true, `the session was adopted by node A: ${JSON.stringify({ ...reply, token: '…' })}`);
    assert.equal(reply.id, bobId);
    assert.deepEqual(balancer.webSocketBackends(), [b.port, a.port], 'Bob\'s page reconnected through node A');
    await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 20000 });
    assert.equal(await bob.page.textContent('#my-id'), bobId, 'same ID after moving to node A');
    await waitForPresence(bob, alice.id, 'online');
    await waitForPresence(alice, bobId, 'online');

    // The rest at phone size on Bob's side: the pane through the drawer, as a phone user reads it.
    await bob.page.setViewportSize(PHONE);
    await sendMessage(alice, bobId, 'still there, Bob?');
    await assertReceived(bob, alice, 'still there, Bob?');
    await waitForOutgoing(alice, bobId, 'still there, Bob?', 'delivered');
    await bob.page.click('.drawer-toggle');
    await sendMessage(bob, alice.id, 'yes, now through node A');
    await assertReceived(alice, bob, 'yes, now through node A');
    await waitForOutgoing(bob, alice.id, 'yes, now through node A', 'delivered');
    await assert.doesNotReject(pane(bob, alice.id).locator('.msg-in', { hasText: 'still there, Bob?' }).waitFor({ state: 'visible', timeout: 5000 }),
      'at 360 px the message is on screen in Bob\'s open chat');
    await screenshot(bob.page, `cluster-resumed-${PHONE.width}`);
    await bob.page.setViewportSize(DESKTOP);

    // Each side's conversation: every message once, in order, verified or delivered.
    const expected = ['hello from node A', 'hello back from node B', 'still there, Bob?', 'yes, now through node A'];
    assert.deepEqual(await conversation(alice, bobId), [
      ['out', expected[0], 'delivered'], ['in', expected[1], 'true'], ['out', expected[2], 'delivered'], ['in', expected[3], 'true'],
    ]);
    assert.deepEqual(await conversation(bob, alice.id), [
      ['in', expected[0], 'true'], ['out', expected[1], 'delivered'], ['in', expected[2], 'true'], ['out', expected[3], 'delivered'],
    ]);
    // No new friend request: the friendship came along with the session.
    assert.equal(bobLater().filter((f) => f.direction === 'sent' && f.json.type === 'FRIEND_REQUEST').length, 0);
    for (const user of [alice, bob]) assertWireIsOpaque(user, expected);
    await screenshot(alice.page, `cluster-alice-${DESKTOP.width}`);
    await assertClean(alice);
    await assertClean(bob);
    await alice.context.close();
    await bob.context.close();
  });

  test('written while Bob\'s node is down and his page cannot reconnect yet: both messages arrive once he is back through node A, once each', async (t) => {
    const { a, b, balancer } = await startCluster();
    const alice = await newChatUser(harness.browser, a, { name: 'Alice' });
    const bob = await newChatUser(harness.browser, balancer, { name: 'Bob' });
    await befriend(bob, alice);
    await waitForContact(alice, bob.id);
    await waitForContact(bob, alice.id);
    await sendMessage(alice, bob.id, 'before the outage');
    await assertReceived(bob, alice, 'before the outage');
    await waitForOutgoing(alice, bob.id, 'before the outage', 'delivered');

    // Node B shuts down while the balancer has no node to offer: Bob's page retries and fails.
    const bobId = bob.id;
    const aliceFrom = alice.frames.length;
    balancer.refusing = true;
    await b.stop();
    await bob.page.waitForFunction(() => ['reconnecting', 'offline'].includes(document.querySelector('#conn-status')?.dataset.status), null, { timeout: 10000 });
    await sendMessage(bob, alice.id, 'typed while my node was down');
    assert.equal(await pane(bob, alice.id).locator('.msg-out', { hasText: 'typed while my node was down' }).getAttribute('data-state'), 'waiting');
    await sendMessage(alice, bobId, 'sent while your node was down');
    // The server's first answer to Alice's upload: the letter kept for Bob's handle, or `unavailable` (retried).
    const aliceLater = () => jsonFrames({ frames: alice.frames.slice(aliceFrom) });
    const upload = () => aliceLater().find((f) => f.direction === 'sent' && f.json.type === 'MESSAGE');
    await until(() => upload() && aliceLater().some((f) => f.direction === 'received' && f.json.ref === upload().json.ref), 'an answer to Alice\'s message');
    const answers = aliceLater().filter((f) => f.direction === 'received' && ['ACK', 'ERROR', 'UNDELIVERED'].includes(f.json.type)).map((f) => f.text);
    t.diagnostic(`answers to Alice while Bob's node was down: ${answers.join(' ')}`);
    // And Bob's page has tried to come back at least once, and been turned away.
    await until(() => balancer.refused > 0, 'Bob\'s page to try to reconnect');

    balancer.refusing = false;
    await bob.page.waitForFunction(() => document.querySelector('#conn-status')?.dataset.status === 'online', null, { timeout: 30000 });
    assert.equal(await bob.page.textContent('#my-id'), bobId, 'same ID after moving to node A');
    assert.deepEqual(balancer.webSocketBackends(), [b.port, a.port], 'Bob\'s page reconnected through node A');
    await assertReceived(bob, alice, 'sent while your node was down');
    await assertReceived(alice, bob, 'typed while my node was down');
    await waitForOutgoing(alice, bobId, 'sent while your node was down', 'delivered', 40000);
    await waitForOutgoing(bob, alice.id, 'typed while my node was down', 'delivered');
    // After the resends: every message once, in the order each side wrote or received it.
    const aliceSees = await conversation(alice, bobId);
    const bobSees = await conversation(bob, alice.id);
    assert.deepEqual(aliceSees.filter(([, text]) => text !== 'typed while my node was down'), [
      ['out', 'before the outage', 'delivered'], ['out', 'sent while your node was down', 'delivered'],
    ]);
    assert.deepEqual(aliceSees.filter(([, text]) => text === 'typed while my node was down'), [['in', 'typed while my node was down', 'true']]);
    assert.deepEqual(bobSees.filter(([, text]) => text !== 'typed while my node was down'), [
      ['in', 'before the outage', 'true'], ['in', 'sent while your node was down', 'true'],
    ]);
    assert.deepEqual(bobSees.filter(([, text]) => text === 'typed while my node was down'), [['out', 'typed while my node was down', 'delivered']]);
    await assertClean(alice);
    // Chromium itself logs each connection the balancer refused; that, and nothing else, is expected of Bob's page.
    const refused = /^console error: WebSocket connection to 'ws:\/\/127\.0\.0\.1:\d+\/ws' failed: /;
    const bobProblems = await problemsOf(bob);
    assert.ok(bobProblems.some((p) => refused.test(p)), 'Bob\'s page tried while no node was offered');
    assert.deepEqual(bobProblems.filter((p) => !refused.test(p)), [], 'Bob had console errors or CSP violations');
    await alice.context.close();
    await bob.context.close();
  });

  test('a group of three over two nodes: Alice on A, Bob and Carol on B; each message reaches both others, verified, "2 of 2 have it"', async () => {
    const { a, b, balancer } = await startCluster();
    const alice = await newChatUser(harness.browser, a, { name: 'Alice' });
    const bob = await newChatUser(harness.browser, balancer, { name: 'Bob' });
    const carol = await newChatUser(harness.browser, balancer, { name: 'Carol' });
    assert.deepEqual(balancer.webSocketBackends(), [b.port, b.port], 'Bob\'s and Carol\'s pages are on node B');
    await befriend(bob, alice);
    await befriend(carol, alice);

    const gid = await createGroup(alice, 'Across nodes', [bob, carol]);
    await openGroup(bob, gid);
    await openGroup(carol, gid);
    for (const user of [alice, bob, carol]) await membersReady(user, gid, 3);

    await writeToGroup(alice, gid, 'hello both of you');
    for (const user of [bob, carol]) await assertGroupReceived(user, gid, 'hello both of you', 'Alice');
    await delivered(alice, gid, 'hello both of you', 2, 2);
    await writeToGroup(bob, gid, 'hi from node B');
    for (const user of [alice, carol]) await assertGroupReceived(user, gid, 'hi from node B', 'Bob');
    await delivered(bob, gid, 'hi from node B', 2, 2);
    // Bob's one upload named two handles whose listeners are on different nodes (Alice's on A, Carol's on B).
    const uploads = jsonFrames(bob).filter((f) => f.direction === 'sent' && f.json.type === 'MESSAGE' && Array.isArray(f.json.handles));
    assert.equal(uploads.length, 1);
    assert.equal(uploads[0].json.handles.length, 2);
    for (const user of [alice, bob, carol]) {
      assert.equal(await groupLines(user, gid, 'hello both of you'), 1, `${user.name} has the first message once`);
      assert.equal(await groupLines(user, gid, 'hi from node B'), 1, `${user.name} has the second message once`);
      assertWireIsOpaque(user, ['hello both of you', 'hi from node B', 'Across nodes']);
      await assertClean(user);
    }
    for (const user of [alice, bob, carol]) await user.context.close();
  });
});

// Groups (as groups.test.mjs drives them).

async function createGroup(admin, name, members) {
  await admin.page.click('#new-group');
  await admin.page.fill('#new-group-name', name);
  for (const m of members) await admin.page.check(`#new-group-member-${m.id}`);
  await admin.page.click('#new-group-create');
  await admin.page.locator('.group-pane:not([hidden])').waitFor();
  return admin.page.getAttribute('.group-pane:not([hidden])', 'data-group');
}

async function openGroup(user, gid, timeout = 20000) {
  const button = user.page.locator(`.group-item[data-group="${gid}"]`);
  await button.waitFor({ timeout });
  await button.click();
  await user.page.locator(`.group-pane[data-group="${gid}"]`).waitFor({ state: 'visible' });
}

/** `user`'s pane of `gid` lists `count` members, each with a key. */
async function membersReady(user, gid, count, timeout = 20000) {
  await user.page.waitForFunction(([g, n]) => {
    const members = [...document.querySelectorAll(`.group-pane[data-group="${g}"] .group-member`)];
    return members.length === n && members.every((m) => m.dataset.trust !== 'missing');
  }, [gid, count], { timeout });
}

async function writeToGroup(user, gid, text) {
  const input = user.page.locator(`.group-pane[data-group="${gid}"] textarea`);
  await input.fill(text);
  await input.press('Enter');
}

async function assertGroupReceived(user, gid, text, from) {
  const line = user.page.locator(`.group-pane[data-group="${gid}"] .msg-in`).filter({ has: user.page.locator('.msg-text', { hasText: text }) }).first();
  await line.waitFor({ state: 'attached', timeout: 20000 });
  assert.equal(await line.getAttribute('data-verified'), 'true', `${user.name} reads "${text}" as verified`);
  assert.equal(await line.locator('.msg-who').textContent(), from);
}

async function delivered(user, gid, text, have, of, timeout = 20000) {
  await user.page.waitForFunction(([g, t, h, o]) => [...document.querySelectorAll(`.group-pane[data-group="${g}"] .msg-out`)]
    .some((m) => m.querySelector('.msg-text')?.textContent === t && m.dataset.have === String(h) && m.dataset.of === String(o)),
  [gid, text, have, of], { timeout });
}

function groupLines(user, gid, text) {
  return user.page.locator(`.group-pane[data-group="${gid}"] .msg-text`).evaluateAll((lines, t) => lines.filter((l) => l.textContent === t).length, text);
}
