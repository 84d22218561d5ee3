// Chat messages as pure transitions (public/js/outbox.js, inbox.js through transition.js), under Node: sending
// (seal → transmit → delivered / queued / undelivered / refused, one in flight per friend, `seq` given back when
// refused, busy retries, the same payload again after a reconnect) and receiving (the §6 checks, quiet
// duplicates, replays within and across friendships). Every step also checks that the state it was given is
// unchanged (helpers/model.mjs step).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FRAME_OVERHEAD } from '../../public/js/envelope.js';
import {
  BOB, BOB_KEY, CAROL, MAX_MESSAGE_BYTES, ME, NOW, befriend, effectsOf, envelope, frame, lastLine, lines, online,
  receive, step, steps,
} from './helpers/model.mjs';

const PAYLOAD = (seq) => `-----BEGIN PGP MESSAGE-----\nsealed ${seq}\n-----END PGP MESSAGE-----`;
const outgoing = (state, id = BOB) => lines(state, id).filter((m) => m.direction === 'out');

/** Bob is our friend and we are online. */
const withBob = () => befriend(online(), BOB, BOB_KEY);

/** The user writes `text` to Bob; returns the result (its effects ask for sealing when it can go now). */
const write = (state, text, now = NOW) => step(state, { type: 'messageWritten', id: BOB, text, now });

/** The crypto worker sealed what `effect` asked for. */
const sealedBy = (effect) => ({ type: 'sealed', peer: effect.peer, localId: effect.localId, friendship: effect.friendship, seq: effect.seq, payload: PAYLOAD(effect.seq) });

/** Writes `text` and carries it through sealing; returns the result whose effect is the `transmit`. */
function writeAndSeal(state, text) {
  const written = write(state, text);
  const [seal] = effectsOf(written, 'seal');
  assert.ok(seal, 'the message was handed to the crypto worker');
  return step(written.state, sealedBy(seal));
}

test('send → sealed with the next seq → sent with a ref → delivered on the ACK', () => {
  const written = write(withBob(), 'hello', NOW + 7);
  const message = outgoing(written.state)[0];
  assert.deepEqual([message.state, message.text, message.ts, message.seq, message.payload], ['waiting', 'hello', NOW + 7, 0, null]);
  assert.deepEqual(written.state.friends.get(BOB).outbox, [message.localId]);
  assert.deepEqual(written.effects, [{
    type: 'seal', peer: BOB, localId: message.localId, friendship: 1, seq: 1,
    envelope: JSON.stringify({ v: 1, to: BOB_KEY.fingerprint, seq: 1, ts: NOW + 7, text: 'hello' }),
    publicArmored: BOB_KEY.publicArmored,
  }]);

  const sealed = step(written.state, sealedBy(written.effects[0]));
  const ref = `m${message.localId}.0`;
  assert.deepEqual(sealed.effects, [{ type: 'transmit', peer: BOB, localId: message.localId, frame: { type: 'MESSAGE', to: BOB, payload: PAYLOAD(1), ref }, persist: false }]);
  const sending = outgoing(sealed.state)[0];
  assert.deepEqual([sending.state, sending.seq, sending.ref], ['sending', 1, ref]);
  assert.equal(sealed.state.friends.get(BOB).sendSeq, 1);

  const acked = step(sealed.state, { type: 'acked', peer: BOB, localId: message.localId, queued: false });
  assert.equal(outgoing(acked.state)[0].state, 'delivered');
  assert.deepEqual(acked.state.friends.get(BOB).outbox, []);
  assert.equal(acked.state.friends.get(BOB).sending, null);
  assert.deepEqual(acked.effects, []);
});

test('one MESSAGE per friend in flight: the next is sealed only once the first is acknowledged, with the next seq', () => {
  const first = writeAndSeal(withBob(), 'one');
  const second = write(first.state, 'two');
  assert.deepEqual(second.effects, [], 'nothing starts while the first is in flight');
  assert.equal(outgoing(second.state)[1].state, 'waiting');
  const acked = step(second.state, { type: 'acked', peer: BOB, localId: outgoing(second.state)[0].localId, queued: false });
  const [seal] = effectsOf(acked, 'seal');
  assert.equal(seal.seq, 2);
  assert.equal(seal.localId, outgoing(second.state)[1].localId);
});

test('a queued ACK is "queued" until the friend is back online, then delivered', () => {
  const sealed = writeAndSeal(withBob(), 'while away');
  const { localId } = outgoing(sealed.state)[0];
  const queued = step(sealed.state, { type: 'acked', peer: BOB, localId, queued: true });
  assert.equal(outgoing(queued.state)[0].state, 'queued');
  const away = step(queued.state, frame({ type: 'PRESENCE', id: BOB, online: false }));
  assert.equal(outgoing(away.state)[0].state, 'queued');
  const back = step(away.state, frame({ type: 'PRESENCE', id: BOB, online: true }));
  assert.equal(outgoing(back.state)[0].state, 'delivered');
});

test('UNDELIVERED marks the message with that ref, whoever it was to', () => {
  const sealed = writeAndSeal(withBob(), 'lost');
  const message = outgoing(sealed.state)[0];
  const queued = step(sealed.state, { type: 'acked', peer: BOB, localId: message.localId, queued: true });
  const undelivered = step(queued.state, { type: 'frame', frame: { type: 'UNDELIVERED', to: BOB, ref: message.ref }, epoch: 0 });
  assert.deepEqual([outgoing(undelivered.state)[0].state, outgoing(undelivered.state)[0].error], ['undelivered', 'friend_gone']);
  const unknown = step(queued.state, { type: 'frame', frame: { type: 'UNDELIVERED', to: BOB, ref: 'm999.0' }, epoch: 0 });
  assert.equal(unknown.state, queued.state);
});

test('written while offline: it waits, and goes out after the next CONNECT reply', () => {
  const offline = step(withBob(), { type: 'status', status: 'reconnecting' });
  const written = write(offline.state, 'typed offline');
  assert.deepEqual(written.effects, []);
  assert.equal(outgoing(written.state)[0].state, 'waiting');
  const resumed = step(written.state, { type: 'connected', id: ME, version: 2, resumed: true, resumeAttempted: true, friends: [{ id: BOB, online: true }], limits: {} });
  assert.equal(effectsOf(resumed, 'seal').length, 1);
});

test('a connection lost before the ACK: the same payload, seq and ref are sent again after the resume', () => {
  const sealed = writeAndSeal(withBob(), 'in flight');
  const [transmit] = effectsOf(sealed, 'transmit');
  const lost = steps(sealed.state,
    { type: 'status', status: 'reconnecting' },
    { type: 'sendFailed', peer: BOB, localId: transmit.localId, code: 'connection_lost' });
  const waiting = outgoing(lost.state)[0];
  assert.deepEqual([waiting.state, waiting.seq, waiting.payload], ['waiting', 1, PAYLOAD(1)]);
  assert.deepEqual(lost.all, [], 'nothing is retried while offline');

  const resumed = step(lost.state, { type: 'connected', id: ME, version: 2, resumed: true, resumeAttempted: true, friends: [{ id: BOB, online: true }], limits: {} });
  assert.deepEqual(resumed.effects, [transmit], 'the same frame again: at-least-once, never a new seq');
  assert.equal(resumed.state.friends.get(BOB).sendSeq, 1);
});

test('a busy friend: retried after 1, 2, 4 and 8 s with the same payload, then "not sent" and its seq given back', () => {
  let result = writeAndSeal(withBob(), 'busy');
  const [transmit] = effectsOf(result, 'transmit');
  const waits = [];
  for (let attempt = 1; attempt <= 4; attempt += 1) {
    result = step(result.state, { type: 'sendFailed', peer: BOB, localId: transmit.localId, code: attempt % 2 ? 'peer_busy' : 'rate_limited' });
    const [later] = effectsOf(result, 'retryLater');
    waits.push(later.ms);
    assert.equal(outgoing(result.state)[0].state, 'waiting');
    result = step(result.state, { type: 'backoffOver', peer: BOB, localId: transmit.localId });
    const [again] = effectsOf(result, 'transmit');
    assert.deepEqual(again.frame, { ...transmit.frame, ref: `m${transmit.localId}.${attempt}` });
  }
  assert.deepEqual(waits, [1000, 2000, 4000, 8000]);
  result = step(result.state, { type: 'sendFailed', peer: BOB, localId: transmit.localId, code: 'peer_busy' });
  const failed = outgoing(result.state)[0];
  assert.deepEqual([failed.state, failed.error, failed.payload], ['error', 'peer_busy', null]);
  assert.equal(result.state.friends.get(BOB).sendSeq, 0, 'the receiver never saw seq 1: it is used again');
  assert.deepEqual(result.state.friends.get(BOB).outbox, []);
});

test('unavailable (another node did not answer): retried like a busy friend, then its seq stays spent, its payload kept', () => {
  let result = writeAndSeal(withBob(), 'far away');
  const [transmit] = effectsOf(result, 'transmit');
  for (let attempt = 1; attempt <= 4; attempt += 1) {
    result = step(result.state, { type: 'sendFailed', peer: BOB, localId: transmit.localId, code: 'unavailable' });
    assert.equal(effectsOf(result, 'retryLater').length, 1);
    result = step(result.state, { type: 'backoffOver', peer: BOB, localId: transmit.localId });
    assert.equal(effectsOf(result, 'transmit').length, 1);
  }
  result = step(result.state, { type: 'sendFailed', peer: BOB, localId: transmit.localId, code: 'unavailable' });
  const failed = outgoing(result.state)[0];
  assert.equal(failed.error, 'unavailable');
  assert.equal(result.state.friends.get(BOB).sendSeq, 1, 'a copy may have arrived: seq 1 is never used for other text');
  assert.equal(failed.payload, PAYLOAD(1));
});

test('a refused message gives its seq back, so the next one takes it; "retry" seals it afresh at the end', () => {
  const sealed = writeAndSeal(withBob(), 'refused');
  const { localId } = outgoing(sealed.state)[0];
  const refused = step(sealed.state, { type: 'sendFailed', peer: BOB, localId, code: 'not_encrypted' });
  assert.deepEqual([outgoing(refused.state)[0].state, outgoing(refused.state)[0].error], ['error', 'not_encrypted']);
  const next = write(refused.state, 'next');
  assert.equal(effectsOf(next, 'seal')[0].seq, 1);

  const retried = step(refused.state, { type: 'messageRetried', id: BOB, localId, now: NOW + 9 });
  const again = lastLine(retried.state, BOB);
  assert.deepEqual([again.localId, again.state, again.error, again.ts, again.attempts], [localId, 'waiting', '', NOW + 9, 0]);
  assert.equal(effectsOf(retried, 'seal')[0].seq, 1);
  // Only a failed message can be retried.
  const delivered = step(sealed.state, { type: 'acked', peer: BOB, localId, queued: false });
  assert.equal(step(delivered.state, { type: 'messageRetried', id: BOB, localId }).state, delivered.state);
});

test('sealing that fails or makes a frame too big for the server: "not sent", no seq used', () => {
  const small = { ...withBob() };
  small.session = { ...small.session, limits: { max_message_bytes: FRAME_OVERHEAD + 100 } };
  const written = write(small, 'too big once sealed');
  const tooLong = step(written.state, sealedBy(effectsOf(written, 'seal')[0]));
  assert.deepEqual([outgoing(tooLong.state)[0].state, outgoing(tooLong.state)[0].error], ['error', 'too_long']);
  assert.equal(tooLong.state.friends.get(BOB).sendSeq, 0);
  assert.deepEqual(tooLong.effects, []);

  const slow = write(withBob(), 'slow');
  const failed = step(slow.state, { type: 'sealFailed', peer: BOB, localId: effectsOf(slow, 'seal')[0].localId, code: 'too_slow' });
  assert.deepEqual([outgoing(failed.state)[0].state, outgoing(failed.state)[0].error], ['error', 'too_slow']);
  assert.equal(failed.state.friends.get(BOB).sendSeq, 0);
});

test('when the friendship ends, what was sent is undelivered and what was not is "not sent"; late answers change nothing', () => {
  const sealed = writeAndSeal(withBob(), 'sent');
  const queuedBehind = write(sealed.state, 'not yet');
  const [first] = outgoing(queuedBehind.state);
  const ended = step(queuedBehind.state, frame({ type: 'FRIEND_REMOVE', from: BOB }));
  const [a, b] = outgoing(ended.state);
  assert.deepEqual([a.state, a.error, b.state, b.error], ['undelivered', 'friend_gone', 'error', 'friend_gone']);
  assert.deepEqual(ended.state.friends.get(BOB).outbox, []);
  assert.equal(step(ended.state, { type: 'sendFailed', peer: BOB, localId: first.localId, code: 'not_friends' }).state, ended.state);
  assert.equal(step(ended.state, { type: 'messageWritten', id: BOB, text: 'after' }).state, ended.state, 'nothing can be written to an ended friendship');

  const lost = step(queuedBehind.state, { type: 'connected', id: 'NEW1D0', version: 2, resumed: false, resumeAttempted: true, friends: [], limits: {} });
  assert.deepEqual(outgoing(lost.state).map((m) => m.error), ['session_lost', 'session_lost']);
});

test('a changed key holds the outbox until the user accepts it', () => {
  let state = online();
  state = befriend(state, BOB, BOB_KEY);
  ({ state } = step(state, frame({ type: 'FRIEND_REMOVE', from: BOB })));
  ({ state } = step(state, { type: 'requestAccepted', id: BOB, key: { ...BOB_KEY, fingerprint: 'D'.repeat(40) } }));
  assert.equal(state.friends.get(BOB).trust, 'changed');
  assert.equal(write(state, 'held').state, state, 'the composer is blocked, and so is the domain');
  const unblocked = step(state, { type: 'changedKeyAccepted', id: BOB });
  assert.equal(write(unblocked.state, 'now').effects[0].type, 'seal');
});

test('a MESSAGE from a friend is opened by the worker and, signed and in order, shown as verified', () => {
  const state = withBob();
  const arrived = step(state, { ...frame({ type: 'MESSAGE', from: BOB, payload: '-----BEGIN PGP MESSAGE-----\nx', ts: NOW - 5 }), now: NOW });
  const [open] = arrived.effects;
  assert.deepEqual([open.type, open.peer, open.payload, open.publicArmored], ['open', BOB, '-----BEGIN PGP MESSAGE-----\nx', BOB_KEY.publicArmored]);
  assert.deepEqual([open.incoming.ts, open.incoming.receivedAt, open.incoming.friendship], [NOW - 5, NOW, 1]);

  const first = receive(state, BOB, { ok: true, text: envelope(1, 'hi') });
  assert.deepEqual([first.line.text, first.line.seq, first.line.verified, first.line.problems, first.line.missing], ['hi', 1, true, [], 0]);
  assert.equal(first.state.friends.get(BOB).expectedSeq, 2);
  assert.deepEqual(first.effects, [{ type: 'incoming', from: BOB, flagged: false }]);

  const gap = receive(first.state, BOB, { ok: true, text: envelope(4, 'later') });
  assert.deepEqual([gap.line.verified, gap.line.missing], [true, 2]);
  assert.equal(gap.state.friends.get(BOB).expectedSeq, 5);
});

test('what fails a check is flagged, and only a signed, addressed message moves seq', () => {
  const state = withBob();
  const notPgp = step(state, frame({ type: 'MESSAGE', from: BOB, payload: 'plain text', ts: NOW }));
  assert.deepEqual(effectsOf(notPgp, 'open'), []);
  assert.deepEqual(lastLine(notPgp.state, BOB).problems, ['not_pgp']);
  assert.deepEqual(notPgp.effects, [{ type: 'incoming', from: BOB, flagged: true }]);
  const huge = step(state, frame({ type: 'MESSAGE', from: BOB, payload: `-----BEGIN PGP MESSAGE-----${'x'.repeat(MAX_MESSAGE_BYTES + FRAME_OVERHEAD)}`, ts: NOW }));
  assert.deepEqual(lastLine(huge.state, BOB).problems, ['oversized']);

  const forged = receive(state, BOB, { ok: false, problem: 'bad_signature', text: envelope(1, 'trust me') });
  assert.deepEqual([forged.line.problems, forged.line.hidden, forged.line.text, forged.line.verified], [['bad_signature'], true, 'trust me', false]);
  assert.equal(forged.state.friends.get(BOB).expectedSeq, 1);
  const revealed = step(forged.state, { type: 'messageRevealed', id: BOB, localId: forged.line.localId });
  assert.equal(lastLine(revealed.state, BOB).hidden, false);
  assert.deepEqual(lastLine(revealed.state, BOB).problems, ['bad_signature'], 'still flagged');

  const rerouted = receive(state, BOB, { ok: true, text: JSON.stringify({ v: 1, to: 'F'.repeat(40), seq: 1, ts: NOW, text: 'for someone else' }) });
  assert.deepEqual([rerouted.line.problems, rerouted.line.text], [['wrong_recipient'], 'for someone else']);
  assert.equal(rerouted.state.friends.get(BOB).expectedSeq, 1);
  assert.deepEqual(receive(state, BOB, { ok: true, text: '{"v":2}' }).line.problems, ['version']);
  assert.deepEqual(receive(state, BOB, { ok: false, problem: 'too_slow' }).line.problems, ['too_slow']);

  const old = receive(state, BOB, { ok: true, text: envelope(1, 'old', NOW - 2 * 24 * 3600 * 1000) });
  assert.deepEqual(old.line.problems, ['replay_old']);
  assert.equal(old.line.skewed, true);
  assert.equal(receive(state, BOB, { ok: true, text: envelope(1, 'odd ts') }, { ts: 1e300 }).line.ts, NOW, 'an impossible server time becomes ours');
});

test('the same signed message again is a quiet duplicate once; any further copy is a REPLAY', () => {
  const first = receive(withBob(), BOB, { ok: true, text: envelope(1, 'once') });
  const copy = receive(first.state, BOB, { ok: true, text: envelope(1, 'once') });
  assert.deepEqual([copy.line.duplicate, copy.line.verified, copy.line.problems], [true, false, []]);
  assert.deepEqual(copy.effects, [], 'a duplicate is not unread');
  const third = receive(copy.state, BOB, { ok: true, text: envelope(1, 'once') });
  assert.deepEqual([third.line.duplicate, third.line.problems], [false, ['replay']]);
  // Another text with a used seq is a replay at once.
  assert.deepEqual(receive(first.state, BOB, { ok: true, text: envelope(1, 'other') }).line.problems, ['replay']);
});

test('a faked end and a new friendship cannot replay the old conversation: copies are flagged, whatever their seq', () => {
  let state = withBob();
  ({ state } = receive(state, BOB, { ok: true, text: envelope(1, 'one') }));
  ({ state } = receive(state, BOB, { ok: true, text: envelope(2, 'two') }));
  ({ state } = step(state, frame({ type: 'FRIEND_REMOVE', from: BOB })));
  ({ state } = step(state, { type: 'chatClosed', id: BOB }));
  ({ state } = step(state, { type: 'requestAccepted', id: BOB, key: BOB_KEY }));
  assert.equal(state.friends.get(BOB).friendship, 2);
  const replayed = receive(state, BOB, { ok: true, text: envelope(1, 'one') });
  assert.deepEqual([replayed.line.verified, replayed.line.problems], [false, ['replay_copy']]);
  const fresh = receive(replayed.state, BOB, { ok: true, text: envelope(2, 'new') });
  assert.equal(fresh.line.verified, true);
});

test('messages from someone who is not a live friend are not ours to show', () => {
  const state = withBob();
  assert.equal(step(state, frame({ type: 'MESSAGE', from: CAROL, payload: '-----BEGIN PGP MESSAGE-----', ts: NOW })).state, state);
  const ended = step(state, frame({ type: 'FRIEND_REMOVE', from: BOB })).state;
  assert.equal(step(ended, frame({ type: 'MESSAGE', from: BOB, payload: '-----BEGIN PGP MESSAGE-----', ts: NOW })).state, ended);
});
