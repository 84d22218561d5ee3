// The pure parts of contacts under Node: handle derivation (a fixed vector, checked against Node's own HMAC),
// the listen window and its frames, the §6 control envelopes and their bounds, the accepted-seq records
// (duplicates, late messages, gaps), the contact book's checks, bounds and merge, and the domain's receipts.
import assert from 'node:assert/strict';
import { HANDLES_PER_GROUP } from '../../public/js/grouphandles.js';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { MAX_BOOK_BYTES, MAX_UNCONFIRMED, contactRecord, mergeBooks, parseBook, serializeBook } from '../../public/js/contactbook.js';
import { MAX_RECEIPT_ACKS, buildControlEnvelope, parseEnvelope } from '../../public/js/envelope.js';
import { MAX_EXTRA, accept, classifyReceived, emptyReceived } from '../../public/js/receipts.js';
import {
  GROUP_HANDLES_RESERVED, MAX_CONTACTS, MAX_GROUPS, batches, contactTag, daysListened, deriveHandle, deriveHandles, isHandle, listenPlan, msUntilListenChange, msUntilNextUtcDay,
  toBase64Url, utcDay,
} from '../../public/js/rendezvous.js';
import { confirmDelivered } from '../../public/js/contacts.js';
import { begin, newFriend } from '../../public/js/model.js';
import { acked, sendFailed } from '../../public/js/outbox.js';

const SECRET = toBase64Url(Uint8Array.from({ length: 32 }, (_, i) => i));
const FP = 'A'.repeat(40);
const OTHER = 'B'.repeat(40);

test('handle(secret, day) is HMAC-SHA256 over "secchat-handle-v1\\n" + the UTC date, base64url, 43 characters', async () => {
  assert.equal(SECRET, 'AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8');
  const handle = await deriveHandle(SECRET, '2026-01-01');
  assert.equal(handle, 'pEMMgOdeoCr56n-Yu-taOb463lsr4jLpwOTx_354DvY'); // the fixed vector (docs/PROTOCOL.md §6)
  const node = createHmac('sha256', Buffer.from(Uint8Array.from({ length: 32 }, (_, i) => i))).update('secchat-handle-v1\n2026-01-01').digest('base64url');
  assert.equal(handle, node);
  assert.equal(handle.length, 43);
  assert.ok(isHandle(handle));
  await assert.rejects(deriveHandle('short', '2026-01-01'));
  // The contact tag (PROTOCOL §6 `for`): another label, so never a handle.
  const tag = await contactTag(SECRET);
  assert.equal(tag, 'IqY1wob2O53lngxwU2KrHCKBcXHhpjBjVEhA6ARsaBE');
  assert.equal(tag, createHmac('sha256', Buffer.from(Uint8Array.from({ length: 32 }, (_, i) => i))).update('secchat-contact-v1').digest('base64url'));
});

test('days are UTC; a contact is sent to on today\'s handle and listened on today\'s, with a neighbour\'s only near midnight', async () => {
  const now = Date.UTC(2026, 0, 1, 23, 59, 59);
  assert.equal(utcDay(now), '2026-01-01');
  assert.equal(utcDay(now, 1), '2026-01-02');
  assert.equal(utcDay(now, -1), '2025-12-31');
  assert.equal(msUntilNextUtcDay(now), 1000);
  // A fake clock through one day: yesterday's handle only in the first hour, tomorrow's only in the last.
  const at = (h, m = 0) => Date.UTC(2026, 0, 1, h, m);
  assert.deepEqual(daysListened(at(0, 30)), [-1, 0]);
  assert.deepEqual(daysListened(at(1, 0)), [0]);
  assert.deepEqual(daysListened(at(12)), [0]);
  assert.deepEqual(daysListened(at(22, 59)), [0]);
  assert.deepEqual(daysListened(at(23, 0)), [0, 1]);
  assert.deepEqual(daysListened(at(12), { catchUp: true }), [-1, 0], 'a connection\'s first FETCH takes yesterday\'s too');
  assert.equal(msUntilListenChange(at(0, 30)), 30 * 60 * 1000);
  assert.equal(msUntilListenChange(at(12)), 11 * 60 * 60 * 1000);
  assert.equal(msUntilListenChange(at(23, 30)), 30 * 60 * 1000);

  const theirs = toBase64Url(new Uint8Array(32).fill(7));
  const noon = await deriveHandles([{ key: 'k1', mine: SECRET, theirs }, { key: 'k2', mine: '', theirs: '' }], at(12));
  assert.equal(noon.day, '2026-01-01');
  assert.deepEqual([...noon.listen], [[await deriveHandle(SECRET, '2026-01-01'), 'k1']], 'one handle per contact all day');
  assert.deepEqual([...noon.send], [['k1', await deriveHandle(theirs, '2026-01-01')]]);
  const { listen } = await deriveHandles([{ key: 'k1', mine: SECRET, theirs }], now);
  assert.deepEqual([...listen.keys()], [await deriveHandle(SECRET, '2026-01-01'), await deriveHandle(SECRET, '2026-01-02')]);
  // After midnight: the day before stays for an hour, then leaves the window.
  const later = await deriveHandles([{ key: 'k1', mine: SECRET, theirs }], at(24, 30));
  assert.deepEqual(listenPlan(listen.keys(), later.listen.keys()), { listen: [], unlisten: [] });
  const oneAm = await deriveHandles([{ key: 'k1', mine: SECRET, theirs }], at(25, 0));
  assert.deepEqual(listenPlan(later.listen.keys(), oneAm.listen.keys()), { listen: [], unlisten: [await deriveHandle(SECRET, '2026-01-01')] });
  assert.equal(MAX_CONTACTS, 1173, 'what 64 groups of 9 handles leave of 4,096, over 3 days');
  assert.equal(GROUP_HANDLES_RESERVED, MAX_GROUPS * HANDLES_PER_GROUP);
  assert.ok(MAX_CONTACTS * 3 + GROUP_HANDLES_RESERVED <= 4096 && MAX_CONTACTS >= 1000);
  assert.deepEqual(batches([...Array(2500).keys()]).map((b) => b.length), [1024, 1024, 452]);
});

test('one connection: the first LISTEN and FETCH take yesterday\'s handle, dropped once the mail is in; tomorrow\'s only from 23:00', async () => {
  const { createContactSync } = await import('../../public/js/contactsync.js');
  const { transition } = await import('../../public/js/transition.js');
  const { online, step } = await import('./helpers/model.mjs');
  const clock = fakeClock(Date.UTC(2026, 0, 1, 10, 0));
  let model = step(online(), { type: 'bookLoaded', contacts: [record(OTHER, { unconfirmed: [] })] }).state;
  const frames = [];
  const transport = {
    isOnline: () => true,
    request: async (frame) => {
      frames.push(frame);
      return frame.type === 'FETCH' ? { type: 'FETCHED', waiting: 0 } : { type: frame.type === 'LISTEN' ? 'LISTENING' : 'ACK' };
    },
  };
  const sync = createContactSync({
    transport, getModel: () => model, queued: () => 0, onError: (error) => { throw error; }, clock,
    dispatch: async (event) => { model = transition(model, { now: clock.now(), ...event }).state; },
  });
  const handle = (day) => deriveHandle(SECRET, day);
  const sent = (type) => frames.filter((f) => f.type === type).flatMap((f) => f.handles || [type]);
  sync.onSession();
  await until(() => sent('UNLISTEN').length > 0, 'yesterday\'s handle dropped after the FETCH');
  assert.deepEqual(frames.map((f) => f.type), ['LISTEN', 'FETCH', 'UNLISTEN']);
  assert.deepEqual(sent('LISTEN').sort(), [await handle('2025-12-31'), await handle('2026-01-01')].sort());
  assert.deepEqual(sent('UNLISTEN'), [await handle('2025-12-31')]);
  assert.equal(sync.listening, 1, 'from now until 23:00, today\'s handle alone');
  // 23:00: tomorrow's joins; 01:00 the next day: the old day leaves.
  frames.length = 0;
  await clock.advance(13 * 60 * 60 * 1000 + 2000);
  await until(() => sent('LISTEN').length > 0, 'tomorrow\'s handle at 23:00');
  assert.deepEqual(sent('LISTEN'), [await handle('2026-01-02')]);
  frames.length = 0;
  await clock.advance(2 * 60 * 60 * 1000);
  await until(() => sent('UNLISTEN').length > 0, 'the old day\'s handle at 01:00');
  assert.deepEqual(sent('UNLISTEN'), [await handle('2026-01-01')]);
  assert.equal(sync.listening, 1);
  assert.equal(frames.filter((f) => f.type === 'FETCH').length, 0, 'one FETCH per connection');
});

test('a handle the server dropped to make room is LISTENed again later, and what waits for it fetched; the page is told once', async () => {
  const { createContactSync, DROPPED_RETRY_MS } = await import('../../public/js/contactsync.js');
  const { transition } = await import('../../public/js/transition.js');
  const { online, step } = await import('./helpers/model.mjs');
  const clock = fakeClock(Date.UTC(2026, 0, 1, 10, 0));
  let model = step(online(), { type: 'bookLoaded', contacts: [record(OTHER, { unconfirmed: [] })] }).state;
  const frames = [];
  let waitingAfterRetry = 0;
  const transport = {
    isOnline: () => true,
    request: async (frame) => {
      frames.push(frame);
      if (frame.type === 'FETCH') return { type: 'FETCHED', waiting: 0 };
      return frame.type === 'LISTEN' ? { type: 'LISTENING', waiting: waitingAfterRetry } : { type: 'ACK' };
    },
  };
  const sync = createContactSync({
    transport, getModel: () => model, queued: () => 0, onError: (error) => { throw error; }, clock,
    dispatch: async (event) => { model = transition(model, { now: clock.now(), ...event }).state; },
  });
  sync.onSession();
  await until(() => frames.some((f) => f.type === 'UNLISTEN'), 'the first LISTEN, FETCH and UNLISTEN');
  const today = await deriveHandle(SECRET, '2026-01-01');
  assert.equal(sync.listening, 1);
  assert.equal(sync.dropped('not one of ours'), false, 'a handle we do not hold changes nothing');
  assert.equal(sync.dropped(today), true, 'the first drop is said');
  assert.equal(sync.dropped(today), false, 'the same again is not');
  assert.equal(sync.listening, 0);
  frames.length = 0;
  waitingAfterRetry = 2;
  await clock.advance(DROPPED_RETRY_MS - 1000);
  assert.deepEqual(frames, [], 'not before the retry');
  await clock.advance(2000);
  await until(() => frames.some((f) => f.type === 'FETCH'), 'LISTEN again, then FETCH what waited');
  assert.deepEqual(frames.map((f) => f.type), ['LISTEN', 'FETCH']);
  assert.deepEqual(frames[0].handles, [today]);
  assert.equal(sync.listening, 1);
});

test('control envelopes: built and checked, bounded, wrong types refused; text envelopes unchanged', () => {
  const receipt = buildControlEnvelope('receipt', { to: FP, ts: 5, acks: [1, 2] });
  assert.deepEqual(parseEnvelope(receipt, FP), { ok: true, envelope: { kind: 'receipt', to: FP, ts: 5, acks: [1, 2] } });
  const rendezvous = buildControlEnvelope('rendezvous', { to: FP, ts: 5, secret: SECRET });
  assert.equal(parseEnvelope(rendezvous, FP).envelope.secret, SECRET);
  assert.equal(parseEnvelope(rendezvous, OTHER).problem, 'wrong_recipient');
  const nonce = 'n'.repeat(22);
  assert.deepEqual(parseEnvelope(buildControlEnvelope('here', { to: FP, ts: 5, nonce, re: nonce }), FP).envelope, { kind: 'here', to: FP, ts: 5, nonce, re: nonce });
  const bad = [
    { kind: 'receipt', acks: Array.from({ length: MAX_RECEIPT_ACKS + 1 }, (_, i) => i + 1) }, // a huge acks list
    { kind: 'receipt', acks: [] }, { kind: 'receipt', acks: ['1'] }, { kind: 'receipt', acks: [0] }, { kind: 'receipt', acks: 3 },
    { kind: 'rendezvous', secret: `${SECRET}AAAA` }, { kind: 'rendezvous', secret: 'x'.repeat(100000) }, { kind: 'rendezvous', secret: 7 },
    { kind: 'here', nonce: 'short' }, { kind: 'here', nonce, re: 5 }, { kind: 5 },
    { kind: 'receipt', acks: [1], for: 'short' }, { kind: 'remove', for: 7 }, { kind: 'remove', for: `${SECRET}A` },
  ];
  for (const fields of bad) {
    assert.equal(parseEnvelope(JSON.stringify({ v: 1, to: FP, ts: 5, ...fields }), FP).problem, 'malformed', JSON.stringify(fields).slice(0, 60));
  }
  assert.equal(parseEnvelope(JSON.stringify({ v: 1, to: FP, ts: 5, kind: 'future' }), FP).problem, 'unknown_kind');
  assert.deepEqual(parseEnvelope(buildControlEnvelope('remove', { to: FP, ts: 5, for: SECRET }), FP).envelope, { kind: 'remove', to: FP, ts: 5, for: SECRET });
  assert.deepEqual(parseEnvelope(JSON.stringify({ v: 1, to: FP, seq: 1, ts: 5, text: 'hi' }), FP).envelope, { to: FP, seq: 1, ts: 5, text: 'hi' });
});

test('accepted seqs: in order, duplicate, late (fills a gap), gap; the record stays bounded', () => {
  let r = emptyReceived();
  assert.equal(classifyReceived(r, 1).kind, 'in_order');
  r = accept(r, 1);
  assert.equal(classifyReceived(r, 1).kind, 'duplicate');
  assert.deepEqual(classifyReceived(r, 4), { kind: 'gap', missing: 2 });
  r = accept(r, 4);
  assert.deepEqual(r, { through: 1, extra: [4], missing: [], floor: 0 });
  assert.equal(classifyReceived(r, 2).kind, 'in_order');
  assert.equal(classifyReceived(r, 3).kind, 'late');
  assert.equal(classifyReceived(r, 4).kind, 'duplicate');
  r = accept(accept(r, 3), 2);
  assert.deepEqual(r, { through: 4, extra: [], missing: [], floor: 0 });
  // A server that reorders without end: the record keeps at most MAX_EXTRA, giving up the oldest holes.
  let wide = emptyReceived();
  for (let seq = 2; seq < 2 + 2 * (MAX_EXTRA + 10); seq += 2) wide = accept(wide, seq);
  assert.ok(wide.extra.length <= MAX_EXTRA);
  assert.ok(wide.through > 1);
});

test('a receipt marks only messages with those seqs delivered, and never the one not yet sealed', () => {
  const friend = {
    sending: null, outbox: [3],
    messages: [
      { localId: 1, direction: 'out', seq: 1, payload: 'p1', state: 'sent' },
      { localId: 2, direction: 'out', seq: 2, payload: 'p2', state: 'stored' },
      { localId: 3, direction: 'out', seq: 0, payload: null, state: 'waiting' },
      { localId: 4, direction: 'in', seq: 1, verified: true },
    ],
  };
  const after = confirmDelivered(friend, [1, 99]);
  assert.deepEqual(after.messages.map((m) => m.state), ['delivered', 'stored', 'waiting', undefined]);
  assert.equal(after.messages[0].payload, null);
  assert.equal(confirmDelivered(after, [1]), after, 'a replayed receipt changes nothing');
});

function record(fingerprint, fields = {}) {
  return {
    key: 'k7q2zd', fingerprint, userId: 'Bob', nickname: '', verified: false,
    publicArmored: '-----BEGIN PGP PUBLIC KEY BLOCK-----\nx\n-----END PGP PUBLIC KEY BLOCK-----', mine: SECRET, theirs: SECRET, theirsTs: 0,
    sendSeq: 3, received: { through: 2, extra: [], missing: [], floor: 0 }, since: 1, lastReachable: 2, updatedAt: 10, unconfirmed: [{ seq: 3, ts: 9, text: 'hi' }],
    ...fields,
  };
}

test('the contact book: round trip, refused when not the owner\'s, malformed, or over a bound', () => {
  const { text } = serializeBook([record(OTHER)], FP, 100);
  assert.deepEqual(parseBook(text, FP).contacts, [record(OTHER)]);
  assert.equal(parseBook(text, OTHER).problem, 'not_yours');
  assert.equal(parseBook('{', FP).problem, 'malformed');
  const book = JSON.parse(text);
  const broken = (change) => JSON.stringify({ ...book, contacts: [{ ...book.contacts[0], ...change }] });
  for (const change of [{ mine: 'short' }, { fingerprint: 'abc' }, { sendSeq: -1 }, { unconfirmed: [{ seq: 9, ts: 1, text: 'beyond sendSeq' }] },
    { unconfirmed: Array.from({ length: MAX_UNCONFIRMED + 1 }, (_, i) => ({ seq: 1, ts: i, text: '' })) }, { publicArmored: 'not a key' }, { verified: 'yes' }]) {
    assert.equal(parseBook(broken(change), FP).problem, 'bad_contact', JSON.stringify(change).slice(0, 50));
  }
  assert.equal(parseBook(JSON.stringify({ ...book, contacts: [book.contacts[0], book.contacts[0]] }), FP).problem, 'duplicate');
  assert.equal(parseBook(JSON.stringify({ ...book, contacts: Array(MAX_CONTACTS + 1).fill(book.contacts[0]) }), FP).problem, 'too_many_contacts');
  assert.equal(parseBook('x'.repeat(MAX_BOOK_BYTES + 1), FP).problem, 'too_large');
  assert.equal(serializeBook(Array(MAX_CONTACTS + 1).fill(record(OTHER)), FP, 1).problem, 'too_many_contacts');
});

test('merging an import: newer wins, verified never lost, seqs never go down, another fingerprint is another contact', () => {
  const mine = record(OTHER, { verified: true, sendSeq: 9, updatedAt: 10 });
  const older = record(OTHER, { verified: false, sendSeq: 4, updatedAt: 5, nickname: 'old name' });
  const newer = record(OTHER, { verified: false, sendSeq: 4, updatedAt: 50, nickname: 'new name', received: { through: 7, extra: [], missing: [], floor: 0 } });
  assert.deepEqual(mergeBooks([mine], [older]).contacts[0], { ...mine, received: { through: 2, extra: [], missing: [], floor: 0 } });
  const merged = mergeBooks([mine], [newer]);
  assert.equal(merged.updated, 1);
  const [contact] = merged.contacts;
  assert.equal(contact.nickname, 'new name');
  assert.equal(contact.verified, true);
  assert.equal(contact.sendSeq, 9);
  assert.equal(contact.received.through, 7);
  const other = mergeBooks([mine], [record('C'.repeat(40))]);
  assert.equal(other.added, 1);
  assert.equal(other.contacts.length, 2);
});

test('removing a contact reached only by handle sends it a signed `remove`, which ends the contact on its side too', async () => {
  const { online, step, effectsOf, NOW, systemLines } = await import('./helpers/model.mjs');
  const LISTEN = 'L'.repeat(43);
  const SEND = 'S'.repeat(43);
  const TAG = await contactTag(SECRET);
  const contact = (since) => {
    let { state } = step(online(), { type: 'bookLoaded', contacts: [record(OTHER, { unconfirmed: [], since, mineTag: TAG })] });
    ({ state } = step(state, { type: 'handlesDerived', day: '2027-01-15', listen: new Map([[LISTEN, 'k7q2zd']]), send: new Map([['k7q2zd', SEND]]) }));
    assert.equal(state.friends.get('k7q2zd').idLive, false, 'no friendship by ID for FRIEND_REMOVE to end');
    return state;
  };

  // Our side: the envelope goes to their handle (sealed to the key carried in the effect), then the contact ends.
  const removed = step(contact(NOW), { type: 'friendRemoved', id: 'k7q2zd' });
  const [sent] = effectsOf(removed, 'sendControl');
  assert.equal(sent.kind, 'remove');
  assert.deepEqual(sent.route, { handle: SEND });
  assert.equal(sent.to, OTHER);
  assert.ok(sent.publicArmored);
  assert.equal(removed.state.friends.get('k7q2zd').status, 'ended');
  assert.equal(removed.state.friends.get('k7q2zd').endedReason, 'removed_by_you');

  // Their side: a `remove` signed by the contact's key, to one of our handles, ends it ("removed you").
  const deliver = (state, ts) => {
    const arrived = step(state, { type: 'frame', epoch: state.session.epoch, frame: { type: 'MESSAGE', handle: LISTEN, payload: '-----BEGIN PGP MESSAGE-----\nx', ts: NOW } });
    const [open] = effectsOf(arrived, 'open');
    assert.ok(open, 'the message to our handle was handed to the crypto worker');
    const text = buildControlEnvelope('remove', { to: FP_OWN, ts, for: TAG });
    return step(arrived.state, { type: 'opened', peer: open.peer, incoming: open.incoming, opened: { ok: true, text } }).state;
  };
  const FP_OWN = online().ownFingerprint;
  const ended = deliver(contact(NOW), NOW + 1000);
  assert.equal(ended.friends.get('k7q2zd').status, 'ended');
  assert.equal(ended.friends.get('k7q2zd').endedReason, 'removed');
  assert.ok(systemLines(ended, 'k7q2zd').includes('ended'));
  // One signed before this contact began (a server replaying an earlier contact's removal) changes nothing.
  const kept = deliver(contact(NOW), NOW - 60 * 60 * 1000);
  assert.equal(kept.friends.get('k7q2zd').status, 'friends');
  assert.deepEqual(parseEnvelope(buildControlEnvelope('remove', { to: FP, ts: 5 }), FP), { ok: true, envelope: { kind: 'remove', to: FP, ts: 5 } });
});

test('receipts to one friend waiting for their turn are merged into one envelope: copies cannot queue one each', async () => {
  const { createEffects } = await import('../../public/js/effects.js');
  const sent = [];
  const effects = createEffects({
    transport: { request: async (frame) => { sent.push(frame); return { type: 'ACK' }; } },
    pgp: { seal: async (text) => `-----BEGIN PGP MESSAGE-----\n${text}` },
    dispatch: async () => {},
    page: { error: (error) => { throw error; } },
  });
  const receipt = (peer, acks) => ({ type: 'sendControl', peer, purpose: 'receipt', kind: 'receipt', fields: { acks }, to: FP, route: { handle: 'H'.repeat(43) }, publicArmored: 'k' });
  // The first goes at once; the 300 behind it (duplicates of seq 1, then seq 2, and 256 distinct ones) wait.
  await effects.run([receipt('bob', [1])]);
  const burst = [...Array(100).fill(receipt('bob', [1])), receipt('bob', [2]), ...Array.from({ length: 300 }, (_, i) => receipt('bob', [10 + i])), receipt('carol', [7])];
  await effects.run(burst);
  await new Promise((resolve) => setTimeout(resolve, 400));
  const acks = sent.map((frame) => JSON.parse(frame.payload.split('\n')[1]).acks);
  assert.equal(sent.length, 3, 'one receipt, then one merged receipt for Bob and one for Carol');
  assert.deepEqual(acks[0], [1]);
  assert.equal(acks[1].length, MAX_RECEIPT_ACKS, 'a receipt lists at most 256 seqs');
  assert.deepEqual(acks[1].slice(0, 3), [1, 2, 10]);
  assert.deepEqual(acks[2], [7]);
});

test('a seq the server once took a copy of is never given back: the next message cannot reuse it', () => {
  const sending = (friend, localId) => ({ ...friend, sending: { localId, phase: 'sending' } });
  const line = (localId, seq) => ({
    localId, direction: 'out', text: `m${localId}`, ts: 1, seq, payload: `p${seq}`, state: 'sending', error: '',
    ref: `m${localId}.0`, attempts: 0, via: 'handle',
  });
  const start = { ...newFriend('k7q2zd'), sendSeq: 3, outbox: [1], messages: [line(1, 3)] };
  // Offline, so nothing is pumped: the test drives each step.
  const state = (friend) => ({ friends: new Map([['k7q2zd', friend]]), session: { online: false } });

  // Stored by the server (ACK queued), then sent again after a reconnect and refused this time.
  let next = begin(state(sending(start, 1)));
  acked(next, { peer: 'k7q2zd', localId: 1, queued: true, now: 5 });
  const stored = next.state.friends.get('k7q2zd');
  next = begin(state(sending({ ...stored, outbox: [1] }, 1)));
  sendFailed(next, { peer: 'k7q2zd', localId: 1, code: 'bad_request' });
  const after = next.state.friends.get('k7q2zd');
  assert.equal(after.sendSeq, 3, 'seq 3 stays spent');
  assert.equal(after.messages[0].state, 'undelivered');
  assert.equal(after.messages[0].payload, 'p3', 'kept for Retry');

  // Never taken by the server: its seq is given back, as before.
  next = begin(state(sending(start, 1)));
  sendFailed(next, { peer: 'k7q2zd', localId: 1, code: 'bad_request' });
  assert.equal(next.state.friends.get('k7q2zd').sendSeq, 2);
  assert.equal(next.state.friends.get('k7q2zd').messages[0].state, 'error');
});

// --- the contact book's saving: a throttle, and durable before a seq or a receipt leaves -------------------

/** Timers that run only when the test moves the clock. */
function fakeClock(start = 1_800_000_000_000) {
  let now = start;
  let timers = [];
  let nextId = 1;
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.push({ id, at: now + ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers = timers.filter((t) => t.id !== id);
    },
    /** Moves the clock by `ms`, running every timer that falls due on the way, in order. */
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        const due = timers.filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
        if (!due) break;
        timers = timers.filter((t) => t !== due);
        now = due.at;
        due.fn();
        await settle();
      }
      now = end;
    },
  };
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

/** Resolves once `condition()` holds (work in flight includes Web Crypto, which answers from another thread). */
async function until(condition, what) {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited > 5000) assert.fail(`still waiting: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** localStorage as the page has it, counting writes. */
function fakeStorage() {
  const items = new Map();
  return {
    writes: 0,
    getItem: (key) => (items.has(key) ? items.get(key) : null),
    setItem(key, value) { this.writes += 1; items.set(key, String(value)); },
    removeItem: (key) => items.delete(key),
  };
}

const ARMOR = '-----BEGIN PGP MESSAGE-----\n';
/** The message lane as contactstore.js uses it: "sealing" keeps the text readable, "opening" gives it back. */
const bookPgp = { lanes: { messages: { run: async (op, { envelopeText, payload }) => (op === 'seal' ? ARMOR + envelopeText : { ok: true, text: payload.slice(ARMOR.length) }) } } };

/** The book as stored now, parsed (null when nothing is stored). */
function storedBook(storage, ownFingerprint) {
  const armored = storage.getItem('secchat.contacts.v1');
  return armored ? parseBook(armored.slice(ARMOR.length), ownFingerprint) : null;
}

test('the contact book is saved at most SAVE_MAX_WAIT_MS after a change, however often changes keep coming', async () => {
  const { createContactStore, SAVE_MAX_WAIT_MS } = await import('../../public/js/contactstore.js');
  const { online, step } = await import('./helpers/model.mjs');
  const storage = fakeStorage();
  globalThis.localStorage = storage;
  const clock = fakeClock();
  let { state } = step(online(), { type: 'bookLoaded', contacts: [record(OTHER, { unconfirmed: [] })] });
  const store = createContactStore({
    pgp: bookPgp, getModel: () => state, dispatch: async () => {}, clock, remember: () => true,
    identity: () => ({ fingerprint: state.ownFingerprint, publicArmored: 'own key' }), notice: (code) => assert.fail(code),
  });
  // A frame to one of our handles every 0.9 s, each changing the contact (its `received` record).
  const started = clock.now();
  for (let seq = 3; clock.now() - started < 20000; seq += 1) {
    const friend = state.friends.get('k7q2zd');
    state = { ...state, friends: new Map([['k7q2zd', { ...friend, received: accept(friend.received, seq), updatedAt: clock.now() }]]) };
    store.changed();
    await clock.advance(900);
  }
  assert.ok(storage.writes >= 20000 / SAVE_MAX_WAIT_MS - 1, `saved ${storage.writes} times in 20 s of changes every 0.9 s`);
  assert.ok(storedBook(storage, state.ownFingerprint).contacts[0].received.through >= 3);
  // Quiet again: the last change is saved SAVE_QUIET_MS later, and nothing is left waiting.
  await clock.advance(SAVE_MAX_WAIT_MS);
  assert.deepEqual(storedBook(storage, state.ownFingerprint).contacts[0].received, state.friends.get('k7q2zd').received);
  assert.equal(store.unsaved, false);
  delete globalThis.localStorage;
});

test('a stored book the page could not read is never overwritten: a reload reads it again', async () => {
  const { createContactStore } = await import('../../public/js/contactstore.js');
  const { online, step } = await import('./helpers/model.mjs');
  const storage = fakeStorage();
  globalThis.localStorage = storage;
  const stored = `${ARMOR}a book this page cannot open in time`;
  storage.setItem('secchat.contacts.v1', stored);
  const clock = fakeClock();
  let { state } = step(online(), { type: 'bookLoaded', contacts: [] });
  const notices = [];
  const tooSlow = { lanes: { messages: { run: async (op, args) => { if (op === 'open') throw Object.assign(new Error('slow'), { code: 'too_slow' }); return bookPgp.lanes.messages.run(op, args); } } } };
  const store = createContactStore({
    pgp: tooSlow, getModel: () => state, dispatch: async () => {}, clock, remember: () => true,
    identity: () => ({ fingerprint: state.ownFingerprint, publicArmored: 'own key' }), notice: (code) => notices.push(code),
  });
  await store.load();
  assert.deepEqual(notices, ['book_refused']);
  // A contact made in this page, then every way a save is asked for.
  state = step(state, { type: 'bookLoaded', contacts: [record(OTHER, { unconfirmed: [] })] }).state;
  store.changed();
  await clock.advance(60000);
  await store.persist();
  assert.equal(storage.getItem('secchat.contacts.v1'), stored, 'the unread book is still there');
  assert.equal(store.unsaved, true, 'the page warns before closing');
  delete globalThis.localStorage;
});

/**
 * The page in small: the domain (transition.js), the effects runner with a fake socket and crypto, and the
 * contact store on a fake localStorage, wired as app.js wires them.
 */
async function miniPage(storage, state, transport) {
  const { createContactStore } = await import('../../public/js/contactstore.js');
  const { createEffects } = await import('../../public/js/effects.js');
  const { transition } = await import('../../public/js/transition.js');
  const page = { state, effects: null, store: null };
  const dispatch = (event) => {
    const next = transition(page.state, { now: 1_800_000_000_000, ...event });
    page.state = next.state;
    page.store.changed();
    return page.effects.run(next.effects);
  };
  globalThis.localStorage = storage;
  page.store = createContactStore({
    pgp: bookPgp, getModel: () => page.state, dispatch, remember: () => true, clock: fakeClock(),
    identity: () => ({ fingerprint: page.state.ownFingerprint, publicArmored: 'own key' }), notice: (code) => assert.fail(code),
  });
  page.effects = createEffects({
    transport, dispatch, persist: () => page.store.persist(),
    pgp: { seal: async (text) => ARMOR + text, open: async (payload) => ({ ok: true, text: payload.slice(ARMOR.length) }) },
    page: { error: (error) => { throw error; }, incoming() {}, notice() {}, notify() {}, show() {} },
  });
  page.dispatch = dispatch;
  return page;
}

/** A state with the contact of `record(OTHER, fields)` loaded from a book, reachable by handle. */
async function contactState(fields = {}) {
  const { online, step } = await import('./helpers/model.mjs');
  let { state } = step(online(), { type: 'bookLoaded', contacts: [record(OTHER, { unconfirmed: [], ...fields })] });
  ({ state } = step(state, { type: 'handlesDerived', day: '2027-01-15', listen: new Map([['L'.repeat(43), 'k7q2zd']]), send: new Map([['k7q2zd', 'S'.repeat(43)]]) }));
  ({ state } = step(state, { type: 'handlesSupported', supported: true }));
  return state;
}

test('a message with a new seq leaves only once the stored book holds that seq: a reload never uses it again', async () => {
  const storage = fakeStorage();
  const sent = [];
  let page;
  const transport = {
    request: async (frame) => {
      // What a reload at this very moment would find.
      sent.push({ frame, book: storedBook(storage, page.state.ownFingerprint) });
      return { type: 'ACK' };
    },
  };
  page = await miniPage(storage, await contactState({ sendSeq: 3 }), transport);
  await page.dispatch({ type: 'messageWritten', id: 'k7q2zd', text: 'before the reload' });
  await until(() => sent.length > 0, 'the message to leave');
  assert.equal(sent.length, 1);
  const seq = JSON.parse(sent[0].frame.payload.slice(ARMOR.length)).seq;
  assert.equal(seq, 4);
  assert.ok(sent[0].book, 'a book was stored before the message left');
  assert.equal(sent[0].book.contacts[0].sendSeq, 4, 'the stored book already holds the seq on the wire');

  // The tab is closed right after: the next page starts from the stored book. The message sent (unconfirmed)
  // goes again with its own seq 4, and the next new one is numbered 5.
  const { online, step, steps } = await import('./helpers/model.mjs');
  const reloaded = step(online(), { type: 'bookLoaded', contacts: sent[0].book.contacts }).state;
  let next = steps(reloaded,
    { type: 'handlesDerived', day: '2027-01-15', listen: new Map(), send: new Map([['k7q2zd', 'S'.repeat(43)]]) },
    { type: 'handlesSupported', supported: true },
    { type: 'messageWritten', id: 'k7q2zd', text: 'after the reload' });
  const seals = [];
  for (let round = 0; round < 2; round += 1) {
    const seal = next.all.find((e) => e.type === 'seal' && !seals.includes(e));
    seals.push(seal);
    next = steps(next.state, { type: 'sealed', peer: seal.peer, localId: seal.localId, friendship: seal.friendship, seq: seal.seq, payload: `p${seal.seq}` });
    const transmit = next.all.find((e) => e.type === 'transmit');
    next = steps(next.state, { type: 'acked', peer: transmit.peer, localId: transmit.localId, queued: true });
  }
  assert.deepEqual(seals.map((s) => [JSON.parse(s.envelope).text, s.seq]), [['before the reload', 4], ['after the reload', 5]],
    'the seq sent before the reload is not used again');
  delete globalThis.localStorage;
});

test('a receipt leaves only once the stored book holds the seq as received: a reload never shows that message as new', async () => {
  const storage = fakeStorage();
  const receipts = [];
  let page;
  const transport = {
    request: async (frame) => {
      receipts.push({ frame, book: storedBook(storage, page.state.ownFingerprint) });
      return { type: 'ACK' };
    },
  };
  page = await miniPage(storage, await contactState({ received: { through: 2, extra: [] } }), transport);
  const text = JSON.stringify({ v: 1, to: page.state.ownFingerprint, seq: 3, ts: 1_800_000_000_000, text: 'hello' });
  await page.dispatch({ type: 'frame', epoch: page.state.session.epoch, frame: { type: 'MESSAGE', handle: 'L'.repeat(43), payload: ARMOR + text, ts: 1 } });
  await until(() => receipts.length > 0, 'the receipt to leave');
  assert.equal(page.state.friends.get('k7q2zd').messages.filter((m) => m.direction === 'in' && m.verified).length, 1);
  assert.equal(receipts.length, 1);
  assert.deepEqual(JSON.parse(receipts[0].frame.payload.slice(ARMOR.length)).acks, [3]);
  assert.ok(receipts[0].book, 'a book was stored before the receipt left');
  assert.equal(receipts[0].book.contacts[0].received.through, 3, 'the stored book already counts seq 3 as received');
  delete globalThis.localStorage;
});

// --- control envelopes are bound to this contact ------------------------------------------------------------

const OLD_SECRET = toBase64Url(new Uint8Array(32).fill(1)); // our secret in an earlier contact with the same keys
const NEW_SECRET = toBase64Url(new Uint8Array(32).fill(2)); // ours in this one
const THEIR_SECRET = toBase64Url(new Uint8Array(32).fill(3));

/** Delivers a control envelope (its fields over {to: us, ts}) to our handle, as the worker opened it. */
async function deliverControl(state, kind, fields) {
  const { step, effectsOf } = await import('./helpers/model.mjs');
  const arrived = step(state, { type: 'frame', epoch: state.session.epoch, frame: { type: 'MESSAGE', handle: 'L'.repeat(43), payload: `${ARMOR}x`, ts: 1 } });
  const [open] = effectsOf(arrived, 'open');
  const text = buildControlEnvelope(kind, { to: state.ownFingerprint, ts: 1_800_000_000_000, ...fields });
  return step(arrived.state, { type: 'opened', peer: open.peer, incoming: open.incoming, opened: { ok: true, text } });
}

/** This contact (our secret NEW_SECRET), with message seq 1 stored on the server and waiting for its receipt. */
async function contactWithStoredMessage() {
  const { steps } = await import('./helpers/model.mjs');
  let next = steps(await contactState({ mine: NEW_SECRET, mineTag: await contactTag(NEW_SECRET), theirs: THEIR_SECRET, sendSeq: 0, since: 1_800_000_000_000 }),
    { type: 'messageWritten', id: 'k7q2zd', text: 'to the new contact' });
  const seal = next.all.find((e) => e.type === 'seal');
  next = steps(next.state, { type: 'sealed', peer: seal.peer, localId: seal.localId, friendship: seal.friendship, seq: seal.seq, payload: 'p1' });
  next = steps(next.state, { type: 'acked', peer: 'k7q2zd', localId: seal.localId, queued: true });
  assert.equal(next.state.friends.get('k7q2zd').messages.at(-1).state, 'stored');
  return next.state;
}
const lastOut = (state) => state.friends.get('k7q2zd').messages.filter((m) => m.direction === 'out').at(-1);

test('a receipt of an earlier contact between the same keys (seqs restart at 1) does not count as delivery', async () => {
  const state = await contactWithStoredMessage();
  // The earlier contact's receipt for its seq 1, replayed by the server: bound to our old secret, or (made
  // before receipts were bound) not bound at all.
  for (const fields of [{ acks: [1], for: await contactTag(OLD_SECRET) }, { acks: [1] }]) {
    const after = (await deliverControl(state, 'receipt', fields)).state;
    assert.equal(lastOut(after).state, 'stored', JSON.stringify(fields).slice(0, 40));
  }
  // This contact's own receipt, bound to our secret, does.
  const confirmed = (await deliverControl(state, 'receipt', { acks: [1], for: await contactTag(NEW_SECRET) })).state;
  assert.equal(lastOut(confirmed).state, 'delivered');
});

test('a `remove` of an earlier contact replayed into a quickly re-added one is ignored; this contact\'s own ends it', async () => {
  // Re-added a minute after the earlier contact was removed: the earlier removal is signed within the clock margin.
  const state = await contactState({ mine: NEW_SECRET, mineTag: await contactTag(NEW_SECRET), since: 1_800_000_060_000 });
  for (const fields of [{ for: await contactTag(OLD_SECRET) }, {}]) {
    const after = (await deliverControl(state, 'remove', fields)).state;
    assert.equal(after.friends.get('k7q2zd').status, 'friends', JSON.stringify(fields));
  }
  const ended = (await deliverControl(state, 'remove', { for: await contactTag(NEW_SECRET) })).state;
  assert.equal(ended.friends.get('k7q2zd').status, 'ended');
});

test('after a reload, a replayed `rendezvous` (even one signed later) cannot move where we send; the book keeps theirsTs', async () => {
  const { step } = await import('./helpers/model.mjs');
  const state = await contactState({ mine: NEW_SECRET, mineTag: await contactTag(NEW_SECRET), theirs: THEIR_SECRET, theirsTs: 1_799_000_000_000 });
  assert.equal(state.friends.get('k7q2zd').rendezvous.theirsTs, 1_799_000_000_000, 'theirsTs comes back from the book');
  const OTHER_SECRET = toBase64Url(new Uint8Array(32).fill(9));
  for (const fields of [{ secret: OTHER_SECRET }, { secret: OTHER_SECRET, for: await contactTag(OLD_SECRET) }, { secret: OTHER_SECRET, for: await contactTag(NEW_SECRET) }]) {
    const after = (await deliverControl(state, 'rendezvous', fields)).state;
    assert.equal(after.friends.get('k7q2zd').rendezvous.theirs, THEIR_SECRET, JSON.stringify(Object.keys(fields)));
    // The wiring derives the send handle from `theirs`: unchanged, so sends go where they went.
    const { text } = serializeBook([contactRecord(after.friends.get('k7q2zd'), 1)], after.ownFingerprint, 1);
    assert.equal(parseBook(text, after.ownFingerprint).contacts[0].theirsTs, 1_799_000_000_000);
  }
  void step;
});

test('making a contact: the requester takes only an answer bound to its secret; the accepter only an offer signed in this friendship', async () => {
  const { online, befriend, receive, step, effectsOf, BOB, BOB_KEY, NOW } = await import('./helpers/model.mjs');
  const supported = (state) => step(state, { type: 'handlesSupported', supported: true }).state;
  // Requester: we asked Bob; our secret goes to him, unbound (we do not know his yet).
  let state = supported(befriend(online(), BOB, BOB_KEY));
  const created = step(state, { type: 'rendezvousSecretCreated', peer: BOB, secret: NEW_SECRET, tag: await contactTag(NEW_SECRET) });
  const [offer] = effectsOf(created, 'sendControl');
  assert.equal(offer.kind, 'rendezvous');
  assert.equal(offer.bindTo, '', 'nothing to bind the first offer to');
  state = created.state;
  const answer = (fields) => ({ ok: true, text: buildControlEnvelope('rendezvous', { to: state.ownFingerprint, ts: NOW, secret: THEIR_SECRET, ...fields }) });
  for (const fields of [{}, { for: await contactTag(OLD_SECRET) }]) {
    assert.equal(receive(state, BOB, answer(fields)).state.friends.get(BOB).rendezvous.theirs, '', JSON.stringify(fields));
  }
  const made = receive(state, BOB, answer({ for: await contactTag(NEW_SECRET) })).state.friends.get(BOB);
  assert.equal(made.rendezvous.theirs, THEIR_SECRET);
  assert.equal(made.rendezvous.shared, true, 'a bound answer proves they have our secret');

  // Accepter: Bob asked us. His offer signed after our friendship began is taken; a replayed older one is not.
  let accepter = supported(befriend(online(), BOB, BOB_KEY));
  accepter = { ...accepter, friends: new Map([[BOB, { ...accepter.friends.get(BOB), requestedByMe: false }]]) };
  const offerOf = (ts) => ({ ok: true, text: buildControlEnvelope('rendezvous', { to: accepter.ownFingerprint, ts, secret: THEIR_SECRET }) });
  assert.equal(receive(accepter, BOB, offerOf(NOW - 60 * 60 * 1000)).state.friends.get(BOB).rendezvous.theirs, '');
  assert.equal(receive(accepter, BOB, offerOf(NOW)).state.friends.get(BOB).rendezvous.theirs, THEIR_SECRET);
});

// --- befriending a contact again by ID -------------------------------------------------------------------

test('befriending by ID someone who is already a contact continues that contact: one entry, its history and verification kept', async () => {
  const { online, step, steps, effectsOf, frame, keyChecked, systemLines, BOB, BOB_KEY, DAN, NOW } = await import('./helpers/model.mjs');
  const { assessKey } = await import('../../public/js/trust.js');
  // Bob is a verified contact from the book (his key's fingerprint is OTHER), with one message unconfirmed.
  let state = step(online(), { type: 'bookLoaded', contacts: [record(OTHER, { verified: true, userId: 'Bob', publicArmored: BOB_KEY.publicArmored })] }).state;
  assert.equal(BOB_KEY.fingerprint, OTHER);
  const before = state.friends.get('k7q2zd');

  // Bob (who lost his book, or whose contact did not answer) asks again from his new session ID.
  let next = step(state, frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored }));
  next = step(next.state, keyChecked(effectsOf(next, 'checkKey')[0], BOB_KEY));
  assert.equal(assessKey(next.state, BOB, OTHER, 'Bob'), 'contact', 'the card says it is a contact, not an alarm');
  next = steps(next.state, { type: 'requestAccepted', id: BOB, key: BOB_KEY, viaInvite: null, now: NOW });

  const friends = [...next.state.friends.values()];
  assert.deepEqual(friends.map((f) => f.id), [BOB], 'one entry, under the live ID');
  const bob = friends[0];
  assert.equal(bob.trust, 'verified', 'verification kept');
  assert.equal(bob.idLive, true);
  assert.ok(systemLines(next.state, BOB).includes('restored'), 'the contact\'s conversation is there');
  assert.deepEqual(systemLines(next.state, BOB).slice(-2), ['contact_merged', 'started']);
  assert.deepEqual(next.all.filter((e) => e.type === 'moved'), [{ type: 'moved', from: 'k7q2zd', to: BOB }]);
  // A new friendship: seqs restart both ways and new secrets are exchanged (the other side may have lost its book).
  assert.equal(bob.sendSeq, 0);
  assert.equal(bob.rendezvous.mine, '');
  const old = bob.messages.find((m) => m.direction === 'out' && m.text === 'hi');
  assert.equal(old.state, 'undelivered', 'the old contact never confirmed it');
  assert.equal(old.error, 'contact_restarted');
  assert.equal(old.payload, null, 'Retry seals it anew in the new friendship');
  assert.equal(before.messages.length + 2, bob.messages.length);

  // A different key under the same name from another ID stays flagged, and is another entry.
  const mallory = { ...BOB_KEY, fingerprint: 'F'.repeat(40), publicArmored: BOB_KEY.publicArmored.replace('Bob B', 'Bob F') };
  assert.equal(assessKey(state, DAN, mallory.fingerprint, 'Bob'), 'name_reused');
  next = step(state, frame({ type: 'FRIEND_REQUEST', from: DAN, public_key: mallory.publicArmored }));
  next = step(next.state, keyChecked(effectsOf(next, 'checkKey')[0], mallory));
  next = step(next.state, { type: 'requestAccepted', id: DAN, key: mallory, viaInvite: null, now: NOW });
  assert.deepEqual([...next.state.friends.keys()].sort(), [DAN, 'k7q2zd'].sort());
  assert.equal(next.state.friends.get(DAN).trust, 'unverified');

  // The contact's key from another ID while the contact's own ID friendship lives is still the alarm.
  const live = { ...state, friends: new Map([['k7q2zd', { ...before, idLive: true }]]) };
  assert.equal(assessKey(live, BOB, OTHER, 'Bob'), 'pinned_elsewhere');
});

// --- seqs given up on --------------------------------------------------------------------------------------

test('a seq given up on (past 256 held back) is shown late and receipted when it comes, never receipted unseen', async () => {
  const { MAX_MISSING_RANGES, checkedReceived, mergeReceived } = await import('../../public/js/receipts.js');
  // Seq 2 is held back while 257 later ones arrive: the record gives it up to stay bounded.
  let r = accept(emptyReceived(), 1);
  for (let seq = 3; seq <= 3 + MAX_EXTRA; seq += 1) r = accept(r, seq);
  assert.ok(r.extra.length <= MAX_EXTRA && r.through > 2);
  assert.deepEqual(r.missing, [[2, 2]]);
  assert.equal(classifyReceived(r, 2).kind, 'late', 'not a duplicate: it was never shown');
  const filled = accept(r, 2);
  assert.deepEqual(filled.missing, []);
  assert.equal(classifyReceived(filled, 2).kind, 'duplicate');

  // In the domain: it comes to our handle, is shown (late) and receipted; a second copy is only a duplicate.
  const { step, effectsOf } = await import('./helpers/model.mjs');
  const state = await contactState({ received: r, mineTag: await contactTag(SECRET) });
  const deliver = (s, seq) => {
    const arrived = step(s, { type: 'frame', epoch: s.session.epoch, frame: { type: 'MESSAGE', handle: 'L'.repeat(43), payload: `${ARMOR}x`, ts: 1 } });
    const [open] = effectsOf(arrived, 'open');
    const text = JSON.stringify({ v: 1, to: s.ownFingerprint, seq, ts: 1_800_000_000_000, text: `seq ${seq}` });
    return step(arrived.state, { type: 'opened', peer: open.peer, incoming: open.incoming, opened: { ok: true, text } });
  };
  const late = deliver(state, 2);
  const shown = late.state.friends.get('k7q2zd').messages.filter((m) => m.direction === 'in');
  assert.deepEqual(shown.map((m) => [m.text, m.verified, m.late]), [['seq 2', true, true]]);
  assert.deepEqual(effectsOf(late, 'sendControl').map((e) => e.fields.acks), [[2]]);
  const again = deliver(late.state, 2);
  assert.equal(again.state.friends.get('k7q2zd').messages.filter((m) => m.direction === 'in').length, 1);

  // Bounded: past MAX_MISSING_RANGES ranges the oldest are forgotten below `floor`; a seq there is neither
  // shown nor receipted (the record cannot tell whether it was shown).
  let wide = emptyReceived();
  for (let seq = 2; seq < 2 + 2 * (MAX_EXTRA + MAX_MISSING_RANGES + 10); seq += 2) wide = accept(wide, seq);
  assert.equal(wide.missing.length, MAX_MISSING_RANGES);
  assert.ok(wide.floor > 1);
  assert.equal(classifyReceived(wide, 1).kind, 'unknown');
  const forgotten = deliver(await contactState({ received: wide, mineTag: await contactTag(SECRET) }), 1);
  assert.equal(forgotten.state.friends.get('k7q2zd').messages.filter((m) => m.direction === 'in').length, 0);
  assert.deepEqual(effectsOf(forgotten, 'sendControl'), [], 'no receipt for what was not shown');

  // Stored and merged: a seq is accepted when either record accepted it; a record written wrong shows nothing again.
  assert.deepEqual(checkedReceived(JSON.parse(JSON.stringify(r))), r);
  assert.deepEqual(checkedReceived({ through: 9, extra: [], missing: [[5, 3]] }), { through: 9, extra: [], missing: [], floor: 9 });
  assert.deepEqual(checkedReceived({ through: 9, extra: [] }), { through: 9, extra: [], missing: [], floor: 0 });
  const other = accept(accept(emptyReceived(), 1), 2); // the other book did get seq 2
  assert.equal(classifyReceived(mergeReceived(r, other), 2).kind, 'duplicate');
  assert.equal(classifyReceived(mergeReceived(r, emptyReceived()), 2).kind, 'late');
});

// --- replayed probes cannot grow the control queue --------------------------------------------------------

test('replayed probes: each nonce answered once, one answer per friend waiting, receipts first, the queue capped', async () => {
  // The domain: a probe bound to this contact, replayed, is answered once.
  const state = await contactState({ mineTag: await contactTag(SECRET) });
  const probe = { nonce: 'n'.repeat(22), for: await contactTag(SECRET) };
  const first = await deliverControl(state, 'here', probe);
  assert.equal(first.effects.filter((e) => e.type === 'sendControl' && e.purpose === 'answer').length, 1);
  const replayed = await deliverControl(first.state, 'here', probe);
  assert.equal(replayed.effects.filter((e) => e.type === 'sendControl').length, 0, 'a replayed probe is not answered again');
  assert.equal((await deliverControl(state, 'here', { nonce: probe.nonce })).effects.length, 0, 'an unbound probe is not answered');

  // The effects runner: 500 answers for Bob (whatever the nonces) wait as one, and a receipt goes before it.
  const { createEffects, MAX_CONTROL_QUEUED } = await import('../../public/js/effects.js');
  const sent = [];
  const reported = [];
  const effects = createEffects({
    transport: { request: async (frame) => { sent.push(JSON.parse(frame.payload.slice(ARMOR.length))); return { type: 'ACK' }; } },
    pgp: { seal: async (text) => ARMOR + text },
    dispatch: async (event) => { reported.push(event); },
    page: { error: (error) => { throw error; } },
  });
  const answer = (peer, n) => ({ type: 'sendControl', peer, purpose: 'answer', kind: 'here', fields: { re: `${n}`.padStart(22, 'r') }, to: FP, route: { handle: 'H'.repeat(43), mailbox: false }, publicArmored: 'k' });
  const receipt = { type: 'sendControl', peer: 'bob', purpose: 'receipt', kind: 'receipt', fields: { acks: [7] }, to: FP, route: { handle: 'H'.repeat(43) }, publicArmored: 'k' };
  await effects.run([answer('bob', 0)]);
  await effects.run([...Array.from({ length: 500 }, (_, i) => answer('bob', i + 1)), receipt]);
  await until(() => sent.length >= 3, 'the receipt and the merged answer');
  assert.deepEqual(sent.map((e) => e.kind), ['here', 'receipt', 'here']);
  assert.equal(sent[2].re, '500'.padStart(22, 'r'), 'the waiting answer echoes the latest probe');
  assert.equal(effects.controlQueued, 0, 'nothing else was queued');

  // Capped (at MAX_CONTROL_QUEUED, here 8): answers to more friends than the queue holds are dropped and
  // reported, never queued without end.
  assert.ok(MAX_CONTROL_QUEUED >= 3 * 1365, 'room for a few envelopes per contact');
  const capped = createEffects({
    transport: { request: async () => ({ type: 'ACK' }) }, pgp: { seal: async (text) => ARMOR + text },
    dispatch: async (event) => { reported.push(event); }, page: { error: (error) => { throw error; } }, maxControlQueued: 8,
  });
  await capped.run(Array.from({ length: 58 }, (_, i) => answer(`peer${i}`, i)));
  assert.ok(capped.controlQueued <= 8);
  // Eight wait and one is on its way: the other 49 are dropped.
  await until(() => reported.filter((e) => e.type === 'controlSent' && e.code === 'dropped').length === 49, 'the dropped ones reported');
});

test('a control envelope the server never answers does not stall the ones behind it', async () => {
  const { createEffects } = await import('../../public/js/effects.js');
  const sent = [];
  const outcomes = [];
  const effects = createEffects({
    transport: { request: (frame) => { sent.push(frame); return sent.length === 1 ? new Promise(() => {}) : Promise.resolve({ type: 'ACK' }); } },
    pgp: { seal: async (text) => ARMOR + text },
    dispatch: async (event) => { outcomes.push(event); },
    page: { error: (error) => { throw error; } },
    controlAnswerMs: 50,
  });
  const probe = (peer) => ({ type: 'sendControl', peer, purpose: 'remove', kind: 'remove', fields: {}, to: FP, route: { handle: 'H'.repeat(43) }, publicArmored: 'k' });
  await effects.run([probe('bob'), probe('carol')]);
  await until(() => outcomes.filter((e) => e.type === 'controlSent').length === 2, 'both outcomes');
  assert.deepEqual(outcomes.filter((e) => e.type === 'controlSent').map((e) => [e.peer, e.code]), [['bob', 'no_answer'], ['carol', null]]);
});

test('the server\'s plain ACK of a message to a handle never shows the contact online; its signed answer does', async () => {
  const { steps } = await import('./helpers/model.mjs');
  const state = await contactState({ mineTag: await contactTag(SECRET), lastReachable: 2 });
  assert.equal(state.friends.get('k7q2zd').presence, 'away');
  let next = steps(state, { type: 'messageWritten', id: 'k7q2zd', text: 'are you there' });
  const seal = next.all.find((e) => e.type === 'seal');
  next = steps(next.state, { type: 'sealed', peer: seal.peer, localId: seal.localId, friendship: seal.friendship, seq: seal.seq, payload: 'p' });
  next = steps(next.state, { type: 'acked', peer: 'k7q2zd', localId: seal.localId, queued: false });
  const after = next.state.friends.get('k7q2zd');
  assert.equal(after.messages.at(-1).state, 'sent');
  assert.equal(after.presence, 'away', 'an ACK without `queued` is the server\'s word, not the friend\'s');
  assert.equal(after.lastReachable, 2);
  // Their signed answer to our probe does show them online.
  const probed = steps(next.state, { type: 'probeSent', peer: 'k7q2zd', nonce: 'p'.repeat(22) });
  const answered = await deliverControl(probed.state, 'here', { nonce: 'a'.repeat(22), re: 'p'.repeat(22), for: await contactTag(SECRET) });
  assert.equal(answered.state.friends.get('k7q2zd').presence, 'online');
});

// --- leaving the page ----------------------------------------------------------------------------------------

test('closing the page asks first only when something would be lost, not for remembered contacts', async () => {
  const { unloadLoses } = await import('../../public/js/contactbook.js');
  const { online, befriend, step, BOB, BOB_KEY } = await import('./helpers/model.mjs');
  const contact = await contactState({ unconfirmed: [] });
  const saved = { remember: true, bookUnsaved: false };
  assert.equal(unloadLoses(contact, saved), false, 'a remembered contact loses nothing');
  assert.equal(unloadLoses(contact, { remember: false, bookUnsaved: false }), true, 'without "remember" it is gone after a reload');
  assert.equal(unloadLoses(contact, { remember: true, bookUnsaved: true }), true, 'the book\'s last changes are not stored yet');
  assert.equal(unloadLoses(online(), { remember: true, bookUnsaved: false }), false, 'nobody to lose');
  assert.equal(unloadLoses(befriend(online(), BOB, BOB_KEY), saved), true, 'a friend by ID who is not a contact');
  // A message not sealed yet has no seq, so the book cannot hold it; once sealed (and saved) it goes again after a reload.
  const offline = { ...contact, session: { ...contact.session, online: false } };
  const written = step(offline, { type: 'messageWritten', id: 'k7q2zd', text: 'not sealed yet' }).state;
  assert.equal(unloadLoses(written, saved), true);
  const restored = await contactState({ unconfirmed: [{ seq: 3, ts: 9, text: 'unconfirmed' }] });
  assert.equal(unloadLoses(restored, saved), false, 'an unconfirmed message is in the book and goes again');
  const ended = { ...contact, friends: new Map([['k7q2zd', { ...contact.friends.get('k7q2zd'), status: 'ended' }]]) };
  assert.equal(unloadLoses(ended, { remember: false, bookUnsaved: false }), false);
});
