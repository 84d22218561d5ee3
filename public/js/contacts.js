// Contacts: friends who stay across reloads, reached by rendezvous handles (rendezvous.js) instead of session
// IDs, as pure transitions on model.js state. The control envelopes of §6 (rendezvous, receipt, here) are
// sent by the `sendControl` effect, which seals them and sends them without a chat line.
//
// Invariants: a friend's `rendezvous.mine` is set once and never changes (the handles it listens on follow
// from it), and so is `theirs`: a replayed rendezvous envelope, even a later-signed one, cannot move where we
// send. Every control envelope is bound to this contact: its `for` is the tag of the recipient's secret
// (rendezvous.js contactTag; `mineTag` is ours), and one whose tag is not ours is ignored, so a receipt,
// probe, answer or removal of an earlier contact between the same two keys (whose secrets were others) counts
// for nothing here. The one envelope that cannot carry a tag is the requester's first offer (it does not know
// our secret yet): it is taken only while we have no secret of theirs, and only when signed after this
// friendship began. The requester of a friendship offers its secret first, the accepter answers with its own,
// bound (a client that never offers, such as a version-1 client or GnuPG, never gets an envelope kind it does
// not know). "Delivered" on a message sent to a handle means the friend's signed receipt arrived, never the
// server's ACK.
import { isContact } from './contactbook.js';
import {
  appendSystemLine, isLive, newFriend, putFriend, takeLocalId, withEntry, withMember, withMemberAt,
} from './model.js';
import { pinnedName } from './trust.js';
import { checkedReceived } from './receipts.js';
import { abandonOutbox, pump, pumpAll } from './outbox.js';

/** A `here` is proof of presence only while this fresh, by our clock against its signed time. */
export const HERE_FRESH_MS = 2 * 60 * 1000;
/** Nonces of a friend's probes we answered, remembered (the newest) so that a replayed probe is answered once. */
export const ANSWERED_NONCES_KEPT = 16;

/** Where a frame to `friend` goes: {handle} (their handle of today), {to} (the live session ID), or null. */
export function routeFor(state, friend) {
  const handle = state.handles.supported !== false ? state.handles.send.get(friend.id) : undefined;
  if (handle) return { handle };
  if (friend.idLive && isLive(friend)) return { to: friend.id };
  return null;
}

/** A control envelope to `friend`, bound to it (`bindTo`: the runner puts that secret's tag in `for`) once we know its secret. */
function control(friend, purpose, kind, fields, route) {
  return {
    type: 'sendControl', peer: friend.id, purpose, kind, fields, to: friend.fingerprint, route, publicArmored: friend.publicArmored,
    bindTo: friend.rendezvous.theirs,
  };
}

/** Whether `envelope` carries this contact's tag for us: it was made for this contact, not an earlier one. */
function isBound(friend, envelope) {
  return friend.rendezvous.mineTag !== '' && envelope.for === friend.rendezvous.mineTag;
}

/** Whether we should (still) give `friend` our secret by ID: see the invariants above. */
function owesRendezvous(friend) {
  return isLive(friend) && friend.idLive && friend.rendezvous.mine !== '' && !friend.rendezvous.shared
    && (friend.requestedByMe || friend.rendezvous.theirs !== '') && friend.publicArmored !== '' && friend.trust !== 'changed';
}

function offerRendezvous(next, friend, now) {
  if (!owesRendezvous(friend) || next.state.handles.supported !== true || !next.state.session.online) return;
  putFriend(next, { ...friend, rendezvous: { ...friend.rendezvous, sentAt: now } });
  next.effects.push(control(friend, 'rendezvous', 'rendezvous', { secret: friend.rendezvous.mine }, { to: friend.id }));
}

/** Offers our secret to every friend still owed it (after a CONNECT, or once the server proved it speaks §10). */
export function offerAll(next, now) {
  for (const friend of next.state.friends.values()) offerRendezvous(next, friend, now);
}

/**
 * The wiring drew our listening secret for `peer`, and its tag (rendezvous.js contactTag), for friends who should
 * get one (contactsync.js).
 */
export function rendezvousSecretCreated(next, { peer, secret, tag, now }) {
  const friend = next.state.friends.get(peer);
  if (!isLive(friend) || friend.rendezvous.mine) return;
  const updated = putFriend(next, { ...friend, rendezvous: { ...friend.rendezvous, mine: secret, mineTag: tag }, updatedAt: now });
  offerRendezvous(next, updated, now);
}

/** The handles derived from the contacts' secrets for `day` (the wiring's, since HMAC is Web Crypto's). */
export function handlesDerived(next, { day, listen, send }) {
  next.state = { ...next.state, handles: { ...next.state.handles, day, listen, send } };
  pumpAll(next);
}

/** The server answered our first LISTEN on this connection: §10 is there (true) or not (false). */
export function handlesSupported(next, { supported, now }) {
  next.state = { ...next.state, handles: { ...next.state.handles, supported } };
  if (supported) offerAll(next, now);
  pumpAll(next);
}

/** Asks every contact we can reach by handle whether it is connected (`here`, never stored in a mailbox). */
export function probeContacts(next) {
  for (const friend of next.state.friends.values()) {
    const handle = next.state.handles.send.get(friend.id);
    if (!isLive(friend) || !handle || friend.trust === 'changed') continue;
    next.effects.push(control(friend, 'probe', 'here', {}, { handle, mailbox: false }));
  }
}

/** The nonce the effect runner put in our probe to `peer`: an answer must echo it. */
export function probeSent(next, { peer, nonce }) {
  const friend = next.state.friends.get(peer);
  if (friend) putFriend(next, { ...friend, probeNonce: nonce });
}

/** What became of a control envelope we sent (`code`: the server's refusal, if any). */
export function controlSent(next, { peer, purpose, code, now }) {
  const friend = next.state.friends.get(peer);
  if (!isLive(friend)) return;
  // Nobody listens on their handle right now: they are not connected.
  if (purpose === 'probe' && code === 'no_mailbox') putFriend(next, { ...friend, presence: 'away' });
  if (purpose === 'rendezvous' && code) putFriend(next, { ...friend, rendezvous: { ...friend.rendezvous, sentAt: 0 } });
  void now;
}

/** A receipt to `friend` for the seqs `acks` we accepted (to their handle, else by ID while that lives). */
export function sendReceipt(next, friend, acks) {
  const route = routeFor(next.state, friend);
  if (route) next.effects.push(control(friend, 'receipt', 'receipt', { acks }, route));
}

/**
 * A verified control envelope from `friend` (inbox.js checked signature and recipient). `via`: 'handle' | 'id'.
 * Ignored unless bound to this contact (isBound), but for the requester's first offer (see the invariants).
 */
export function receiveControl(next, friend, envelope, via, now) {
  const bound = isBound(friend, envelope);
  if (envelope.kind === 'rendezvous') {
    receiveRendezvous(next, friend, envelope, bound, now);
    return;
  }
  if (!bound) return;
  let updated = friend;
  if (!friend.rendezvous.shared) {
    // Bound to our secret: they have it.
    updated = { ...updated, rendezvous: { ...updated.rendezvous, shared: true }, updatedAt: now };
  }
  switch (envelope.kind) {
    case 'receipt':
      putFriend(next, confirmDelivered(updated, envelope.acks));
      pump(next, friend.id);
      return;
    case 'here': {
      const fresh = Math.abs(envelope.ts - now) <= HERE_FRESH_MS;
      const answer = envelope.re !== undefined;
      const proves = answer ? envelope.re === friend.probeNonce && fresh : fresh;
      if (proves) updated = { ...updated, presence: 'online', lastReachable: now };
      putFriend(next, updated);
      if (!answer && fresh && !friend.answeredNonces.includes(envelope.nonce)) {
        // A probe replayed within its 2 minutes is answered once (the effects runner also keeps one answer per
        // friend waiting, whatever the nonces).
        const route = routeFor(next.state, updated);
        if (route && route.handle) {
          putFriend(next, { ...updated, answeredNonces: [...updated.answeredNonces, envelope.nonce].slice(-ANSWERED_NONCES_KEPT) });
          next.effects.push(control(updated, 'answer', 'here', { re: envelope.nonce }, { ...route, mailbox: false }));
        }
      }
      if (proves) pump(next, friend.id);
      return;
    }
    case 'remove':
      // Signed by the friend's pinned key, addressed to us and bound to this contact. One signed before this
      // contact began is ignored too.
      if (envelope.ts < friend.friendshipStartedAt - HERE_FRESH_MS) {
        putFriend(next, updated);
        return;
      }
      putFriend(next, abandonOutbox({ ...updated, status: 'ended', endedReason: 'removed', idLive: false, presence: 'away' }, 'friend_gone'));
      appendSystemLine(next, friend.id, 'ended', { reason: 'removed' });
      return;
    default:
      putFriend(next, updated);
  }
}

/**
 * Their listening secret. Set once: from an answer bound to our secret (it proves they have ours), or from the
 * requester's first offer (unbound) when we did not ask, have no secret of theirs yet, and it was signed after
 * this friendship began (an earlier contact's offer, replayed, was not). A different secret later changes
 * nothing: a contact's secrets never change.
 */
function receiveRendezvous(next, friend, envelope, bound, now) {
  const { rendezvous } = friend;
  if (envelope.for !== undefined && !bound) return;
  const offer = !bound && !friend.requestedByMe && envelope.ts >= friend.friendshipStartedAt - HERE_FRESH_MS;
  if (rendezvous.theirs === '' && (bound || offer)) {
    putFriend(next, {
      ...friend,
      rendezvous: { ...rendezvous, theirs: envelope.secret, theirsTs: envelope.ts, shared: rendezvous.shared || bound },
      updatedAt: now,
    });
    appendSystemLine(next, friend.id, 'contact_ready');
  } else if (bound && !rendezvous.shared && envelope.secret === rendezvous.theirs) {
    putFriend(next, { ...friend, rendezvous: { ...rendezvous, shared: true }, updatedAt: now });
  }
  offerRendezvous(next, next.state.friends.get(friend.id), now);
}

/**
 * The user removes `id`. A contact outlives the ID friendship (FRIEND_REMOVE reaches the friend only while that
 * lives, and not at all after a reload), so a contact is also sent a signed `remove` to its handle (kept in the
 * mailbox while it is offline): it ends the contact on its side too. Runs before the friendship ends here.
 */
export function contactRemoved(next, { id }) {
  const friend = next.state.friends.get(id);
  if (!isContact(friend) || friend.trust === 'changed') return;
  const handle = next.state.handles.supported !== false ? next.state.handles.send.get(friend.id) : undefined;
  if (handle) next.effects.push(control(friend, 'remove', 'remove', {}, { handle }));
}

/** `friend` with its outgoing messages numbered `acks` marked delivered (their signed receipt arrived). */
export function confirmDelivered(friend, acks) {
  const confirmed = new Set(acks);
  let changed = false;
  const inFlight = friend.sending && friend.sending.localId;
  const done = new Set();
  const messages = friend.messages.map((m) => {
    if (m.direction !== 'out' || !confirmed.has(m.seq) || !m.payload || m.state === 'delivered') return m;
    changed = true;
    done.add(m.localId);
    // Kept while in flight: the ACK still has to find it (outbox.js acked never downgrades 'delivered').
    return { ...m, state: 'delivered', error: '', payload: m.localId === inFlight ? m.payload : null };
  });
  if (!changed) return friend;
  return { ...friend, messages, outbox: friend.outbox.filter((id) => id === inFlight || !done.has(id)) };
}

/**
 * A friendship by ID ends because a session ended ('left': theirs; 'session_lost': ours). A contact stays: it
 * is reached by handle from now on. Returns true when `friend` was kept as a contact.
 */
export function keepAsContact(next, friend, reason) {
  if (!isContact(friend) || (reason !== 'left' && reason !== 'session_lost')) return false;
  putFriend(next, { ...friend, idLive: false, presence: 'away' });
  if (friend.idLive) appendSystemLine(next, friend.id, 'contact_kept', { reason });
  return true;
}

/**
 * Contacts read from the contact book (contactbook.js parseBook / mergeBooks records, each with the `mineTag`
 * of its `mine`, which the wiring adds: contactstore.js). A contact whose
 * fingerprint is a friend already updates that friend (seqs never go down, verified is never lost, secrets
 * fill in only where missing); any other becomes a friend under its book key, reached by handle, with its
 * unconfirmed messages back in the outbox (sealed again with the same seq, time and text).
 */
export function bookLoaded(next, { contacts, now }) {
  for (const record of contacts) {
    const existing = [...next.state.friends.values()].find((f) => isLive(f) && f.fingerprint === record.fingerprint);
    if (existing) {
      putFriend(next, {
        ...existing,
        sendSeq: Math.max(existing.sendSeq, record.sendSeq),
        trust: existing.trust === 'unverified' && record.verified ? 'verified' : existing.trust,
        rendezvous: existing.rendezvous.mine ? existing.rendezvous : {
          ...existing.rendezvous, mine: record.mine, mineTag: record.mineTag || '', theirs: record.theirs, theirsTs: record.theirsTs || 0, shared: true,
        },
        bookKey: existing.bookKey || record.key,
      });
      continue;
    }
    let key = record.key;
    for (let n = 2; next.state.friends.has(key); n += 1) key = `${record.key.slice(0, 13)}-${n}`;
    const number = next.state.friendshipsStarted + 1;
    const name = pinnedName(record.userId);
    next.state = {
      ...next.state,
      friendshipsStarted: number,
      pins: withEntry(next.state.pins, key, record.fingerprint),
      // Another key with this contact's name is flagged as for any key pinned in this page's life (trust.js).
      pinnedNames: name ? withMemberAt(next.state.pinnedNames, name, record.fingerprint) : next.state.pinnedNames,
      verifiedFingerprints: record.verified ? withMember(next.state.verifiedFingerprints, record.fingerprint) : next.state.verifiedFingerprints,
    };
    const lines = record.unconfirmed.map((m) => ({
      localId: takeLocalId(next), direction: 'out', text: m.text, ts: m.ts, state: 'waiting', error: '', seq: m.seq,
      // Kept because it may have been sent before the reload: its seq is spent (outbox.js failed).
      payload: null, ref: null, attempts: 0, via: '', accepted: true,
    }));
    putFriend(next, {
      ...newFriend(key),
      bookKey: record.key,
      fingerprint: record.fingerprint,
      userId: record.userId,
      nickname: record.nickname,
      publicArmored: record.publicArmored,
      trust: record.verified ? 'verified' : 'unverified',
      trustSource: record.verified ? 'remembered' : '',
      rendezvous: {
        mine: record.mine, mineTag: record.mineTag || '', theirs: record.theirs, theirsTs: record.theirsTs || 0, shared: true, sentAt: 0,
      },
      idLive: false,
      presence: 'away',
      sendSeq: record.sendSeq,
      received: checkedReceived(record.received),
      expectedSeq: (record.received ? record.received.through : 0) + 1,
      friendship: number,
      friendshipStartedAt: record.since,
      lastReachable: record.lastReachable,
      updatedAt: record.updatedAt,
      messages: lines,
      outbox: lines.map((line) => line.localId),
    });
    appendSystemLine(next, key, 'restored');
  }
  pumpAll(next);
  void now;
}
