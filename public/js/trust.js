// Trust in friends' keys: pinning on acceptance, unverified → verified (compared, invite link, or remembered)
// and the loud "key changed" state. Pins live for the page's life per friend ID; verified fingerprints
// may be remembered on the device (they are public data).
import { DEFAULT_KEY_NAME } from './keys.js';

/**
 * What we know about a key offered for `id` before the user accepts it: 'invite_mismatch' | 'key_changed' |
 * 'own_key' | 'pinned_elsewhere' | 'invite_match' | 'remembered' | 'pinned_before' | 'name_reused' | 'new'.
 * The first four are alarms: accepting makes the friend *key changed* (sending blocked until confirmed).
 */
export function assessKey(state, id, fingerprint, userId = '') {
  const expected = state.expectations.get(id);
  const pinned = state.pins.get(id);
  if (expected && expected !== fingerprint) return 'invite_mismatch';
  if (pinned && pinned !== fingerprint) return 'key_changed';
  // Our own key as a friend's: everything we send could be reflected back as "signed by this friend".
  if (state.identity && fingerprint === state.identity.fingerprint) return 'own_key';
  // One key, two live IDs: a server re-using a friend's public key to pose as someone new.
  if (otherIdsPinnedTo(state, id, fingerprint).some((other) => isLive(state, other))) return 'pinned_elsewhere';
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

function isLive(state, id) {
  const friend = state.friends.get(id);
  return Boolean(friend && friend.presence !== 'gone');
}

/**
 * Fingerprints other than `fingerprint` pinned in this page's life for a key with the same user ID. Pins are
 * per ID, and the server can force an ID change (drop the socket, refuse the resume): a friend coming back
 * under a new ID with a substituted key would otherwise look merely 'new'.
 */
export function otherKeysNamed(state, userId, fingerprint) {
  // Every key made without a name carries the default one: a match on it means nothing.
  if (!userId || userId === DEFAULT_KEY_NAME) return [];
  return othersIn(state.pinnedNames, userId, fingerprint);
}

/**
 * Remembers, for the page's life, a key offered for `id` (a request card, or an acceptance). A forged
 * DISCONNECT deletes a pending card and a fresh request can bring another key; nothing would be pinned yet,
 * so without this the new card would look merely 'new'.
 */
export function recordOffer(state, id, fingerprint) {
  if (fingerprint) addTo(state.offeredKeys, id, fingerprint);
}

/** Fingerprints other than `fingerprint` offered for `id` earlier in this page's life. */
export function otherOfferedKeys(state, id, fingerprint) {
  return othersIn(state.offeredKeys, id, fingerprint);
}

/** Adds `fingerprint` to the set `map` keeps under `key`. */
function addTo(map, key, fingerprint) {
  if (!map.has(key)) map.set(key, new Set());
  map.get(key).add(fingerprint);
}

/** The fingerprints `map` keeps under `key`, but `fingerprint`. */
function othersIn(map, key, fingerprint) {
  return [...(map.get(key) || [])].filter((fp) => fp !== fingerprint);
}

/** Pins the key a new friendship brought and sets the friend's trust from what we knew of it. */
export function pinFriendKey(state, friend, { fingerprint, userId, publicArmored }) {
  const assessment = assessKey(state, friend.id, fingerprint, userId);
  const wasVerified = friend.fingerprint === fingerprint && friend.trust === 'verified';
  friend.fingerprint = fingerprint;
  friend.userId = userId;
  friend.publicArmored = publicArmored;
  friend.changedFrom = '';
  friend.sharedWith = '';
  if (assessment === 'invite_mismatch') {
    friend.trust = 'changed';
    friend.changedFrom = state.expectations.get(friend.id);
    friend.trustSource = 'invite';
  } else if (assessment === 'key_changed') {
    friend.trust = 'changed';
    friend.changedFrom = state.pins.get(friend.id) || otherOfferedKeys(state, friend.id, fingerprint)[0];
    friend.trustSource = '';
  } else if (assessment === 'own_key' || assessment === 'pinned_elsewhere') {
    friend.trust = 'changed';
    friend.trustSource = assessment;
    friend.sharedWith = assessment === 'own_key' ? '' : otherIdsPinnedTo(state, friend.id, fingerprint).find((other) => isLive(state, other));
  } else if (assessment === 'invite_match') {
    setVerified(state, friend, 'invite');
  } else if (assessment === 'remembered' || wasVerified) {
    friend.trust = 'verified';
    friend.trustSource = 'remembered';
  } else {
    friend.trust = 'unverified';
    friend.trustSource = '';
  }
  state.pins.set(friend.id, fingerprint);
  if (userId) addTo(state.pinnedNames, userId, fingerprint);
  // The link's fingerprint is checked for as long as the page lives, unless the key pinned now is the one it
  // named (then the pin says the same). Forgetting it after a mismatching pin would let a server fake the end of
  // that friendship and offer the swapped key again as merely 'new'.
  if (state.expectations.get(friend.id) === fingerprint) state.expectations.delete(friend.id);
  return assessment;
}

function setVerified(state, friend, source) {
  friend.trust = 'verified';
  friend.trustSource = source;
  state.verifiedFingerprints.add(friend.fingerprint);
}

/** The user compared the fingerprint over another channel. */
export function markVerified(state, friend) {
  if (friend.trust === 'changed' || !friend.fingerprint) return;
  setVerified(state, friend, 'compared');
}

export function markUnverified(state, friend) {
  if (friend.trust !== 'verified') return;
  friend.trust = 'unverified';
  friend.trustSource = '';
  state.verifiedFingerprints.delete(friend.fingerprint);
}

/** The user saw the key-changed warning and chose to continue with the new key (as unverified). */
export function acceptChangedKey(friend) {
  if (friend.trust !== 'changed') return;
  friend.trust = 'unverified';
  friend.trustSource = '';
  friend.changedFrom = '';
  friend.sharedWith = '';
}

/** Sending is blocked while a key change is unconfirmed. */
export function canSendTo(friend) {
  return friend.trust !== 'changed' && friend.presence !== 'gone' && friend.publicArmored !== '';
}

export const TRUST_LABELS = {
  verified: 'verified',
  unverified: 'unverified',
  changed: 'KEY CHANGED',
};

export const ASSESSMENT_TEXT = {
  invite_mismatch: 'This key does NOT match the fingerprint in the invite link you opened. Someone may be intercepting.',
  key_changed: 'This ID used a different key earlier in this session, or offered one. Compare fingerprints before trusting it.',
  own_key: 'This is YOUR OWN key. Someone, maybe the server, is sending your key back to you: accepting would let your own messages show up as if this ID wrote them. Accept only if this is you in another tab.',
  pinned_elsewhere: 'This key already belongs to another friend of yours under a different ID. Someone, maybe the server, may be re-using their key to pose as a new contact. Ask that friend before accepting.',
  invite_match: 'Matches the fingerprint in the invite link: verified.',
  remembered: 'You verified this key before.',
  pinned_before: 'This key belonged to an ID earlier in this session that is gone now: your friend back under a new ID, or someone re-using their public key. Compare fingerprints before trusting it.',
  // A notice, not an alarm: a friend who reloads without "remember" comes back with a new key and the same name.
  name_reused: 'A key with this name was used earlier in this session under another ID, with a different fingerprint: compare fingerprints before trusting it.',
  new: 'New key: compare the fingerprint with your friend to verify it.',
};
