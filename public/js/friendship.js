// The friendship lifecycle as pure transitions on model.js state: our session (CONNECT replies, resume, its
// end), requests we send and their answers, acceptances, removals, a friend's DISCONNECT and PRESENCE.
//
// A friend is live ('friends') from an accepted request until the friendship ends ('ended', with the reason);
// an ended friend stays in the list, history kept, until the user closes the chat. A new friendship with the
// same ID starts over: `seq` at 1 both ways, a new page-wide friendship number, its key pinned afresh (trust.js).
import { isCanonicalId, normalizeId } from './ids.js';
import { receiveMessage } from './inbox.js';
import { isInviteSecret } from './inviteproof.js';
import {
  INVITE_SECRETS_KEPT, appendSystemLine, isLive, liveFriend, newFriend, putFriend, updateFriend, withEntry, withMember, withoutEntry,
} from './model.js';
import { NICKNAME_MAX, cleanName } from './names.js';
import { keepAsContact, offerAll } from './contacts.js';
import {
  abandonOutbox, forgetUnconfirmed, markUndelivered, pump, pumpAll, queuedDelivered, requeueUnconfirmed,
} from './outbox.js';
import { clearRequests, receiveRequest, requestKeyChecked, withdrawRequest } from './requests.js';
import { acceptChangedKey, assessKey, markUnverified, markVerified, pinFriendKey, recordOffer } from './trust.js';

/** The peer ID a server frame is about, or null for frames about none (ERROR, UNDELIVERED, unknown ones). */
export function peerOf(frame) {
  const id = ['DISCONNECT', 'PRESENCE'].includes(frame.type) ? frame.id : frame.from;
  return isCanonicalId(id) && typeof frame.type === 'string' ? id : null;
}

/**
 * Why a friend request to what the user typed cannot be sent: 'not_an_id' | 'own_id' | 'already_friends', or
 * null with `id` the canonical ID.
 */
export function requestProblem(state, typed) {
  const id = normalizeId(typed);
  if (!id) return { problem: 'not_an_id', id: null };
  if (id === state.session.id) return { problem: 'own_id', id };
  if (isLive(state.friends.get(id))) return { problem: 'already_friends', id };
  return { problem: null, id };
}

// --- our session -------------------------------------------------------------------------------------------

/**
 * The user's key is ready, and (when the user opted in to remembering) the fingerprints verified on earlier
 * visits. Our invite link needs a secret from now on.
 */
export function identityReady(next, { fingerprint, verifiedFingerprints }) {
  next.state = {
    ...next.state,
    ownFingerprint: fingerprint,
    verifiedFingerprints: verifiedFingerprints ? new Set(verifiedFingerprints) : next.state.verifiedFingerprints,
  };
  if (next.state.inviteSecrets.length === 0) next.effects.push({ type: 'inviteSecretNeeded' });
}

/**
 * A fresh secret for our invite link (the wiring draws it: randomness is not the domain's). It becomes the
 * newest, the one the link shows; beyond INVITE_SECRETS_KEPT the oldest is forgotten (its link proves nothing).
 */
export function inviteSecretCreated(next, { secret }) {
  if (!isInviteSecret(secret) || next.state.inviteSecrets.includes(secret)) return;
  next.state = { ...next.state, inviteSecrets: [...next.state.inviteSecrets, secret].slice(-INVITE_SECRETS_KEPT) };
}

/**
 * The link shown, with our newest secret, was handed out (copied, shared, drawn as a QR code). A link is for
 * the one friend it goes to, so the link shown from now on carries `fresh` (drawn by the wiring); the secret
 * handed out stays unused until a request proving it is accepted, or INVITE_SECRETS_KEPT later ones push it
 * out. Invariant: the newest secret was never handed out. Taking an older secret again changes nothing (a
 * copy event right after the copy button took the same link).
 */
export function inviteLinkTaken(next, { secret, fresh }) {
  if (secret !== next.state.inviteSecrets.at(-1)) return;
  inviteSecretCreated(next, { secret: fresh });
}

/**
 * A request proving `secret` was accepted: a link secret is used once. When it was the newest (the link shown:
 * someone read it off the screen), the link needs a new one, or it would show an older secret already handed out.
 */
function useInviteSecret(next, secret) {
  const secrets = next.state.inviteSecrets;
  if (!secrets.includes(secret)) return;
  next.state = { ...next.state, inviteSecrets: secrets.filter((s) => s !== secret) };
  if (secret === secrets.at(-1)) next.effects.push({ type: 'inviteSecretNeeded' });
}

/**
 * A CONNECT reply. `resumeAttempted` without `resumed`: the old session is gone, and with it every friendship
 * and request. `resumed`: `friends` lists who is still a friend and whether they are online.
 */
export function connected(next, { id, version, resumed, resumeAttempted, friends, limits, now }) {
  const previousId = next.state.session.id;
  const session = { ...next.state.session, id, version, online: true };
  if (limits && Number.isSafeInteger(limits.max_message_bytes)) session.limits = { max_message_bytes: limits.max_message_bytes };
  next.state = { ...next.state, session };
  if (resumeAttempted && !resumed) {
    sessionLost(next, now);
    next.effects.push({ type: 'notice', code: 'resume_failed', previousId, id });
  } else if (resumed) {
    const present = new Map(friends.map((f) => [f.id, f.online === true]));
    for (const friend of next.state.friends.values()) {
      if (!isLive(friend)) continue;
      if (!present.has(friend.id)) endFriendship(next, friend.id, 'left', now);
      else putFriend(next, { ...friend, presence: present.get(friend.id) ? 'online' : 'away' });
    }
  }
  if (!resumed) {
    // A new session: a contact reached only by handle is offline until it answers our probe (contacts.js).
    for (const friend of next.state.friends.values()) {
      if (isLive(friend) && !friend.idLive) putFriend(next, { ...friend, presence: 'away' });
    }
  }
  // The server answers LISTEN anew on every connection (the wiring sends it): until then, §10 is unknown.
  next.state = { ...next.state, handles: { ...next.state.handles, supported: version === 2 ? next.state.handles.supported : false } };
  requeueUnconfirmed(next);
  offerAll(next, now);
  pumpAll(next);
}

/** The socket's status changed (transport.js). Anything but 'online' means nothing can be sent now. */
export function statusChanged(next, { status, now }) {
  if (status !== 'online') next.state = { ...next.state, session: { ...next.state.session, online: false } };
  // Another tab resumed our session: it is that tab's now.
  if (status === 'taken_over') endAllFriendships(next, 'session_lost', now);
}

/** Our session is over for good (after leaving): every friendship ends with it. */
export function left(next, { now }) {
  endAllFriendships(next, 'session_lost', now);
}

/** The session could not be resumed: what belonged to it is over, and work begun for it must not land. */
function sessionLost(next, now) {
  next.state = { ...next.state, session: { ...next.state.session, epoch: next.state.session.epoch + 1 } };
  endAllFriendships(next, 'session_lost', now);
  clearRequests(next);
}

/** The user starts a new session (after leaving, or after a takeover). */
export function newSession(next) {
  const { session } = next.state;
  next.state = { ...next.state, session: { ...session, id: null, epoch: session.epoch + 1 } };
  clearRequests(next);
}

// --- friendships -----------------------------------------------------------------------------------------

/**
 * A contact reached only by handle whose key is the one a new friendship with `id` brings (trust.js 'contact'):
 * the same friend, back under a new ID. It moves to `id` (one entry: its conversation, verification and name
 * stay) and the friendship then starts as any new one does. Both sides may or may not still hold the contact
 * (one may have lost its book, which is why they befriended again), so neither can assume the other continues
 * its seqs or secrets: both restart, as for any new friendship, and the new secrets make it a contact again.
 * Its messages still unconfirmed go with the old contact: marked not delivered, Retry seals them anew.
 */
function mergeContact(next, id, fingerprint, userId) {
  if (assessKey(next.state, id, fingerprint, userId) !== 'contact') return;
  const contact = [...next.state.friends.values()].find((f) => f.id !== id && isLive(f) && !f.idLive && f.fingerprint === fingerprint);
  if (!contact) return;
  const earlier = next.state.friends.get(id); // an ended friendship under the new ID: its lines come first
  const kept = forgetUnconfirmed(contact);
  const moved = { ...kept, id, messages: [...(earlier ? earlier.messages : []), ...kept.messages] };
  next.state = { ...next.state, friends: withEntry(withoutEntry(next.state.friends, contact.id), id, moved) };
  appendSystemLine(next, id, 'contact_merged', { from: contact.id });
  next.effects.push({ type: 'moved', from: contact.id, to: id });
  return true;
}

/**
 * Starts (or starts again) the friendship with `id` under the key `keyInfo` {fingerprint, userId, publicArmored,
 * viaInvite?}. `cause`, when given, is the system line that says why, drawn before "friendship started".
 */
function startFriendship(next, id, keyInfo, now, cause) {
  const merged = mergeContact(next, id, keyInfo.fingerprint, keyInfo.userId);
  const existing = next.state.friends.get(id);
  const fresh = newFriend(id);
  const friend = existing
    // A new friendship: §6 seq restarts at 1 both ways; the conversation so far stays on screen.
    ? {
      ...existing, sendSeq: 0, expectedSeq: 1, outbox: [], sending: null, status: 'friends', endedReason: '',
      rendezvous: fresh.rendezvous, received: fresh.received, idLive: true, requestedByMe: false, bookKey: '',
    }
    : newFriend(id);
  // Replays into this friendship are told apart by these (inbox.js). Numbered page-wide, not per friend: closing
  // a chat deletes the friend, and a per-friend count would start again and make the next friendship look like
  // the one whose messages are being replayed.
  const number = next.state.friendshipsStarted + 1;
  next.state = {
    ...next.state,
    friendshipsStarted: number,
    endedFriendships: withoutEntry(next.state.endedFriendships, id),
  };
  const started = { ...friend, presence: 'online', friendship: number, friendshipStartedAt: now, copiesShown: new Set() };
  const pinned = pinFriendKey(next.state, started, keyInfo);
  next.state = pinned.state;
  putFriend(next, pinned.friend);
  if (cause) appendSystemLine(next, id, cause);
  appendSystemLine(next, id, 'started', {
    assessment: merged ? 'contact' : pinned.assessment, keyChanged: pinned.friend.trust === 'changed', viaInvite: pinned.friend.trustSource === 'invite_proof',
  });
}

/** Ends the live friendship with `id`: 'left' | 'removed' | 'removed_by_you' | 'session_lost'. */
function endFriendship(next, id, reason, now) {
  const friend = liveFriend(next.state, id);
  if (!friend) return;
  // A contact outlives the sessions it was made in: it is reached by handle from now on (contacts.js).
  if (keepAsContact(next, friend, reason)) return;
  // Only the server says so: a faked end followed by a request "from" the same ID restarts `seq`.
  if (reason === 'left' || reason === 'removed') {
    next.state = { ...next.state, endedFriendships: withEntry(next.state.endedFriendships, id, { reason, at: now }) };
  }
  const ended = { ...friend, status: 'ended', endedReason: reason };
  putFriend(next, abandonOutbox(ended, reason === 'session_lost' ? 'session_lost' : 'friend_gone'));
  appendSystemLine(next, id, 'ended', { reason });
}

function endAllFriendships(next, reason, now) {
  for (const id of next.state.friends.keys()) endFriendship(next, id, reason, now);
}

// --- server frames ---------------------------------------------------------------------------------------

/** A server frame that is not an ACK/ERROR/PONG answering us. `epoch`: the session it arrived in. */
export function frameArrived(next, { frame, now, epoch }) {
  const from = isCanonicalId(frame.from) ? frame.from : null;
  switch (frame.type) {
    case 'FRIEND_REQUEST':
      if (from) receiveRequest(next, from, frame.public_key, epoch, frame.invite);
      return;
    case 'FRIEND_ACCEPT':
      if (from) friendAccepted(next, from, frame.public_key, epoch);
      return;
    // Version 2 servers: a pending request from this ID went away unanswered (its sender's session ended).
    case 'FRIEND_CANCEL':
      if (from) withdrawRequest(next, from, now);
      return;
    case 'FRIEND_DECLINE': {
      const request = next.state.outgoingRequests.get(from);
      if (request) next.state = { ...next.state, outgoingRequests: withEntry(next.state.outgoingRequests, from, { ...request, state: 'declined' }) };
      return;
    }
    case 'FRIEND_REMOVE':
      endFriendship(next, from, 'removed', now);
      return;
    case 'DISCONNECT':
      endFriendship(next, frame.id, 'left', now);
      withdrawRequest(next, frame.id, now);
      next.state = { ...next.state, outgoingRequests: withoutEntry(next.state.outgoingRequests, frame.id) };
      return;
    case 'PRESENCE': {
      const friend = liveFriend(next.state, frame.id);
      if (!friend) return;
      const online = frame.online === true;
      // Back within its resume window: the server has handed over what it queued for the friend.
      putFriend(next, online ? queuedDelivered({ ...friend, presence: 'online' }) : { ...friend, presence: 'away' });
      if (online) pump(next, friend.id);
      return;
    }
    case 'MESSAGE': {
      if (typeof frame.handle === 'string') {
        // To one of our handles: the handle says which contact it is for (the server sends no `from`).
        const friend = liveFriend(next.state, next.state.handles.listen.get(frame.handle));
        if (friend && friend.publicArmored) receiveMessage(next, friend, frame, now, 'handle');
        return;
      }
      const friend = liveFriend(next.state, from);
      // The server only forwards between friends; anything else is not ours to show.
      if (friend && friend.idLive && friend.publicArmored) receiveMessage(next, friend, frame, now);
      return;
    }
    case 'UNDELIVERED':
      markUndelivered(next, frame.ref, frame.reason);
      return;
    case 'HANDLE_TAKEN':
      // Another tab or device of ours listens on our contacts' handles now: their messages go there.
      next.effects.push({ type: 'notice', code: 'handle_taken' });
      return;
    default:
      // ERROR frames without our ref are the wiring's (a notice); anything else is not ours to interpret.
  }
}

/**
 * `count` frames about `from` were dropped unread: too many were waiting (peerqueue.js), as only a lying server
 * (or a friend's client sending crafted slow payloads) makes happen. One line in that friend's chat; for any
 * other ID, a notice naming it.
 */
export function framesDropped(next, { from, count }) {
  if (next.state.friends.has(from)) appendSystemLine(next, from, 'frames_dropped', { count });
  else next.effects.push({ type: 'notice', code: 'frames_dropped', from, count });
}

/**
 * An honest server forwards FRIEND_ACCEPT only for our own pending request (PROTOCOL FRIEND_ACCEPT). Anything
 * else would start a new friendship and reset `seq` both ways, letting the server replay a recorded
 * conversation as verified (SECURITY.md): ignore it, and say so.
 */
function friendAccepted(next, from, publicArmored, epoch) {
  const live = liveFriend(next.state, from);
  if (next.state.outgoingRequests.get(from)?.state !== 'pending' || live) {
    next.effects.push({ type: 'notice', code: 'unexpected_accept', from, live: Boolean(live) });
    // Once per ID: a server repeating the forgery must not flood the conversation.
    if (live && !next.state.warnedForgedAccept.has(from)) appendSystemLine(next, from, 'unexpected_accept');
    next.state = { ...next.state, warnedForgedAccept: withMember(next.state.warnedForgedAccept, from) };
    return;
  }
  next.state = {
    ...next.state,
    outgoingRequests: withoutEntry(next.state.outgoingRequests, from),
    incomingRequests: withoutEntry(next.state.incomingRequests, from),
  };
  next.effects.push({ type: 'checkKey', purpose: 'accept', from, publicArmored, epoch });
}

/** The crypto worker's answer for the key an acceptance brought. */
function acceptKeyChecked(next, { from, publicArmored, key, refusal, epoch, now }) {
  if (epoch !== next.state.session.epoch) return; // our session ended meanwhile: this acceptance was for the old one
  if (!key) {
    // We are friends on the server now; a friendship we cannot use is ended there too.
    next.effects.push({ type: 'notice', code: 'accept_key_refused', from, refusal });
    next.effects.push({ type: 'send', frame: { type: 'FRIEND_REMOVE', to: from } });
    return;
  }
  next.state = recordOffer(next.state, from, key.fingerprint);
  startFriendship(next, from, { ...key, publicArmored }, now, 'accepted');
  // We asked: we offer our rendezvous secret first (contacts.js).
  putFriend(next, { ...next.state.friends.get(from), requestedByMe: true });
  next.effects.push({ type: 'show', id: from }, { type: 'notify', what: 'accepted', from });
}

/** A key checked by the crypto worker, for a request card or for an acceptance. */
export function keyChecked(next, event) {
  if (event.purpose === 'accept') acceptKeyChecked(next, event);
  else requestKeyChecked(next, event);
}

// --- the user's answers and requests ---------------------------------------------------------------------

/**
 * Our FRIEND_REQUEST was acknowledged, or (`unsure`) the connection dropped before the ACK: it may have reached
 * them, and their accept must then count, or they would think us friends while we drop their messages.
 */
export function requestSent(next, { id, unsure }) {
  next.state = { ...next.state, outgoingRequests: withEntry(next.state.outgoingRequests, id, { id, state: 'pending', unsure }) };
}

export function sentRequestDismissed(next, { id }) {
  next.state = { ...next.state, outgoingRequests: withoutEntry(next.state.outgoingRequests, id) };
}

/**
 * The server acknowledged our FRIEND_ACCEPT for the request from `id`. `key` is the key of the card the user
 * accepted: the one they compared, even if the card was withdrawn while the answer was on its way. `viaInvite`
 * is the card's: the secret of our link its request proved, if any (requests.js); it counts only while that
 * secret is still unused, and accepting uses it up.
 */
export function requestAccepted(next, { id, key, viaInvite, now }) {
  next.state = {
    ...next.state,
    incomingRequests: withoutEntry(next.state.incomingRequests, id),
    outgoingRequests: withoutEntry(next.state.outgoingRequests, id),
  };
  const proved = Boolean(viaInvite) && next.state.inviteSecrets.includes(viaInvite);
  startFriendship(next, id, { ...key, viaInvite: proved }, now);
  if (proved) useInviteSecret(next, viaInvite);
}

/** The request from `id` is answered (declined) or no longer exists on the server. */
export function requestClosed(next, { id }) {
  next.state = { ...next.state, incomingRequests: withoutEntry(next.state.incomingRequests, id) };
}

/** We removed `id` (the server acknowledged FRIEND_REMOVE, or said we were not friends any more). */
export function friendRemoved(next, { id, now }) {
  endFriendship(next, id, 'removed_by_you', now);
}

/** "Close chat" on an ended friendship: the conversation goes; what this page learned about the ID stays. */
export function chatClosed(next, { id }) {
  next.state = { ...next.state, friends: withoutEntry(next.state.friends, id) };
}

/**
 * An invite link was read: whatever path befriends this ID is checked against its fingerprint (trust.js), and
 * our request to that ID proves the link's secret, when it has one (the wiring reads `inviteKeys`).
 */
export function inviteOpened(next, { id, fingerprint, secret }) {
  next.state = { ...next.state, expectations: withEntry(next.state.expectations, id, fingerprint) };
  if (isInviteSecret(secret)) next.state = { ...next.state, inviteKeys: withEntry(next.state.inviteKeys, id, secret) };
}

/** The user's own name for friend `id` (cleaned and bounded here too: names.js); '' clears it. */
export function nicknameSet(next, { id, nickname }) {
  updateFriend(next, id, (friend) => ({ ...friend, nickname: cleanName(nickname, NICKNAME_MAX) }));
}

// --- the user's decisions about a friend's key -------------------------------------------------------------

/** The user compared fingerprints over another channel and they match. */
export function keyVerified(next, { id }) {
  const friend = next.state.friends.get(id);
  if (!friend) return;
  const verified = markVerified(next.state, friend);
  next.state = verified.state;
  putFriend(next, verified.friend);
  appendSystemLine(next, id, 'verified');
}

export function keyUnverified(next, { id }) {
  const friend = next.state.friends.get(id);
  if (!friend) return;
  const unverified = markUnverified(next.state, friend);
  next.state = unverified.state;
  putFriend(next, unverified.friend);
  appendSystemLine(next, id, 'unverified');
}

/** The user confirmed a changed key: it becomes unverified, and what waited in the outbox goes out. */
export function changedKeyAccepted(next, { id }) {
  const friend = next.state.friends.get(id);
  if (!friend) return;
  putFriend(next, acceptChangedKey(friend));
  appendSystemLine(next, id, 'key_accepted');
  pump(next, id);
}
