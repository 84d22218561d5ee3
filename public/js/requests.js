// Incoming friend requests: a request becomes a card once the crypto worker checked its key, the first key is
// kept against repeats, withdrawals (FRIEND_CANCEL, DISCONNECT) remove cards, and a cap bounds how many are kept.
// Any ID can send requests, so everything here is bounded and the key work happens off the main thread (the
// `checkKey` effect). Pure transitions on model.js state.
import { isInviteProof } from './inviteproof.js';
import { isLive, withEntry, withoutEntry } from './model.js';
import { recordOffer } from './trust.js';

/**
 * Pending requests kept at most (checked ones and ones being checked). An honest server caps what one recipient
 * can have pending far lower; beyond this, new requests are dropped unread and counted, so a lying server cannot
 * make the page hold thousands of keys.
 */
export const MAX_KEPT_REQUESTS = 500;

/** How long a withdrawn request is remembered for its card's short note. */
export const WITHDRAWN_NOTE_MS = 10000;

/**
 * Other keys named on a card whose ID repeated its request (the card shows them); further repeats with yet
 * another key are only counted. A lying server can repeat a request without end.
 */
export const OTHER_KEYS_KEPT = 3;

/**
 * A FRIEND_REQUEST from `from`. Its key is checked by the `checkKey` effect, whose answer is requestKeyChecked();
 * the wiring applies both in `from`'s turn of the event order (peerqueue.js), so a withdrawal or a repeat from
 * the same ID is applied after it. `epoch` is the session the frame arrived in.
 */
export function receiveRequest(next, from, publicArmored, epoch, invite) {
  const { state } = next;
  if (isLive(state.friends.get(from))) return;
  const pending = state.incomingRequests.get(from);
  // The same text again changes nothing (keepFirstKey): no need to check it again.
  if (pending && pending.publicArmored === publicArmored) return;
  if (!pending && state.incomingRequests.size + state.requestsChecking >= MAX_KEPT_REQUESTS) {
    next.state = { ...state, requestsIgnored: state.requestsIgnored + 1 };
    return;
  }
  next.state = { ...state, requestsChecking: state.requestsChecking + 1 };
  const check = { type: 'checkKey', purpose: 'request', from, publicArmored, epoch };
  // A proof that the sender opened our invite link is checked with the key (it names the key's fingerprint).
  if (isInviteProof(invite) && state.inviteSecrets.length > 0) {
    Object.assign(check, { invite, inviteSecrets: state.inviteSecrets, ownFingerprint: state.ownFingerprint });
  }
  next.effects.push(check);
}

/**
 * The crypto worker's answer for a request's key: `key` {fingerprint, userId}, or `refusal` {code, message}, and
 * `viaInvite`, the secret of our invite link the request proved (null when it proved none). A request whose
 * session ended meanwhile is dropped.
 *
 * A secret proved by a second pending request (from another ID) reached more than one person: both requests are
 * marked `inviteShared` for good and the secret is used up, so neither, nor any later request, is verified by
 * it (which of the two got the link from the user, the proof cannot tell). Marking for good matters: were the
 * mark to go with the other request, whoever could make that one withdraw would leave theirs "proved".
 */
export function requestKeyChecked(next, { from, publicArmored, key, refusal, epoch, viaInvite }) {
  next.state = { ...next.state, requestsChecking: next.state.requestsChecking - 1 };
  const { state } = next;
  if (epoch !== state.session.epoch) return;
  const request = {
    id: from,
    number: 0,
    // A refused key is never used (Accept stays disabled): its text, up to a frame's size, is not kept.
    publicArmored: key ? publicArmored : '',
    fingerprint: key ? key.fingerprint : null, // null: the key is refused, and the card says why
    userId: key ? key.userId : '',
    refusal: key ? null : refusal,
    // Only a secret still unused counts: a link is used once.
    viaInvite: key && viaInvite && state.inviteSecrets.includes(viaInvite) ? viaInvite : null,
    inviteShared: false,
    // Up to OTHER_KEYS_KEPT fingerprints of repeats that brought another key ('unreadable' for a refused one),
    // and how many further such repeats came.
    otherKeys: [],
    moreOtherKeys: 0,
  };
  const first = state.incomingRequests.get(from); // the user may have declined the first one meanwhile
  if (first) {
    keepFirstKey(next, first, request);
    return;
  }
  const number = state.requestsReceived + 1;
  next.state = recordOffer({
    ...state,
    requestsReceived: number,
    withdrawnRequests: withoutEntry(state.withdrawnRequests, from),
    incomingRequests: withEntry(state.incomingRequests, from, { ...request, number }),
  }, from, request.fingerprint);
  if (request.viaInvite) shareInvite(next, request.viaInvite);
  next.effects.push({ type: 'notify', what: 'request', from });
}

/**
 * When more than one pending request proved `secret`, marks them all `inviteShared` and uses the secret up
 * (see requestKeyChecked). A new secret is asked for when it was the one the link shows.
 */
function shareInvite(next, secret) {
  const { state } = next;
  const proving = [...state.incomingRequests.values()].filter((r) => r.viaInvite === secret);
  if (proving.length < 2) return;
  let incomingRequests = state.incomingRequests;
  for (const request of proving) incomingRequests = withEntry(incomingRequests, request.id, { ...request, inviteShared: true });
  next.state = { ...state, incomingRequests, inviteSecrets: state.inviteSecrets.filter((s) => s !== secret) };
  if (secret === state.inviteSecrets.at(-1)) next.effects.push({ type: 'inviteSecretNeeded' });
}

/**
 * What a pending request's proof of our invite link says now: 'proved' (it proved a secret still unused,
 * which no other request proved: accepting verifies the key), 'shared' (another request proved the same
 * secret: the link reached more than one person, and verifies neither), 'used' (the secret it proved was used
 * or forgotten since), or 'none' (no proof). Cheap: the view asks for every card it draws.
 */
export function inviteStatus(state, request) {
  if (request.inviteShared) return 'shared';
  if (!request.viaInvite) return 'none';
  return state.inviteSecrets.includes(request.viaInvite) ? 'proved' : 'used';
}

/**
 * An honest server never forwards a repeated request (PROTOCOL FRIEND_REQUEST), so a repeat carrying another
 * key is an attempt to swap the key while the user compares fingerprints: the first key stays, and the card
 * names the other one (the first OTHER_KEYS_KEPT; later repeats with other keys are counted, not told apart).
 * A repeat with the same key changes nothing and is ignored.
 */
function keepFirstKey(next, pending, repeat) {
  // A refused key after a refused one changes nothing either: that card can only be declined.
  const sameKey = repeat.fingerprint ? repeat.fingerprint === pending.fingerprint : !pending.fingerprint;
  if (sameKey) return;
  const other = repeat.fingerprint || 'unreadable';
  if (pending.otherKeys.includes(other)) return;
  // A new list (of at most OTHER_KEYS_KEPT) tells the view to redraw the warning; past that, a count.
  const updated = pending.otherKeys.length < OTHER_KEYS_KEPT
    ? { ...pending, otherKeys: [...pending.otherKeys, other] }
    : { ...pending, moreOtherKeys: pending.moreOtherKeys + 1 };
  next.state = { ...next.state, incomingRequests: withEntry(next.state.incomingRequests, pending.id, updated) };
}

/**
 * The pending request from `from` went away unanswered (FRIEND_CANCEL, or DISCONNECT of the requester). Only
 * a card is removed: friends, sent requests and anything else are untouched, and an ID with no card is
 * ignored. The key it offered stays recorded (trust.js recordOffer), so a server that forges the withdrawal
 * and then a new request from the same ID with another key is still caught.
 */
export function withdrawRequest(next, from, now) {
  const { state } = next;
  if (!state.incomingRequests.has(from)) return;
  const withdrawn = new Map();
  for (const [id, at] of state.withdrawnRequests) {
    if (now - at <= WITHDRAWN_NOTE_MS) withdrawn.set(id, at);
  }
  withdrawn.set(from, now);
  next.state = { ...state, incomingRequests: withoutEntry(state.incomingRequests, from), withdrawnRequests: withdrawn };
}

/** Requests belong to a session: a new one starts without any. */
export function clearRequests(next) {
  next.state = {
    ...next.state,
    incomingRequests: new Map(),
    outgoingRequests: new Map(),
    requestsIgnored: 0,
    withdrawnRequests: new Map(),
  };
}
