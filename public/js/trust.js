// Trust in friends' keys: pinning on acceptance, unverified → verified (compared, invite link, or remembered)
// and the loud "key changed" state. Pins live for the page's life per friend ID; verified fingerprints
// may be remembered on the device (they are public data). Pure: functions that change trust return the new
// state or friend (model.js), and the words for all of it are in text.js.
import { isLive, withEntry, withMember, withMemberAt, withoutEntry, withoutMember } from './model.js';
import { keyName, nameSkeleton } from './names.js';

/**
 * What we know about a key offered for `id` before the user accepts it: 'invite_mismatch' | 'key_changed' |
 * 'own_key' | 'pinned_elsewhere' | 'contact' | 'invite_match' | 'remembered' | 'pinned_before' | 'name_reused' |
 * 'new'. The first four are alarms: accepting makes the friend *key changed* (sending blocked until confirmed).
 * 'contact': the key of a contact reached only by handle (no live ID friendship), as when the friend comes back
 * under a new ID; accepting continues that contact under this ID (friendship.js).
 */
export function assessKey(state, id, fingerprint, userId = '') {
  const expected = state.expectations.get(id);
  const pinned = state.pins.get(id);
  if (expected && expected !== fingerprint) return 'invite_mismatch';
  if (pinned && pinned !== fingerprint) return 'key_changed';
  // Our own key as a friend's: everything we send could be reflected back as "signed by this friend".
  if (state.ownFingerprint && fingerprint === state.ownFingerprint) return 'own_key';
  // One key, two live IDs: a server re-using a friend's public key to pose as someone new.
  const live = otherIdsPinnedTo(state, id, fingerprint).map((other) => state.friends.get(other)).filter(isLive);
  if (live.some((friend) => friend.idLive || friend.trust === 'changed')) return 'pinned_elsewhere';
  if (live.length > 0) return 'contact';
  if (expected === fingerprint) return 'invite_match';
  if (otherOfferedKeys(state, id, fingerprint).length > 0) return 'key_changed';
  if (state.verifiedFingerprints.has(fingerprint)) return 'remembered';
  // A friend whose ID ended, back under a new one (or their public key re-used): a notice, not an alarm.
  if (otherIdsPinnedTo(state, id, fingerprint).length > 0) return 'pinned_before';
  if (otherKeysNamed(state, userId, fingerprint).length > 0) return 'name_reused';
  return 'new';
}

/** Assessments that make an accepted key *key changed* (blocking) rather than merely unverified. */
const ALARMS = new Set(['invite_mismatch', 'key_changed', 'own_key', 'pinned_elsewhere']);

export function isAlarm(assessment) {
  return ALARMS.has(assessment);
}

/** IDs other than `id` that had `fingerprint` pinned in this page's life. */
export function otherIdsPinnedTo(state, id, fingerprint) {
  const ids = [];
  for (const [other, pinned] of state.pins) {
    if (other !== id && pinned === fingerprint) ids.push(other);
  }
  return ids;
}

/**
 * Fingerprints other than `fingerprint` pinned in this page's life for a key with the same user ID. Pins are
 * per ID, and the server can force an ID change (drop the socket, refuse the resume): a friend coming back
 * under a new ID with a substituted key would otherwise look merely 'new'.
 */
export function otherKeysNamed(state, userId, fingerprint) {
  const name = pinnedName(userId);
  return name ? othersIn(state.pinnedNames, name, fingerprint) : [];
}

/**
 * How `pinnedNames` files a key's user ID: the skeleton of the name as shown (names.js), so names that read
 * alike are one name whatever invisible characters, case or look-alike letters tell them apart. '' for a key
 * without a name worth comparing: every key made without one carries the default name, a match on it means
 * nothing.
 */
export function pinnedName(userId) {
  const name = keyName(userId);
  return name ? nameSkeleton(name) : '';
}

/**
 * Remembers, for the page's life, a key offered for `id` (a request card, or an acceptance). A forged
 * DISCONNECT deletes a pending card and a fresh request can bring another key; nothing would be pinned yet,
 * so without this the new card would look merely 'new'.
 */
export function recordOffer(state, id, fingerprint) {
  return fingerprint ? { ...state, offeredKeys: withMemberAt(state.offeredKeys, id, fingerprint) } : state;
}

/** Fingerprints other than `fingerprint` offered for `id` earlier in this page's life. */
export function otherOfferedKeys(state, id, fingerprint) {
  return othersIn(state.offeredKeys, id, fingerprint);
}

/** The fingerprints `map` keeps under `key`, but `fingerprint`. */
function othersIn(map, key, fingerprint) {
  return [...(map.get(key) || [])].filter((fp) => fp !== fingerprint);
}

/**
 * Pins the key a new friendship brought and sets the friend's trust from what we knew of it (and, `viaInvite`,
 * from a request that proved our invite link's secret; alarms still win).
 * Returns {state, friend, assessment}: the state with the pin recorded (and the invite's expectation for the ID
 * ended when this is the key it named), and the friend with the key and its trust.
 */
export function pinFriendKey(state, friend, { fingerprint, userId, publicArmored, viaInvite = false }) {
  const assessment = assessKey(state, friend.id, fingerprint, userId);
  const wasVerified = friend.fingerprint === fingerprint && friend.trust === 'verified';
  let pinned = { ...friend, fingerprint, userId, publicArmored, changedFrom: '', sharedWith: '', keyBefore: '' };
  let next = state;
  if (assessment === 'invite_mismatch') {
    pinned = { ...pinned, trust: 'changed', changedFrom: state.expectations.get(friend.id), trustSource: 'invite' };
  } else if (assessment === 'key_changed') {
    const changedFrom = state.pins.get(friend.id) || otherOfferedKeys(state, friend.id, fingerprint)[0];
    pinned = { ...pinned, trust: 'changed', changedFrom, trustSource: '', keyBefore: changedFrom || '' };
  } else if (assessment === 'own_key' || assessment === 'pinned_elsewhere') {
    const sharedWith = assessment === 'own_key' ? ''
      : otherIdsPinnedTo(state, friend.id, fingerprint).find((other) => isLive(state.friends.get(other)));
    pinned = { ...pinned, trust: 'changed', trustSource: assessment, sharedWith };
  } else if (assessment === 'invite_match') {
    ({ state: next, friend: pinned } = setVerified(next, pinned, 'invite'));
  } else if (viaInvite) {
    // Their request proved our invite link's one-time secret for this very key (inviteproof.js): the key came
    // from whoever we gave the link to, as surely as the link's fingerprint proves ours to them.
    ({ state: next, friend: pinned } = setVerified(next, pinned, 'invite_proof'));
  } else if (assessment === 'remembered' || wasVerified) {
    pinned = { ...pinned, trust: 'verified', trustSource: 'remembered' };
  } else {
    pinned = { ...pinned, trust: 'unverified', trustSource: '' };
  }
  // The same name on another key pinned earlier: maybe the same person with a new key (the user decides).
  if (assessment === 'name_reused') pinned = { ...pinned, keyBefore: otherKeysNamed(state, userId, fingerprint)[0] || '' };
  next = {
    ...next,
    pins: withEntry(next.pins, friend.id, fingerprint),
    pinnedNames: pinnedName(userId) ? withMemberAt(next.pinnedNames, pinnedName(userId), fingerprint) : next.pinnedNames,
    // The link's fingerprint is checked for as long as the page lives, unless the key pinned now is the one it
    // named (then the pin says the same). Forgetting it after a mismatching pin would let a server fake the end
    // of that friendship and offer the swapped key again as merely 'new'.
    expectations: next.expectations.get(friend.id) === fingerprint ? withoutEntry(next.expectations, friend.id) : next.expectations,
  };
  return { state: next, friend: pinned, assessment };
}

function setVerified(state, friend, source) {
  return {
    state: { ...state, verifiedFingerprints: withMember(state.verifiedFingerprints, friend.fingerprint) },
    friend: { ...friend, trust: 'verified', trustSource: source },
  };
}

/** The user compared the fingerprint over another channel. Returns {state, friend}. */
export function markVerified(state, friend) {
  if (friend.trust === 'changed' || !friend.fingerprint) return { state, friend };
  return setVerified(state, friend, 'compared');
}

/** Returns {state, friend}. */
export function markUnverified(state, friend) {
  if (friend.trust !== 'verified') return { state, friend };
  return {
    state: { ...state, verifiedFingerprints: withoutMember(state.verifiedFingerprints, friend.fingerprint) },
    friend: { ...friend, trust: 'unverified', trustSource: '' },
  };
}

/** The user saw the key-changed warning and chose to continue with the new key (as unverified). */
export function acceptChangedKey(friend) {
  if (friend.trust !== 'changed') return friend;
  return { ...friend, trust: 'unverified', trustSource: '', changedFrom: '', sharedWith: '' };
}

/** Sending is blocked while a key change is unconfirmed, and once the friendship ended. */
export function canSendTo(friend) {
  return friend.trust !== 'changed' && isLive(friend) && friend.publicArmored !== '';
}
