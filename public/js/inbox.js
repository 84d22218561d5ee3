// Receiving chat messages: what a friend's MESSAGE must pass before it is shown as verified (§6), as pure
// transitions. receiveMessage() asks for the payload to be opened (the `open` effect, in the crypto worker);
// messageOpened() checks the envelope, the `seq` order and replays against what this page received before.
//
// A message is verified only when it was decrypted, signed by the pinned key, addressed to our key, in `seq`
// order or ahead of it, not a copy of one received in an earlier friendship, not written before this
// friendship began, and the friend's key is not an unconfirmed change. Only such a message moves `seq` on.
import { receiveControl, sendReceipt } from './contacts.js';
import { FRAME_OVERHEAD, classifySeq, parseEnvelope } from './envelope.js';
import { parseGroupEnvelope } from './groupmessages.js';
import { pushLine, putFriend, takeLocalId, updateFriend, withEntry, withLine, withMember } from './model.js';
import { accept, classifyReceived } from './receipts.js';

// How far the sender's clock may be from ours. The sender's signed time is compared with OUR receive time,
// never with the server's `ts`: a replaying server would simply send the original `ts` again.
const CLOCK_SKEW_MS = 10 * 60 * 1000;
// A message may legitimately arrive this late: the server queues it while we are away for at most its
// resume window (`--resume-grace`, 30 s by default; not announced to clients, so the default is assumed).
const QUEUE_DELAY_MS = 30 * 1000;
// To a handle, a message may wait in the server's mailbox (`--mailbox-ttl`, 7 days by default, not announced)
// and an unconfirmed one is sent again whenever its sender reconnects: a day's margin on top.
const MAILBOX_DELAY_MS = 8 * 24 * 60 * 60 * 1000;
/** ECMAScript Dates hold ±8.64e15 ms; a server `ts` outside that would make rendering the message throw. */
const MAX_DATE_MS = 8.64e15;

export function isRepresentableTime(ms) {
  return Number.isFinite(ms) && Math.abs(ms) <= MAX_DATE_MS;
}

/** The sender's signed time is further from our receive time than clocks and queueing explain. */
export function isSkewed(sentTs, receivedAt, via) {
  const delay = via === 'handle' ? MAILBOX_DELAY_MS : QUEUE_DELAY_MS;
  return sentTs < receivedAt - CLOCK_SKEW_MS - delay || sentTs > receivedAt + CLOCK_SKEW_MS;
}

/** A MESSAGE from live friend `friend` (with a pinned key) arrived at `now` (our clock). */
export function receiveMessage(next, friend, frame, now, via = 'id') {
  const incoming = {
    via, // 'id': from a live session ID (§3); 'handle': to one of our rendezvous handles (§10)
    localId: takeLocalId(next),
    direction: 'in',
    text: null,
    ts: isRepresentableTime(frame.ts) ? frame.ts : now,
    receivedAt: now, // our own clock: the server's `ts` proves nothing
    friendship: friend.friendship, // which of this ID's friendships it arrived in
    sentTs: null,
    skewed: false, // sentTs is too far from receivedAt (see isSkewed)
    seq: null,
    verified: false,
    duplicate: false, // the same signed message received again (a re-send after a dropped connection)
    problems: [],
    missing: 0,
    hidden: false, // text withheld until the user asks (signature not by the pinned key)
  };
  const payload = frame.payload;
  if (typeof payload !== 'string' || !payload.startsWith('-----BEGIN PGP MESSAGE-----')) {
    finish(next, friend.id, { ...incoming, problems: ['not_pgp'] });
  } else if (payload.length > next.state.session.limits.max_message_bytes + FRAME_OVERHEAD) {
    finish(next, friend.id, { ...incoming, problems: ['oversized'] });
  } else {
    next.effects.push({ type: 'open', peer: friend.id, payload, publicArmored: friend.publicArmored, incoming });
  }
}

/**
 * The crypto worker's answer for `incoming`: `opened` is {ok:true, text} (decrypted, signed by the pinned key),
 * or {ok:false, problem, text?} with the text of a message signed by another key, if any.
 */
export function messageOpened(next, { peer, incoming, opened }) {
  let friend = next.state.friends.get(peer);
  if (!friend) return; // the chat was closed meanwhile: nowhere to show it
  let message = { ...incoming, problems: [...incoming.problems] };
  if (!opened.ok) {
    message.problems.push(opened.problem);
    // Not from the pinned key: shown only on the user's explicit "show anyway", and then still flagged.
    if (opened.text !== undefined) message.text = textOfUntrusted(opened.text);
    message.hidden = true;
  } else if (parseGroupEnvelope(opened.text).problem !== 'not_group') {
    // A group envelope from a contact (a version that adds us, or keys: PROTOCOL §6 "Joining"), signed by its
    // pinned key: the group wiring takes it (groupsync.js). Never while the key is an unconfirmed change.
    if (friend.trust !== 'changed') next.effects.push({ type: 'groupFromContact', peer, text: opened.text });
    return;
  } else {
    const parsed = parseEnvelope(opened.text, next.state.ownFingerprint);
    if (parsed.ok && parsed.envelope.kind) {
      // A control envelope (contacts.js): no chat line. Ignored while the friend's key is an unconfirmed change.
      if (friend.trust !== 'changed') receiveControl(next, friend, parsed.envelope, incoming.via, incoming.receivedAt);
      return;
    }
    ({ friend, message } = incoming.via === 'handle'
      ? checkContactEnvelope(next, friend, opened.text, message)
      : checkEnvelope(next, friend, opened.text, message));
    putFriend(next, friend);
    if (!message) return; // a quiet duplicate of a message to a handle: its receipt went again, nothing to show
  }
  if (message.sentTs !== null) message.skewed = isSkewed(message.sentTs, message.receivedAt, message.via);
  finish(next, peer, message);
}

/**
 * The §6 envelope in a decrypted text, checked for shape and recipient: {envelope, message} with the message's
 * text, times and seq filled in, or {message} with the problem recorded when the envelope fails.
 */
function readEnvelope(next, text, message) {
  const parsed = parseEnvelope(text, next.state.ownFingerprint);
  if (!parsed.ok) {
    message.problems.push(parsed.problem);
    if (parsed.envelope) message.text = parsed.envelope.text;
    return { message };
  }
  const { envelope } = parsed;
  return { envelope, message: { ...message, text: envelope.text, sentTs: envelope.ts, seq: envelope.seq } };
}

/**
 * A text envelope that came to one of our handles. Resends and mailboxes make copies normal here: a seq
 * accepted before is a duplicate (not shown again, its receipt sent again) unless this page still holds that
 * message with other content (then a loud REPLAY); a seq below the highest accepted but never accepted is late
 * (it fills a gap, also one given up on) and shown; only a seq beyond the next expected is a gap. Each accepted
 * message is receipted, and nothing else is.
 */
function checkContactEnvelope(next, friend, text, message) {
  const read = readEnvelope(next, text, message);
  if (!read.envelope) return { friend, message: read.message };
  const { envelope } = read;
  message = read.message;
  const order = classifyReceived(friend.received, envelope.seq);
  // Too old for the record to tell whether it was shown (receipts.js floor): not shown again, and no receipt,
  // since a receipt must only confirm what was shown. Its sender keeps it unconfirmed.
  if (order.kind === 'unknown') return { friend, message: null };
  if (order.kind === 'duplicate') {
    const earlier = friend.messages.find((m) => m.direction === 'in' && m.verified && m.seq === envelope.seq && m.friendship === friend.friendship);
    if (friend.trust !== 'changed' && (!earlier || (earlier.sentTs === envelope.ts && earlier.text === envelope.text))) {
      sendReceipt(next, friend, [envelope.seq]);
      return { friend, message: null };
    }
    message.problems.push(friend.trust === 'changed' ? 'key_changed' : 'replay');
    return { friend, message };
  }
  const firstSeenIn = rememberSigned(next, friend, envelope);
  if (firstSeenIn !== friend.friendship) message.problems.push('replay_copy');
  else if (envelope.ts < friend.friendshipStartedAt - CLOCK_SKEW_MS) message.problems.push('replay_old');
  if (friend.trust === 'changed') message.problems.push('key_changed');
  message.verified = message.problems.length === 0;
  if (!message.verified) return { friend, message };
  if (order.kind === 'gap') message.missing = order.missing;
  if (order.kind === 'late') message.late = true;
  friend = {
    ...friend,
    // A new message of theirs, signed in this contact, came to our handle: they have our secret.
    rendezvous: friend.rendezvous.shared ? friend.rendezvous : { ...friend.rendezvous, shared: true },
    received: accept(friend.received, envelope.seq),
    expectedSeq: Math.max(friend.expectedSeq, envelope.seq + 1),
    updatedAt: message.receivedAt,
  };
  sendReceipt(next, friend, [envelope.seq]);
  return { friend, message };
}

/** The decrypted, signed text against §6 and this page's records. Returns the friend and message as checked. */
function checkEnvelope(next, friend, text, message) {
  const read = readEnvelope(next, text, message);
  if (!read.envelope) return { friend, message: read.message };
  const { envelope } = read;
  message = read.message;
  const order = classifySeq(friend.expectedSeq, envelope.seq);
  friend = { ...friend, expectedSeq: order.nextExpected };
  const firstSeenIn = rememberSigned(next, friend, envelope);
  if (order.kind === 'replay' && firstSeenIn === friend.friendship && friend.trust !== 'changed'
    && !friend.copiesShown.has(envelope.seq) && isCopyOfReceived(friend, envelope)) {
    // At-least-once delivery re-sends a message whose ACK was lost with the connection: the same seq, time
    // and text as one already shown as verified in this friendship. Quiet once per seq; a second copy is
    // no longer explained by a re-send, and is a REPLAY.
    friend = { ...friend, copiesShown: withMember(friend.copiesShown, envelope.seq) };
    return { friend, message: { ...message, duplicate: true } };
  }
  // `seq` restarts with each friendship, so a server that fakes the end of one and the start of the next
  // can replay the recorded conversation in order: only the signed time and text give it away.
  if (firstSeenIn !== friend.friendship) message.problems.push('replay_copy');
  else if (envelope.ts < friend.friendshipStartedAt - CLOCK_SKEW_MS) message.problems.push('replay_old');
  if (order.kind === 'replay') message.problems.push('replay');
  if (order.kind === 'gap') message.missing = order.missing;
  if (friend.trust === 'changed') message.problems.push('key_changed');
  message.verified = message.problems.length === 0;
  // Seqs accepted by ID count for the contact too: a copy sent later to a handle is then a duplicate.
  if (message.verified) friend = { ...friend, received: accept(friend.received, envelope.seq) };
  return { friend, message };
}

/** Appends the checked message; the wiring counts it as unread and notifies unless it is a quiet duplicate. */
function finish(next, peer, message) {
  pushLine(next, peer, message);
  if (!message.duplicate) next.effects.push({ type: 'incoming', from: peer, flagged: message.problems.length > 0 });
}

/** The user asked to read a message whose signature is not by the pinned key; it stays flagged. */
export function revealMessage(next, { id, localId }) {
  updateFriend(next, id, (friend) => withLine(friend, localId, (m) => ({ ...m, hidden: false })));
}

function isCopyOfReceived(friend, envelope) {
  return friend.messages.some((m) => m.direction === 'in' && m.verified && m.friendship === friend.friendship
    && m.seq === envelope.seq && m.sentTs === envelope.ts && m.text === envelope.text);
}

/**
 * Records a signed (key, time, text) for the page's life and returns the number of the friendship it was
 * first received in (numbers are unique in the page). Kept apart from the conversations, which the user can
 * close.
 */
function rememberSigned(next, friend, envelope) {
  const key = `${friend.fingerprint}\n${envelope.ts}\n${envelope.text}`;
  const seen = next.state.signedSeen;
  if (!seen.has(key)) next.state = { ...next.state, signedSeen: withEntry(seen, key, friend.friendship) };
  return next.state.signedSeen.get(key);
}

/** The text of an envelope that failed the signature check, or the raw text when it is no envelope. */
function textOfUntrusted(text) {
  try {
    const value = JSON.parse(text);
    if (value && typeof value.text === 'string') return value.text;
  } catch {
    // not JSON: show the raw text
  }
  return text;
}
