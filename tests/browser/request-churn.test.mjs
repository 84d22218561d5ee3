// A friend-request flood through the real server: one address (127.0.0.2) connects, sends a
// FRIEND_REQUEST to Alice and leaves, over and over for 10 s, while Bob chats with Alice. The
// server's per-address bound for one recipient (docs/SECURITY.md "Friend requests aimed at one user":
// 10 a minute from one address) bounds what reaches Alice's page; each request that goes with its sender is withdrawn
// (FRIEND_CANCEL), so no stale card is left; Bob's messages keep showing and the page keeps answering.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as openpgp from 'openpgp';
import WebSocket from 'ws';
import { befriend, enterChat, generateKey, incomingMessage, launchBrowser, newChatUser, openUser, sendMessage, watchResponsiveness } from './helpers/browser.mjs';
import { interceptSocket } from './helpers/mitm.mjs';
import { startServer } from './helpers/server.mjs';

const FLOOD_SOURCE = '127.0.0.2'; // Linux routes all of 127/8 to lo: another "address" for the server
const FLOOD_MS = 10000;
const ADDRESS_BUDGET_PER_MINUTE = 10;
const MESSAGE_SHOWN_WITHIN_MS = 4000;
const SLOWEST_ROUND_TRIP_MS = 1000;

let server;
let browser;
let alice;
let bob;
let mitm;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  alice = await openUser(browser, server, { name: 'Alice' });
  mitm = await interceptSocket(alice.page, server.wsUrl); // only to count what the server sends her
  await generateKey(alice);
  await enterChat(alice);
  bob = await newChatUser(browser, server, { name: 'Bob' });
  await befriend(bob, alice);
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** One round of churn: a new session from FLOOD_SOURCE requests `to` and leaves. Resolves to the answer's type. */
function churnOnce(to, publicKey) {
  return new Promise((resolve) => {
    const socket = new WebSocket(server.wsUrl, { localAddress: FLOOD_SOURCE });
    const done = (outcome) => {
      socket.terminate();
      resolve(outcome);
    };
    socket.once('error', () => done('error'));
    socket.once('open', () => socket.send(JSON.stringify({ type: 'CONNECT' })));
    socket.on('message', (data) => {
      const frame = JSON.parse(String(data));
      if (frame.type === 'CONNECT') {
        socket.send(JSON.stringify({ type: 'FRIEND_REQUEST', to, public_key: publicKey, ref: 'f' }));
      } else if (frame.ref === 'f') {
        // Leave for good (no resume window): the server answers DISCONNECT by closing with 1000.
        const outcome = frame.type === 'ACK' ? 'forwarded' : frame.code;
        socket.once('close', () => done(outcome));
        socket.send(JSON.stringify({ type: 'DISCONNECT' }));
      } else if (frame.type === 'ERROR') {
        done(frame.code);
      }
    });
  });
}

test('a churning address reaches the page only within its budget, every card is withdrawn, and the chat goes on', { timeout: 90000 }, async () => {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Churn' }], format: 'armored' });
  const watch = watchResponsiveness(alice.page);
  const outcomes = new Map();
  let floodEnded = false;
  const flood = (async () => {
    const started = Date.now();
    while (Date.now() - started < FLOOD_MS) {
      const outcome = await churnOnce(alice.id, publicKey);
      outcomes.set(outcome, (outcomes.get(outcome) || 0) + 1);
    }
    floodEnded = true;
  })();
  let sent = 0;
  try {
    while (!floodEnded) {
      sent += 1;
      const text = `during the flood ${sent}`;
      const sentAt = Date.now();
      await sendMessage(bob, alice.id, text);
      const shown = await incomingMessage(alice, bob.id, text, MESSAGE_SHOWN_WITHIN_MS);
      assert.ok(Date.now() - sentAt < MESSAGE_SHOWN_WITHIN_MS, `message ${sent} took ${Date.now() - sentAt} ms`);
      assert.equal(await shown.getAttribute('data-verified'), 'true');
    }
    await flood;
  } finally {
    const slowest = await watch.stop();
    assert.ok(slowest < SLOWEST_ROUND_TRIP_MS, `the page did not answer for ${slowest} ms`);
  }

  const attempts = [...outcomes.values()].reduce((a, b) => a + b, 0);
  const requests = mitm.received('FRIEND_REQUEST').filter((frame) => frame.from !== bob.id).length;
  const bound = ADDRESS_BUDGET_PER_MINUTE + Math.ceil((ADDRESS_BUDGET_PER_MINUTE * FLOOD_MS) / 60000) + 1;
  assert.ok(attempts > 2 * bound, `only ${attempts} attempts: the flood tested nothing (${JSON.stringify([...outcomes])})`);
  assert.ok(sent >= 3, `only ${sent} messages during the flood`);
  // A churn whose socket failed after sending may have been forwarded unacknowledged, so at least.
  assert.ok(requests >= outcomes.get('forwarded'), `${requests} requests reached the page, ${outcomes.get('forwarded')} acknowledged`);
  assert.ok(requests <= bound, `${requests} requests reached the page in ${FLOOD_MS} ms; bound ${bound}`);
  const refused = (outcomes.get('too_many_requests') || 0) + (outcomes.get('rate_limited') || 0);
  assert.ok(refused > 0, `the server never refused: ${JSON.stringify([...outcomes])}`);
  // Every request left with its sender: the server withdrew each, and the page shows no card.
  await alice.page.waitForFunction(() => document.querySelectorAll('.request-card').length === 0, null, { timeout: 10000 });
  assert.equal(mitm.received('FRIEND_CANCEL').length, requests);
});
