// Incoming friend requests: a card per requesting ID once the crypto worker checked its key, the first key kept
// against repeats, withdrawals (FRIEND_CANCEL, DISCONNECT), and a bound on how many are kept. Any ID can send
// requests, so everything here is bounded and the key work happens off the main thread.
import { JOB_BUDGET_MS } from './cryptoclient.js';
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

/** Why a key was refused, in words for its card or a notice. */
export function refusalText(error) {
  if (error && error.code === 'too_slow') {
    return `Checking this key took too long (more than ${JOB_BUDGET_MS / 1000} seconds), so SecChat refused it.`;
  }
  if (error && error.code === 'worker_failed') return 'The key could not be checked: the browser stopped the crypto worker.';
  return (error && error.message) || 'The key could not be read.';
}

/**
 * @param {object} options
 * @param {object} options.state  the app state (incomingRequests, requestsIgnored, withdrawnRequests, friends)
 * @param {{readFriendKey: (armored: string) => Promise<{fingerprint: string, userId: string}>}} options.pgp
 * @param {() => void} options.changed
 * @param {(request: object) => void} options.onNew  a new card was added
 */
export function createIncomingRequests({ state, pgp, changed, onNew }) {
  let checking = 0; // new requests whose key the worker is checking: they count against MAX_KEPT_REQUESTS

  /**
   * A FRIEND_REQUEST from `from`. Runs in `from`'s turn of the event order (peerqueue.js), so a withdrawal or a
   * repeat from the same ID is applied after it; `isCurrent()` is false once our session ended meanwhile.
   */
  async function receive(from, publicArmored, isCurrent) {
    const existing = state.friends.get(from);
    if (existing && existing.presence !== 'gone') return;
    const pending = state.incomingRequests.get(from);
    // The same text again changes nothing (keepFirstKey): no need to check it again.
    if (pending && pending.publicArmored === publicArmored) return;
    if (!pending && state.incomingRequests.size + checking >= MAX_KEPT_REQUESTS) {
      state.requestsIgnored += 1;
      changed();
      return;
    }
    const request = { id: from, publicArmored, fingerprint: null, userId: '', error: null, otherKeys: [], moreOtherKeys: 0 };
    checking += 1;
    try {
      Object.assign(request, await pgp.readFriendKey(publicArmored));
    } catch (error) {
      request.error = refusalText(error);
      // A refused key is never used (Accept stays disabled): its text, up to a frame's size, is not kept.
      request.publicArmored = '';
    } finally {
      checking -= 1;
    }
    if (!isCurrent()) return;
    const first = state.incomingRequests.get(from); // the user may have declined the first one meanwhile
    if (first) {
      keepFirstKey(first, request);
      return;
    }
    state.withdrawnRequests.delete(from);
    state.incomingRequests.set(from, request);
    recordOffer(state, from, request.fingerprint);
    onNew(request);
    changed();
  }

  /**
   * An honest server never forwards a repeated request (PROTOCOL FRIEND_REQUEST), so a repeat carrying another
   * key is an attempt to swap the key while the user compares fingerprints: the first key stays, and the card
   * names the other one (the first OTHER_KEYS_KEPT; later repeats with other keys are counted, not told apart).
   * A repeat with the same key changes nothing and is ignored.
   */
  function keepFirstKey(pending, repeat) {
    // A refused key after a refused one changes nothing either: that card can only be declined.
    const sameKey = repeat.fingerprint ? repeat.fingerprint === pending.fingerprint : !pending.fingerprint;
    if (sameKey) return;
    const other = repeat.fingerprint || 'unreadable';
    if (pending.otherKeys.includes(other)) return;
    // A new array (of at most OTHER_KEYS_KEPT) tells the view to redraw the warning; past that, a count.
    if (pending.otherKeys.length < OTHER_KEYS_KEPT) pending.otherKeys = [...pending.otherKeys, other];
    else pending.moreOtherKeys += 1;
    changed();
  }

  /**
   * The pending request from `from` went away unanswered (FRIEND_CANCEL, or DISCONNECT of the requester). Only
   * a card is removed: friends, sent requests and anything else are untouched, and an ID with no card is
   * ignored. The key it offered stays recorded (trust.js recordOffer), so a server that forges the withdrawal
   * and then a new request from the same ID with another key is still caught.
   */
  function withdraw(from) {
    if (!state.incomingRequests.has(from)) return;
    state.incomingRequests.delete(from);
    const now = Date.now();
    for (const [id, at] of state.withdrawnRequests) {
      if (now - at > WITHDRAWN_NOTE_MS) state.withdrawnRequests.delete(id);
    }
    state.withdrawnRequests.set(from, now);
    changed();
  }

  return { receive, withdraw };
}
