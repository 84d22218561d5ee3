// Sending chat messages: the outbox per friend and each message's delivery state, as pure transitions.
// One MESSAGE per friend is in flight at a time and its `seq` is taken when it is sealed, so `seq` never skips
// or repeats on the wire: a message refused after sealing gives its `seq` back. The work is asked for as effects
// (`seal`, `transmit`, `retryLater`) whose outcomes come back as events (sealed, sealFailed, acked, sendFailed,
// backoffOver).
//
// Delivery states: waiting (offline, held by a key change, or queued behind another) → sending → delivered
// (ACK) | queued (ACK queued:true; delivered once the friend is back online) | undelivered (UNDELIVERED, or the
// friendship or session ended after it was sent) | error (refused: `error` says why, text.js SEND_ERROR_TEXT).
// A message sent to a contact's handle (contacts.js) is instead: sent (handed to their connection) | stored (in
// the server's mailbox) → delivered only when their signed receipt arrives; until then it is *unconfirmed*: kept
// with its payload and seq and sent again as is after every reconnect. UNDELIVERED (`expired`, `evicted`) and
// `no_mailbox` make it undelivered with that reason, and Retry sends the same payload again.
import { isContact } from './contactbook.js';
import { FRAME_OVERHEAD, buildEnvelope } from './envelope.js';
import { routeFor } from './contacts.js';
import { findLine, putFriend, takeLocalId, updateFriend, withLine } from './model.js';
import { canSendTo } from './trust.js';

const BUSY_RETRIES = 4; // peer_busy / rate_limited / unavailable: retry this often before showing the error
const BUSY_RETRY_BASE_MS = 1000;
// The ref of a MESSAGE frame is `m<localId>.<attempt>`; this one stands for the longest, to size a frame.
const REF_FOR_SIZE = 'm0000000.0';

/** The user wrote `text` to friend `id` (already checked: canSendTo and the composer's size limit). */
export function writeMessage(next, id, text, now) {
  const friend = next.state.friends.get(id);
  if (!friend || !canSendTo(friend)) return;
  const localId = takeLocalId(next);
  const message = {
    localId,
    direction: 'out',
    text,
    ts: now,
    state: 'waiting',
    error: '',
    seq: 0,
    payload: null, // the sealed payload once it has its seq; kept until acknowledged, to be sent again as is
    ref: null,
    attempts: 0,
  };
  updateFriend(next, id, (f) => ({ ...f, messages: [...f.messages, message], outbox: [...f.outbox, localId] }));
  pump(next, id);
}

/** Puts a failed message back at the end of the conversation and the outbox, to be sealed afresh. */
export function retryMessage(next, id, localId, now) {
  const friend = next.state.friends.get(id);
  const message = friend && findLine(friend, localId);
  if (!message || (message.state !== 'error' && message.state !== 'undelivered') || !canSendTo(friend)) return;
  if (message.via === 'handle' && message.payload) {
    // Its seq was used on the wire: the same payload goes again, so the receiver sees it once whatever happens.
    putFriend(next, { ...withLine(friend, localId, (m) => ({ ...m, state: 'waiting', error: '', attempts: 0 })), outbox: [...friend.outbox, localId] });
    pump(next, id);
    return;
  }
  const again = { ...message, state: 'waiting', error: '', payload: null, seq: 0, attempts: 0, ts: now };
  putFriend(next, {
    ...friend,
    messages: [...friend.messages.filter((line) => line.localId !== localId), again],
    outbox: [...friend.outbox, localId],
  });
  pump(next, id);
}

/**
 * Starts work on the head of friend `id`'s outbox when nothing is in flight for it, we are online and sending
 * is allowed: sealing when it has no payload yet, else sending it. Called after anything that may unblock it.
 */
export function pump(next, id) {
  const friend = next.state.friends.get(id);
  if (!friend || friend.sending || friend.outbox.length === 0) return;
  if (!next.state.session.online || !canSendTo(friend)) return;
  const localId = friend.outbox[0];
  const message = findLine(friend, localId);
  const route = routeFor(next.state, friend);
  if (!route) return;
  if (!message.payload) {
    // A message restored from the contact book keeps its seq: it is the same envelope, sealed again.
    const seq = message.seq > 0 ? message.seq : friend.sendSeq + 1;
    putFriend(next, { ...friend, sending: { localId, phase: 'sealing' } });
    next.effects.push({
      type: 'seal', peer: id, localId, friendship: friend.friendship, seq,
      envelope: buildEnvelope({ to: friend.fingerprint, seq, ts: message.ts, text: message.text }),
      publicArmored: friend.publicArmored,
    });
    return;
  }
  const frame = { type: 'MESSAGE', ...route, payload: message.payload, ref: `m${localId}.${message.attempts}` };
  const via = route.handle ? 'handle' : 'id';
  putFriend(next, {
    ...withLine(friend, localId, (m) => ({ ...m, ref: frame.ref, state: 'sending', via })),
    sending: { localId, phase: 'sending' },
  });
  // A contact's seqs outlive the page (the contact book): the book must hold this one before it leaves, or a
  // reload would use it again (contactstore.js persist).
  next.effects.push({ type: 'transmit', peer: id, localId, frame, persist: isContact(friend) });
}

export function pumpAll(next) {
  for (const id of next.state.friends.keys()) pump(next, id);
}

/** The friend whose outbox head `localId` is in `phase`, or undefined when that work is no longer wanted. */
function working(next, peer, localId, phase) {
  const friend = next.state.friends.get(peer);
  return friend && friend.sending && friend.sending.localId === localId && friend.sending.phase === phase ? friend : undefined;
}

/** The payload for the outbox head is ready; it takes its seq now. */
export function sealed(next, { peer, localId, friendship, seq, payload }) {
  const friend = working(next, peer, localId, 'sealing');
  if (!friend || friend.friendship !== friendship) return;
  const frameBytes = new TextEncoder().encode(JSON.stringify({ type: 'MESSAGE', to: peer, payload, ref: REF_FOR_SIZE })).length;
  // The server closes the whole connection (1009) on an oversized message, and the friend's copy is bigger.
  if (frameBytes + FRAME_OVERHEAD > next.state.session.limits.max_message_bytes) {
    putFriend(next, failed({ ...friend, sending: null }, localId, 'too_long'));
  } else {
    putFriend(next, {
      ...withLine(friend, localId, (m) => ({ ...m, payload, seq })),
      sendSeq: Math.max(friend.sendSeq, seq),
      sending: null,
    });
  }
  pump(next, peer);
}

/** Sealing failed (`code`: too_slow or encrypt_failed): the message is not sent at all. */
export function sealFailed(next, { peer, localId, code }) {
  const friend = working(next, peer, localId, 'sealing');
  if (!friend) return;
  putFriend(next, failed({ ...friend, sending: null }, localId, code));
  pump(next, peer);
}

/** The server acknowledged the MESSAGE: handed to the friend, or queued while they are away. */
export function acked(next, { peer, localId, queued }) {
  const friend = next.state.friends.get(peer);
  const line = friend && findLine(friend, localId);
  if (!line) return;
  const inFlight = friend.sending && friend.sending.localId === localId;
  if (line.via === 'handle') {
    // Only the friend's receipt makes it delivered (contacts.js). The ACK is the server's word only: `queued`
    // (nobody listens on their handle) shows them away, but a plain ACK never shows them online nor reachable:
    // only their signed `here` does.
    const state = line.state === 'delivered' ? 'delivered' : queued ? 'stored' : 'sent';
    putFriend(next, {
      // `accepted`: the server took a copy, which may reach the friend, so this seq is spent for good.
      ...withLine(friend, localId, (m) => ({ ...m, state, accepted: true, payload: state === 'delivered' ? null : m.payload })),
      outbox: friend.outbox.filter((id) => id !== localId),
      sending: inFlight ? null : friend.sending,
      presence: queued ? 'away' : friend.presence,
    });
    pump(next, peer);
    return;
  }
  putFriend(next, {
    ...withLine(friend, localId, (m) => ({ ...m, state: queued ? 'queued' : 'delivered' })),
    outbox: friend.outbox.filter((id) => id !== localId),
    sending: inFlight ? null : friend.sending,
  });
  pump(next, peer);
}

/** The MESSAGE was refused (`code`: a server ERROR code, or offline / connection_lost from the transport). */
export function sendFailed(next, { peer, localId, code }) {
  const friend = working(next, peer, localId, 'sending');
  if (!friend) return;
  if (code === 'offline' || code === 'connection_lost') {
    // Kept with its payload and seq: sent again as is after the resume (the next CONNECT reply pumps).
    putFriend(next, { ...withLine(friend, localId, (m) => ({ ...m, state: 'waiting' })), sending: null });
    return;
  }
  const message = findLine(friend, localId);
  if (code === 'no_mailbox' && message.via === 'handle') {
    // Not stored and nobody connected (mailbox off, or the message is larger than a handle's share): kept for Retry.
    putFriend(next, {
      ...withLine(friend, localId, (m) => ({ ...m, state: 'undelivered', error: 'no_mailbox' })),
      outbox: friend.outbox.filter((id) => id !== localId),
      sending: null,
      presence: 'away',
    });
    pump(next, peer);
    return;
  }
  if ((code === 'peer_busy' || code === 'rate_limited' || code === 'unavailable') && message.attempts < BUSY_RETRIES) {
    const attempts = message.attempts + 1;
    // `unavailable` can be the server giving up waiting for another node's answer: the copy may have reached the
    // friend, so its seq is spent as if accepted (never reused for other text).
    const mayHaveArrived = code === 'unavailable';
    putFriend(next, {
      ...withLine(friend, localId, (m) => ({ ...m, attempts, state: 'waiting', accepted: m.accepted || mayHaveArrived })),
      sending: { localId, phase: 'backoff' },
    });
    next.effects.push({ type: 'retryLater', peer, localId, ms: BUSY_RETRY_BASE_MS * 2 ** (attempts - 1) });
    return;
  }
  putFriend(next, failed({ ...friend, sending: null }, localId, code));
  pump(next, peer);
}

/** A busy friend's backoff is over: the same payload is sent again. */
export function backoffOver(next, { peer, localId }) {
  const friend = working(next, peer, localId, 'backoff');
  if (!friend) return;
  putFriend(next, { ...friend, sending: null });
  pump(next, peer);
}

/** The friend with outbox head `localId` refused for `code` and taken out of the outbox. */
function failed(friend, localId, code) {
  const message = findLine(friend, localId);
  // Nothing after it was sent yet (one in flight), so its seq can be reused without a gap; unless the server took
  // a copy of it earlier (a resend), which may have reached the friend: reusing that seq would make the next
  // message a duplicate the friend never shows, yet receipts. Such a message keeps its payload, undelivered.
  const spent = Boolean(message.accepted);
  const sendSeq = message.payload && !spent && message.seq === friend.sendSeq ? message.seq - 1 : friend.sendSeq;
  return {
    ...withLine(friend, localId, (m) => (spent
      ? { ...m, state: 'undelivered', error: code }
      : { ...m, state: 'error', error: code, payload: null })),
    sendSeq,
    outbox: friend.outbox.filter((id) => id !== localId),
  };
}

/** Outgoing messages that can no longer reach this friend (friendship or session over). */
export function abandonOutbox(friend, code) {
  if (friend.outbox.length === 0 && !friend.sending) return friend;
  const abandoned = new Set(friend.outbox);
  return {
    ...friend,
    messages: friend.messages.map((m) => (abandoned.has(m.localId)
      ? { ...m, state: m.payload ? 'undelivered' : 'error', error: code }
      : m)),
    outbox: [],
    sending: null,
  };
}

/**
 * `friend` with every outgoing message it has not confirmed (waiting, in flight, sent, stored, or undelivered
 * with its payload) marked not delivered and cut loose from its seq and payload, so that Retry seals it anew:
 * for a contact that starts over as a new friendship (friendship.js), whose seqs restart and whose friend may
 * never have seen the old ones.
 */
export function forgetUnconfirmed(friend) {
  const open = (m) => m.direction === 'out' && !m.kind && m.state !== 'delivered' && m.state !== 'error' && m.state !== 'queued';
  if (!friend.messages.some(open)) return { ...friend, outbox: [], sending: null };
  return {
    ...friend,
    messages: friend.messages.map((m) => (open(m)
      ? { ...m, state: 'undelivered', error: 'contact_restarted', payload: null, seq: 0, via: '', accepted: false }
      : m)),
    outbox: [],
    sending: null,
  };
}

/** UNDELIVERED: a message the server had queued was thrown away when the friend's resume window ended. */
export function markUndelivered(next, ref, reason) {
  for (const friend of next.state.friends.values()) {
    const message = friend.messages.find((m) => m.direction === 'out' && m.ref === ref);
    if (message) {
      // To a handle: the mailbox dropped it unread (`expired`, `evicted`); a later receipt still wins.
      if (message.via === 'handle' && message.state === 'delivered') return;
      const error = message.via === 'handle' ? (reason === 'expired' ? 'expired' : 'evicted') : 'friend_gone';
      putFriend(next, withLine(friend, message.localId, (m) => ({ ...m, state: 'undelivered', error })));
      return;
    }
  }
}

/**
 * After a CONNECT: every message to a handle still unconfirmed (sent or stored, no receipt) goes back into the
 * outbox, oldest seq first, ahead of new ones, to be sent again with the same payload and seq: the server's
 * mailbox may have lost it (a restart), and a copy that did arrive is only a quiet duplicate to the receiver.
 */
export function requeueUnconfirmed(next) {
  for (const friend of next.state.friends.values()) {
    if (friend.sending) continue; // the head in flight must stay first (model.js invariant)
    const again = friend.messages.filter((m) => m.direction === 'out' && m.via === 'handle' && m.payload
      && (m.state === 'sent' || m.state === 'stored') && !friend.outbox.includes(m.localId));
    if (again.length === 0) continue;
    const ids = new Set(again.map((m) => m.localId));
    putFriend(next, {
      ...friend,
      messages: friend.messages.map((m) => (ids.has(m.localId) ? { ...m, state: 'waiting', attempts: 0 } : m)),
      outbox: [...again.sort((a, b) => a.seq - b.seq).map((m) => m.localId), ...friend.outbox.filter((id) => !ids.has(id))],
    });
  }
}

/** The friend came back within its resume window: what was queued for it has been handed over. */
export function queuedDelivered(friend) {
  if (!friend.messages.some((m) => m.direction === 'out' && m.state === 'queued')) return friend;
  return {
    ...friend,
    messages: friend.messages.map((m) => (m.direction === 'out' && m.state === 'queued' ? { ...m, state: 'delivered' } : m)),
  };
}
