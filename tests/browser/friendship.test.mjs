// The friendship lifecycle as pure transitions (public/js/friendship.js, requests.js through transition.js), under
// Node: requests both ways and their answers, acceptances (forged ones too), withdrawals, the ends of a
// friendship and of our session, the resume reply, presence. Every step also checks that the state it was given
// is unchanged (helpers/model.mjs step).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { peerOf, requestProblem } from '../../public/js/friendship.js';
import { createModel, shownPresence } from '../../public/js/model.js';
import { MAX_KEPT_REQUESTS, OTHER_KEYS_KEPT, WITHDRAWN_NOTE_MS } from '../../public/js/requests.js';
import { assessKey } from '../../public/js/trust.js';
import {
  BOB, BOB_KEY, CAROL, CAROL_KEY, DAN, DAN_KEY, ME, NOW, OWN_FP, befriend, effectsOf, frame, keyChecked, keyOf, lastLine, online,
  step, steps, systemLines,
} from './helpers/model.mjs';

/** A FRIEND_REQUEST from `id` with `key` (null: refused by the worker), checked; returns the result of the check. */
function requestFrom(state, id, key, armored = key.publicArmored) {
  const arrived = step(state, frame({ type: 'FRIEND_REQUEST', from: id, public_key: armored }, { epoch: state.session.epoch }));
  const [check] = effectsOf(arrived, 'checkKey');
  assert.ok(check, 'the request asked for its key to be checked');
  return step(arrived.state, keyChecked(check, key));
}

test('request out → accepted: the key is checked, then the friendship starts with it pinned', () => {
  const sent = step(online(), { type: 'requestSent', id: BOB, unsure: false });
  assert.deepEqual(sent.state.outgoingRequests.get(BOB), { id: BOB, state: 'pending', unsure: false });
  assert.deepEqual(sent.effects, []);

  const accepted = step(sent.state, frame({ type: 'FRIEND_ACCEPT', from: BOB, public_key: BOB_KEY.publicArmored }));
  assert.deepEqual(accepted.effects, [{ type: 'checkKey', purpose: 'accept', from: BOB, publicArmored: BOB_KEY.publicArmored, epoch: 0 }]);
  assert.equal(accepted.state.outgoingRequests.has(BOB), false);
  assert.equal(accepted.state.friends.has(BOB), false, 'no friendship before the key is checked');

  const started = step(accepted.state, keyChecked(accepted.effects[0], BOB_KEY));
  const bob = started.state.friends.get(BOB);
  assert.equal(bob.status, 'friends');
  assert.equal(bob.presence, 'online');
  assert.equal(bob.fingerprint, BOB_KEY.fingerprint);
  assert.equal(bob.publicArmored, BOB_KEY.publicArmored);
  assert.equal(bob.trust, 'unverified');
  assert.equal(bob.friendship, 1);
  assert.equal(bob.friendshipStartedAt, NOW);
  assert.deepEqual([bob.sendSeq, bob.expectedSeq], [0, 1]);
  assert.equal(started.state.pins.get(BOB), BOB_KEY.fingerprint);
  assert.deepEqual([...started.state.offeredKeys.get(BOB)], [BOB_KEY.fingerprint]);
  // "accepted your request" comes first: it is why the friendship started.
  assert.deepEqual(systemLines(started.state, BOB), ['accepted', 'started']);
  assert.deepEqual(started.effects, [{ type: 'show', id: BOB }, { type: 'notify', what: 'accepted', from: BOB }]);
});

test('an acceptance whose key is refused starts nothing and ends the friendship on the server', () => {
  const { state } = step(online(), { type: 'requestSent', id: BOB, unsure: false });
  const accepted = step(state, frame({ type: 'FRIEND_ACCEPT', from: BOB, public_key: 'not a key' }));
  const refused = step(accepted.state, keyChecked(accepted.effects[0], null));
  assert.equal(refused.state.friends.has(BOB), false);
  assert.deepEqual(refused.effects, [
    { type: 'notice', code: 'accept_key_refused', from: BOB, refusal: { code: 'policy', message: 'This key uses an algorithm SecChat does not accept.' } },
    { type: 'send', frame: { type: 'FRIEND_REMOVE', to: BOB } },
  ]);
});

test('a FRIEND_ACCEPT without our pending request, or from a live friend, is ignored with a warning', () => {
  const stray = step(online(), frame({ type: 'FRIEND_ACCEPT', from: CAROL, public_key: CAROL_KEY.publicArmored }));
  assert.deepEqual(stray.effects, [{ type: 'notice', code: 'unexpected_accept', from: CAROL, live: false }]);
  assert.equal(stray.state.friends.size, 0);

  // A live friend: seq must not restart, and the chat gets one warning line however often it is repeated.
  let state = befriend(online(), BOB, BOB_KEY);
  state = { ...state, friends: new Map(state.friends).set(BOB, { ...state.friends.get(BOB), sendSeq: 5, expectedSeq: 7 }) };
  const forged = frame({ type: 'FRIEND_ACCEPT', from: BOB, public_key: BOB_KEY.publicArmored });
  const twice = steps(state, forged, forged);
  assert.deepEqual(twice.all, [
    { type: 'notice', code: 'unexpected_accept', from: BOB, live: true },
    { type: 'notice', code: 'unexpected_accept', from: BOB, live: true },
  ]);
  const bob = twice.state.friends.get(BOB);
  assert.deepEqual([bob.sendSeq, bob.expectedSeq, bob.friendship], [5, 7, 1]);
  assert.deepEqual(systemLines(twice.state, BOB), ['accepted', 'started', 'unexpected_accept']);

  // Not even with a request to them pending (the add-friend form never sends one to a live friend).
  const pending = step(state, { type: 'requestSent', id: BOB, unsure: false });
  assert.deepEqual(step(pending.state, forged).effects, [{ type: 'notice', code: 'unexpected_accept', from: BOB, live: true }]);

  // A declined request is not pending any more either.
  const declined = steps(online(), { type: 'requestSent', id: CAROL, unsure: false }, frame({ type: 'FRIEND_DECLINE', from: CAROL }));
  assert.equal(declined.state.outgoingRequests.get(CAROL).state, 'declined');
  const late = step(declined.state, frame({ type: 'FRIEND_ACCEPT', from: CAROL, public_key: CAROL_KEY.publicArmored }));
  assert.deepEqual(effectsOf(late, 'checkKey'), []);
});

test('a request whose ACK was lost is pending too, and its acceptance counts', () => {
  const { state } = step(online(), { type: 'requestSent', id: BOB, unsure: true });
  assert.equal(state.outgoingRequests.get(BOB).unsure, true);
  const accepted = step(state, frame({ type: 'FRIEND_ACCEPT', from: BOB, public_key: BOB_KEY.publicArmored }));
  assert.equal(effectsOf(accepted, 'checkKey').length, 1);
});

test('request in → a card once its key is checked; accepting starts the friendship with the card\'s key', () => {
  const state = online();
  const arrived = step(state, frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored }));
  assert.deepEqual(arrived.effects, [{ type: 'checkKey', purpose: 'request', from: BOB, publicArmored: BOB_KEY.publicArmored, epoch: 0 }]);
  assert.equal(arrived.state.requestsChecking, 1);
  assert.equal(arrived.state.incomingRequests.size, 0);

  const card = step(arrived.state, keyChecked(arrived.effects[0], BOB_KEY));
  assert.equal(card.state.requestsChecking, 0);
  assert.deepEqual(card.state.incomingRequests.get(BOB), {
    id: BOB, number: 1, publicArmored: BOB_KEY.publicArmored, fingerprint: BOB_KEY.fingerprint, userId: 'Bob', refusal: null, viaInvite: null, inviteShared: false,
    otherKeys: [], moreOtherKeys: 0,
  });
  assert.deepEqual([...card.state.offeredKeys.get(BOB)], [BOB_KEY.fingerprint]);
  assert.deepEqual(card.effects, [{ type: 'notify', what: 'request', from: BOB }]);
  assert.equal(card.state.pins.has(BOB), false, 'nothing is pinned before the user accepts');

  const accepted = step(card.state, { type: 'requestAccepted', id: BOB, key: BOB_KEY });
  assert.equal(accepted.state.incomingRequests.has(BOB), false);
  assert.equal(accepted.state.friends.get(BOB).status, 'friends');
  assert.equal(accepted.state.pins.get(BOB), BOB_KEY.fingerprint);
  assert.deepEqual(systemLines(accepted.state, BOB), ['started']);
});

test('request in → declined, or gone on the server: the card goes and nothing starts', () => {
  const { state } = requestFrom(online(), BOB, BOB_KEY);
  const closed = step(state, { type: 'requestClosed', id: BOB });
  assert.equal(closed.state.incomingRequests.size, 0);
  assert.equal(closed.state.friends.size, 0);
  assert.equal(closed.state.withdrawnRequests.size, 0, 'an answered request is not "withdrawn"');
});

test('a request with a refused key is a card that says why, with no fingerprint to accept and no key text kept', () => {
  const { state } = requestFrom(online(), BOB, null, 'not a key');
  const card = state.incomingRequests.get(BOB);
  assert.equal(card.fingerprint, null);
  assert.equal(card.refusal.code, 'policy');
  assert.equal(card.publicArmored, '', 'a refused key is never used: its text (up to a frame\'s size) is not held');
  assert.equal(state.offeredKeys.has(BOB), false);
  // A refused key again, the same text or another: the card can only be declined, and nothing changes.
  for (const armored of ['not a key', 'not a key either']) {
    const again = requestFrom(state, BOB, null, armored).state;
    assert.equal(again.incomingRequests.get(BOB), card, armored);
    assert.equal(again.requestsChecking, 0);
  }
});

test('crossing requests: either acceptance makes us friends and clears both requests', () => {
  let { state } = step(online(), { type: 'requestSent', id: BOB, unsure: false });
  ({ state } = requestFrom(state, BOB, BOB_KEY));
  assert.ok(state.incomingRequests.has(BOB) && state.outgoingRequests.has(BOB));

  // Bob accepted ours.
  const accepted = step(state, frame({ type: 'FRIEND_ACCEPT', from: BOB, public_key: BOB_KEY.publicArmored }));
  assert.equal(accepted.state.incomingRequests.has(BOB), false);
  assert.equal(accepted.state.outgoingRequests.has(BOB), false);
  const theirs = step(accepted.state, keyChecked(accepted.effects[0], BOB_KEY));
  assert.equal(theirs.state.friends.get(BOB).status, 'friends');

  // Or we accepted theirs.
  const ours = step(state, { type: 'requestAccepted', id: BOB, key: BOB_KEY });
  assert.equal(ours.state.incomingRequests.has(BOB), false);
  assert.equal(ours.state.outgoingRequests.has(BOB), false);
  assert.equal(ours.state.friends.get(BOB).status, 'friends');
});

test('a repeated request keeps the first key: the same text is not even checked, another key is named on the card', () => {
  const { state } = requestFrom(online(), BOB, BOB_KEY);
  const same = step(state, frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored }));
  assert.deepEqual(same.effects, []);
  assert.equal(same.state, state);

  const mallory = keyOf('Bob', 'D');
  const swapped = requestFrom(state, BOB, mallory).state.incomingRequests.get(BOB);
  assert.equal(swapped.fingerprint, BOB_KEY.fingerprint);
  assert.equal(swapped.number, 1, 'still the first card');
  assert.deepEqual(swapped.otherKeys, [mallory.fingerprint]);
});

test('a request repeated with other keys names the first OTHER_KEYS_KEPT and counts the rest, without a new list per repeat', () => {
  let { state } = requestFrom(online(), BOB, BOB_KEY);
  const otherKey = (i) => ({ ...keyOf('Bob', 'F'), fingerprint: `${'F'.repeat(30)}${String(i).padStart(10, '0')}`, publicArmored: `key ${i}` });
  for (let i = 1; i <= 1000; i += 1) ({ state } = requestFrom(state, BOB, otherKey(i)));
  // Keys seen already: the first one, and one already named.
  for (const key of [BOB_KEY, otherKey(2)]) {
    const again = requestFrom(state, BOB, { ...key, publicArmored: `${key.publicArmored}\n` });
    assert.equal(again.state.incomingRequests, state.incomingRequests, key.fingerprint);
  }
  const card = state.incomingRequests.get(BOB);
  assert.equal(OTHER_KEYS_KEPT, 3);
  assert.deepEqual(card.otherKeys, [1, 2, 3].map((i) => otherKey(i).fingerprint));
  assert.equal(card.moreOtherKeys, 997);
  assert.equal(card.fingerprint, BOB_KEY.fingerprint, 'the first key stays');
  assert.equal(card.number, 1, 'still the first card');
  const more = requestFrom(state, BOB, otherKey(1001)).state.incomingRequests.get(BOB);
  assert.equal(more.otherKeys, card.otherKeys, 'no new list once three are named: only the count changes');
  assert.equal(more.moreOtherKeys, 998);
  // A refused key in a repeat is named once, as unreadable.
  let refused = requestFrom(requestFrom(online(), CAROL, CAROL_KEY).state, CAROL, null, 'bad').state;
  refused = requestFrom(refused, CAROL, null, 'bad too').state;
  assert.deepEqual(refused.incomingRequests.get(CAROL).otherKeys, ['unreadable']);
});

test('FRIEND_CANCEL removes a pending card only; for a friend or an unknown ID it changes nothing', () => {
  let { state } = requestFrom(online(), CAROL, CAROL_KEY);
  state = befriend(state, BOB, BOB_KEY);

  const cancelled = step(state, { ...frame({ type: 'FRIEND_CANCEL', from: CAROL }), now: NOW + 5 });
  assert.equal(cancelled.state.incomingRequests.has(CAROL), false);
  assert.equal(cancelled.state.withdrawnRequests.get(CAROL), NOW + 5);
  assert.deepEqual([...cancelled.state.offeredKeys.get(CAROL)], [CAROL_KEY.fingerprint], 'the key it offered stays on record');

  for (const from of [BOB, 'ZZZZZZ', CAROL]) {
    const ignored = step(cancelled.state, frame({ type: 'FRIEND_CANCEL', from }));
    assert.equal(ignored.state, cancelled.state, `FRIEND_CANCEL from ${from} changed something`);
  }

  // The note of a withdrawal is forgotten after a while.
  ({ state } = requestFrom(cancelled.state, DAN, DAN_KEY));
  const second = step(state, { ...frame({ type: 'FRIEND_CANCEL', from: DAN }), now: NOW + 5 + WITHDRAWN_NOTE_MS + 1 });
  assert.deepEqual([...second.state.withdrawnRequests.keys()], [DAN]);
  // A new request from the ID takes the note away at once, and is a new card.
  const again = requestFrom(cancelled.state, CAROL, CAROL_KEY).state;
  assert.equal(again.withdrawnRequests.has(CAROL), false);
  assert.equal(again.incomingRequests.get(CAROL).number, 2);
});

test('a new request from an ID that offered another key before is assessed against it', () => {
  let { state } = requestFrom(online(), CAROL, CAROL_KEY);
  ({ state } = step(state, frame({ type: 'DISCONNECT', id: CAROL })));
  const mallory = keyOf('Carol', 'D');
  ({ state } = requestFrom(state, CAROL, mallory));
  assert.equal(assessKey(state, CAROL, mallory.fingerprint, 'Carol'), 'key_changed');
  const accepted = step(state, { type: 'requestAccepted', id: CAROL, key: mallory });
  const carol = accepted.state.friends.get(CAROL);
  assert.equal(carol.trust, 'changed');
  assert.equal(carol.changedFrom, CAROL_KEY.fingerprint);
});

test('keys the page knows already: our own, a live friend\'s under another ID, a gone ID\'s, one with a known name', () => {
  let state = befriend(online(), BOB, BOB_KEY);
  const own = { fingerprint: OWN_FP, userId: 'Me', publicArmored: 'own' };
  assert.equal(assessKey(state, CAROL, OWN_FP, 'Me'), 'own_key');
  const mirrored = step(state, { type: 'requestAccepted', id: CAROL, key: own }).state.friends.get(CAROL);
  assert.deepEqual([mirrored.trust, mirrored.trustSource], ['changed', 'own_key']);

  assert.equal(assessKey(state, CAROL, BOB_KEY.fingerprint, 'Bob'), 'pinned_elsewhere');
  const twin = step(state, { type: 'requestAccepted', id: CAROL, key: BOB_KEY }).state.friends.get(CAROL);
  assert.deepEqual([twin.trust, twin.trustSource, twin.sharedWith], ['changed', 'pinned_elsewhere', BOB]);

  ({ state } = step(state, frame({ type: 'DISCONNECT', id: BOB })));
  assert.equal(assessKey(state, CAROL, BOB_KEY.fingerprint, 'Bob'), 'pinned_before');
  assert.equal(assessKey(state, CAROL, 'D'.repeat(40), 'Bob'), 'name_reused');
  assert.equal(assessKey(state, CAROL, 'D'.repeat(40), 'SecChat user'), 'new', 'the default name is no clash');
  const back = step(state, { type: 'requestAccepted', id: CAROL, key: BOB_KEY }).state.friends.get(CAROL);
  assert.equal(back.trust, 'unverified');
  assert.equal(back.messages.at(-1).assessment, 'pinned_before');
});

test('at most MAX_KEPT_REQUESTS requests are kept, counting those being checked; the rest are counted and dropped', () => {
  let state = online();
  state = { ...state, requestsChecking: MAX_KEPT_REQUESTS - 1 };
  const last = step(state, frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored }));
  assert.equal(effectsOf(last, 'checkKey').length, 1);
  const over = step(last.state, frame({ type: 'FRIEND_REQUEST', from: CAROL, public_key: CAROL_KEY.publicArmored }));
  assert.deepEqual(over.effects, []);
  assert.equal(over.state.requestsIgnored, 1);
  assert.equal(over.state.requestsChecking, MAX_KEPT_REQUESTS);
});

test('a key check that finishes after our session was lost adds nothing, but stops counting against the cap', () => {
  const arrived = step(online(), frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored }));
  const lost = step(arrived.state, { type: 'connected', id: 'NEW1D0', version: 2, resumed: false, resumeAttempted: true, friends: [], limits: {} });
  assert.equal(lost.state.session.epoch, 1);
  const late = step(lost.state, keyChecked(arrived.effects[0], BOB_KEY));
  assert.equal(late.state.incomingRequests.size, 0);
  assert.equal(late.state.requestsChecking, 0);
  assert.deepEqual(late.effects, []);

  // The same for an acceptance: no friendship for the old session.
  let { state } = step(online(), { type: 'requestSent', id: BOB, unsure: false });
  const accepted = step(state, frame({ type: 'FRIEND_ACCEPT', from: BOB, public_key: BOB_KEY.publicArmored }));
  ({ state } = step(accepted.state, { type: 'newSession' }));
  const stale = step(state, keyChecked(accepted.effects[0], BOB_KEY));
  assert.equal(stale.state.friends.size, 0);
});

test('FRIEND_REMOVE and DISCONNECT end a live friendship, with the reason, and keep the conversation', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  const removed = step(state, { ...frame({ type: 'FRIEND_REMOVE', from: BOB }), now: NOW + 1 });
  const bob = removed.state.friends.get(BOB);
  assert.equal(bob.status, 'ended');
  assert.equal(bob.endedReason, 'removed');
  assert.equal(bob.presence, 'online', 'presence is not overloaded with the end');
  assert.equal(shownPresence(bob, 'online'), 'gone');
  assert.deepEqual(removed.state.endedFriendships.get(BOB), { reason: 'removed', at: NOW + 1 });
  assert.deepEqual(systemLines(removed.state, BOB), ['accepted', 'started', 'ended']);
  assert.equal(removed.state.friends.get(BOB).messages.at(-1).reason, 'removed');
  // Ended is ended: a second end, or a presence, changes nothing.
  assert.equal(step(removed.state, frame({ type: 'DISCONNECT', id: BOB })).state.friends, removed.state.friends);
  assert.equal(step(removed.state, frame({ type: 'PRESENCE', id: BOB, online: false })).state, removed.state);

  const left = step(state, frame({ type: 'DISCONNECT', id: BOB }));
  assert.equal(left.state.friends.get(BOB).endedReason, 'left');
  assert.equal(left.state.endedFriendships.get(BOB).reason, 'left');

  // Ours: the server did not tell us, so nothing says a server could have faked it.
  const ours = step(state, { type: 'friendRemoved', id: BOB });
  assert.equal(ours.state.friends.get(BOB).endedReason, 'removed_by_you');
  assert.equal(ours.state.endedFriendships.has(BOB), false);

  const closed = step(ours.state, { type: 'chatClosed', id: BOB });
  assert.equal(closed.state.friends.has(BOB), false);
  assert.equal(closed.state.pins.get(BOB), BOB_KEY.fingerprint, 'what the page learned about the ID stays');
});

test('DISCONNECT of someone with a pending request withdraws their card and drops our request to them', () => {
  let { state } = requestFrom(online(), BOB, BOB_KEY);
  ({ state } = step(state, { type: 'requestSent', id: CAROL, unsure: false }));
  const gone = steps(state, frame({ type: 'DISCONNECT', id: BOB }), frame({ type: 'DISCONNECT', id: CAROL }));
  assert.equal(gone.state.incomingRequests.size, 0);
  assert.equal(gone.state.withdrawnRequests.has(BOB), true);
  assert.equal(gone.state.outgoingRequests.size, 0);
});

test('a new friendship with the same ID starts over: seq at 1, a new number, the same key still trusted as before', () => {
  let state = befriend(online(), BOB, BOB_KEY);
  ({ state } = step(state, { type: 'keyVerified', id: BOB }));
  assert.equal(state.friends.get(BOB).trust, 'verified');
  state = { ...state, friends: new Map(state.friends).set(BOB, { ...state.friends.get(BOB), sendSeq: 4, expectedSeq: 9 }) };
  ({ state } = step(state, frame({ type: 'FRIEND_REMOVE', from: BOB })));
  ({ state } = requestFrom(state, BOB, BOB_KEY));
  const again = step(state, { type: 'requestAccepted', id: BOB, key: BOB_KEY, now: NOW + 60000 }).state.friends.get(BOB);
  assert.equal(again.status, 'friends');
  assert.equal(again.endedReason, '');
  assert.deepEqual([again.sendSeq, again.expectedSeq, again.friendship, again.friendshipStartedAt], [0, 1, 2, NOW + 60000]);
  assert.equal(again.trust, 'verified');
  assert.ok(again.messages.length > 3, 'the earlier conversation is still there');

  // With another key: loud, and sending is blocked until the user confirms.
  ({ state } = step(state, { type: 'requestAccepted', id: BOB, key: keyOf('Bob', 'D') }));
  assert.equal(state.friends.get(BOB).trust, 'changed');
  ({ state } = step(state, { type: 'changedKeyAccepted', id: BOB }));
  assert.equal(state.friends.get(BOB).trust, 'unverified');
  assert.equal(systemLines(state, BOB).at(-1), 'key_accepted');
});

test('the resume reply keeps the friends it lists, with their presence, and ends the others', () => {
  let state = befriend(online(), BOB, BOB_KEY);
  state = befriend(state, CAROL, CAROL_KEY);
  state = befriend(state, DAN, DAN_KEY);
  ({ state } = step(state, { type: 'status', status: 'reconnecting' }));
  assert.equal(state.session.online, false);
  const resumed = step(state, {
    type: 'connected', id: ME, version: 2, resumed: true, resumeAttempted: true,
    friends: [{ id: BOB, online: true }, { id: CAROL, online: false }], limits: { max_message_bytes: 32768 },
  });
  const friends = resumed.state.friends;
  assert.deepEqual([friends.get(BOB).status, friends.get(BOB).presence], ['friends', 'online']);
  assert.deepEqual([friends.get(CAROL).status, friends.get(CAROL).presence], ['friends', 'away']);
  assert.deepEqual([friends.get(DAN).status, friends.get(DAN).endedReason], ['ended', 'left']);
  assert.equal(resumed.state.session.online, true);
  assert.equal(resumed.state.session.epoch, 0);
  assert.equal(resumed.state.session.limits.max_message_bytes, 32768);
  assert.deepEqual(resumed.effects, []);
});

test('a resume that fails ends every friendship and request of the old session, and says the ID changed', () => {
  let state = befriend(online(), BOB, BOB_KEY);
  ({ state } = requestFrom(state, CAROL, CAROL_KEY));
  ({ state } = step(state, { type: 'requestSent', id: DAN, unsure: false }));
  const lost = step(state, { type: 'connected', id: 'NEW1D0', version: 2, resumed: false, resumeAttempted: true, friends: [], limits: {} });
  assert.equal(lost.state.session.id, 'NEW1D0');
  assert.equal(lost.state.session.epoch, 1);
  assert.deepEqual([lost.state.friends.get(BOB).status, lost.state.friends.get(BOB).endedReason], ['ended', 'session_lost']);
  assert.equal(lost.state.incomingRequests.size + lost.state.outgoingRequests.size, 0);
  assert.deepEqual(lost.effects, [{ type: 'notice', code: 'resume_failed', previousId: ME, id: 'NEW1D0' }]);
});

test('a takeover by another tab, or leaving, ends every friendship', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  for (const event of [{ type: 'status', status: 'taken_over' }, { type: 'left' }]) {
    const over = step(state, event).state;
    assert.equal(over.friends.get(BOB).endedReason, 'session_lost', event.type);
  }
  const fresh = step(state, { type: 'newSession' }).state;
  assert.equal(fresh.session.id, null);
  assert.equal(fresh.session.epoch, 1);
});

test('PRESENCE: away and back for a live friend', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  const away = step(state, frame({ type: 'PRESENCE', id: BOB, online: false }));
  assert.equal(away.state.friends.get(BOB).presence, 'away');
  assert.equal(shownPresence(away.state.friends.get(BOB), 'online'), 'away');
  assert.equal(shownPresence(away.state.friends.get(BOB), 'reconnecting'), 'unknown');
  const back = step(away.state, frame({ type: 'PRESENCE', id: BOB, online: true }));
  assert.equal(back.state.friends.get(BOB).presence, 'online');
  assert.equal(step(state, frame({ type: 'PRESENCE', id: CAROL, online: true })).state, state, 'not a friend');
});

test('an invite link\'s fingerprint is expected for its ID until the key it named is pinned; a match is verified, a mismatch "changed"', () => {
  let state = step(online(), { type: 'inviteOpened', id: BOB, fingerprint: BOB_KEY.fingerprint }).state;
  assert.equal(befriend(state, BOB, BOB_KEY).friends.get(BOB).trust, 'verified');
  assert.equal(befriend(state, BOB, BOB_KEY).expectations.has(BOB), false);
  assert.ok(befriend(state, BOB, BOB_KEY).verifiedFingerprints.has(BOB_KEY.fingerprint));
  const swapped = befriend(state, BOB, keyOf('Bob', 'D')).friends.get(BOB);
  assert.deepEqual([swapped.trust, swapped.trustSource, swapped.changedFrom], ['changed', 'invite', BOB_KEY.fingerprint]);
  state = step(createModel(), { type: 'identityReady', fingerprint: OWN_FP, verifiedFingerprints: [CAROL_KEY.fingerprint] }).state;
  assert.ok(state.verifiedFingerprints.has(CAROL_KEY.fingerprint));
});

test('after a key that does not match the invite link was pinned, the link still checks every later key for that ID', () => {
  const mallory = keyOf('Bob', 'D');
  let state = step(online(), { type: 'inviteOpened', id: BOB, fingerprint: BOB_KEY.fingerprint }).state;
  state = befriend(state, BOB, mallory);
  assert.equal(state.expectations.get(BOB), BOB_KEY.fingerprint, 'kept after a mismatching pin');
  // The user continues with the swapped key; then the server fakes the end and offers the same key again.
  for (let round = 0; round < 2; round += 1) {
    ({ state } = steps(state, { type: 'changedKeyAccepted', id: BOB }, frame({ type: 'FRIEND_REMOVE', from: BOB })));
    assert.equal(state.friends.get(BOB).trust, 'unverified');
    ({ state } = requestFrom(state, BOB, mallory));
    assert.equal(assessKey(state, BOB, mallory.fingerprint, 'Bob'), 'invite_mismatch', 'not merely "new"');
    ({ state } = step(state, { type: 'requestAccepted', id: BOB, key: mallory }));
    const again = state.friends.get(BOB);
    assert.deepEqual([again.trust, again.trustSource, again.changedFrom], ['changed', 'invite', BOB_KEY.fingerprint], `round ${round}`);
  }
  // The key the link named, pinned at last, ends the expectation (the pin says the same from then on); it
  // differs from the key pinned before, so it too must be confirmed.
  ({ state } = steps(state, frame({ type: 'FRIEND_REMOVE', from: BOB })));
  ({ state } = requestFrom(state, BOB, BOB_KEY));
  ({ state } = step(state, { type: 'requestAccepted', id: BOB, key: BOB_KEY }));
  assert.deepEqual([state.friends.get(BOB).trust, state.friends.get(BOB).changedFrom], ['changed', mallory.fingerprint]);
  assert.equal(state.expectations.has(BOB), false);
});

test('frames dropped from a full per-peer queue: one line in that friend\'s chat, a notice for any other ID', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  const friend = step(state, { type: 'framesDropped', from: BOB, count: 144 });
  assert.deepEqual(friend.effects, []);
  const line = lastLine(friend.state, BOB);
  assert.deepEqual([line.direction, line.what, line.count], ['system', 'frames_dropped', 144]);
  const gone = step(step(state, frame({ type: 'FRIEND_REMOVE', from: BOB })).state, { type: 'framesDropped', from: BOB, count: 3 });
  assert.equal(lastLine(gone.state, BOB).what, 'frames_dropped', 'an ended friend\'s chat is still there');
  const stranger = step(state, { type: 'framesDropped', from: CAROL, count: 7 });
  assert.deepEqual(stranger.effects, [{ type: 'notice', code: 'frames_dropped', from: CAROL, count: 7 }]);
  assert.equal(stranger.state.friends, state.friends);
});

test('the add-friend form: what is not an ID, our own ID and a live friend are refused before anything is sent', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  assert.deepEqual(requestProblem(state, 'k7q-2zd'), { problem: null, id: 'K7Q2ZD' });
  assert.deepEqual(requestProblem(state, 'nope'), { problem: 'not_an_id', id: null });
  assert.deepEqual(requestProblem(state, ME.toLowerCase()), { problem: 'own_id', id: ME });
  assert.deepEqual(requestProblem(state, BOB), { problem: 'already_friends', id: BOB });
  const ended = step(state, frame({ type: 'FRIEND_REMOVE', from: BOB })).state;
  assert.deepEqual(requestProblem(ended, BOB), { problem: null, id: BOB });
});

test('frames are ordered by the peer they are about', () => {
  assert.equal(peerOf({ type: 'MESSAGE', from: BOB }), BOB);
  assert.equal(peerOf({ type: 'PRESENCE', id: BOB, online: true }), BOB);
  assert.equal(peerOf({ type: 'DISCONNECT', id: BOB }), BOB);
  assert.equal(peerOf({ type: 'FRIEND_CANCEL', from: 'b0b0b0' }), null, 'only canonical IDs');
  assert.equal(peerOf({ type: 'UNDELIVERED', to: BOB, ref: 'm1.0' }), null);
});
