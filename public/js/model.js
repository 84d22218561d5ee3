// The client's domain state as plain data: the session, friendships, friend requests both ways, what is known
// about keys, and the conversations. Transitions (transition.js and the modules it routes to) never change a
// state they are given: they return a new one that shares every part that did not change. So the wiring can
// tell what changed by identity, and a test can hold the state before and after a step side by side.
//
// Invariants: a friend's `status` says whether the friendship is live ('friends') or over ('ended', with
// `endedReason`); `presence` ('online' | 'away') only means something while it is live. Every entry of a
// friend's `outbox` is the localId of one of its outgoing messages, oldest first; at most one of them is in
// `sending` (sealing, waiting for its ACK, or backing off), and it is the first.

export function createModel() {
  return {
    ownFingerprint: '', // the user's key: messages must be addressed to it, and a friend offering it is an alarm
    // version: what the server's CONNECT reply said (PROTOCOL §9). online: a CONNECT reply arrived and no
    // status change since said otherwise. epoch: bumped when our session ends, so work begun for the old
    // session (a key check) is dropped when it finishes.
    session: { id: null, version: 1, limits: { max_message_bytes: 65536 }, online: false, epoch: 0 },
    friends: new Map(), // id -> friend, see newFriend()
    incomingRequests: new Map(), // id -> request, see requests.js; in arrival order
    requestsChecking: 0, // new requests whose key the crypto worker is checking: they count against the cap
    requestsReceived: 0, // numbers the requests, so a card can tell its request from a later one by the same ID
    requestsIgnored: 0, // requests dropped unread because the cap was reached (requests.js)
    withdrawnRequests: new Map(), // id -> when its pending request was withdrawn, for the card's short note
    outgoingRequests: new Map(), // id -> {id, state:'pending'|'declined', unsure: true when the connection dropped before the ACK}
    pins: new Map(), // id -> fingerprint pinned for that ID during this page's life (detects key changes)
    pinnedNames: new Map(), // skeleton of a key's name (trust.js) -> Set of fingerprints pinned with it during this page's life
    offeredKeys: new Map(), // id -> Set of fingerprints offered for that ID (requests, acceptances) in this page's life
    endedFriendships: new Map(), // id -> {reason:'left'|'removed', at}: the server said this ID ended a friendship
    friendshipsStarted: 0, // page-wide, so a friendship's number outlives a closed chat (see friend.friendship)
    signedSeen: new Map(), // "fingerprint\nsigned ts\ntext" -> number of the friendship it first arrived in
    expectations: new Map(), // id -> fingerprint an invite link promised; from when the link is read until the key pinned for that ID is that one
    verifiedFingerprints: new Set(), // fingerprints the user verified (the wiring stores them when opted in)
    // Our invite link's one-time secrets not used yet, newest last; at most INVITE_SECRETS_KEPT. The newest is
    // the one the link shows and was never handed out: each copy, share or QR code takes it and adds a new
    // one (friendship.js inviteLinkTaken). One is used up when a request proving it (inviteproof.js) is accepted.
    inviteSecrets: [],
    inviteKeys: new Map(), // id -> the secret of an invite link opened for that ID: our request to it proves it
    warnedForgedAccept: new Set(), // IDs whose chat already has the "unexpected acceptance" line
    nextLocalId: 1, // numbers every line of every conversation: views key their elements by it
    // Rendezvous handles (rendezvous.js, derived by the wiring from the contacts' secrets): `listen` maps a
    // handle we listen on to the friend key it belongs to, `send` a friend key to the friend's handle of `day`.
    // `supported`: null until the server answered a LISTEN on this connection, then whether it speaks §10.
    handles: { day: '', listen: new Map(), send: new Map(), supported: null },
    groups: new Map(), // gid -> group record (groups.js), at most MAX_GROUPS (rendezvous.js)
    // Groups the user took off the list ("Remove from list"): [{gid, ver (the version held then)}], newest last, at
    // most MAX_FORGOTTEN_GROUPS (groups.js); a version handed later joins again only when newer. Kept in the book.
    forgottenGroups: [],
    // The groups' handles of today (groupsync.js): `listen` maps a handle we listen on to its gid, `send` a gid to
    // the other members' handles (fingerprint -> handle).
    groupHandles: { listen: new Map(), send: new Map() },
  };
}

/** A friend as the chat pane and the friends list see it. */
export function newFriend(id) {
  return {
    id,
    status: 'friends', // 'friends' | 'ended'
    endedReason: '', // while ended: 'left' | 'removed' | 'removed_by_you' | 'session_lost'
    presence: 'online', // 'online' | 'away'
    publicArmored: '', // the pinned key (armored); the crypto worker reads it for every seal/open
    fingerprint: '',
    userId: '',
    nickname: '', // what the user calls them (names.js cleanName); '' when they gave no nickname
    trust: 'unverified', // 'unverified' | 'verified' | 'changed'
    // 'compared' | 'invite' (their key matched the link we opened) | 'invite_proof' (their request proved our
    // link's secret) | 'remembered'; while 'changed': 'invite' | 'own_key' | 'pinned_elsewhere' | ''
    trustSource: '',
    changedFrom: '', // the fingerprint before a key change, or the invite's, while trust is 'changed'
    sharedWith: '', // while trust is 'changed' with 'pinned_elsewhere': the live friend ID pinned to the same key
    // The fingerprint this friend's key may replace (the same person's earlier key): the one pinned for this ID
    // before a key change (kept once the user accepts the new key), or a key of the same name pinned earlier in
    // this page's life under another ID. A group holding that key offers its admin to update it (grouppane.js).
    keyBefore: '',
    friendship: 0, // this friendship's number, unique in the page; each incoming message records its own
    friendshipStartedAt: 0, // local time the current friendship started
    copiesShown: new Set(), // seqs of this friendship already shown once as a quiet duplicate
    sendSeq: 0, // last seq used for this friendship (§6)
    expectedSeq: 1, // next seq expected from them
    messages: [], // {localId, direction:'out'|'in'|'system', …}, oldest first
    outbox: [], // localIds of outgoing messages not yet acknowledged, oldest first
    sending: null, // {localId, phase:'sealing'|'sending'|'backoff'}: the outbox head being worked on
    // --- contacts (contacts.js): friends who stay across reloads, reached by rendezvous handles ---
    // mine: the secret we listen on (given to them); mineTag: its tag, which their control envelopes must carry
    // (rendezvous.js contactTag); theirs: the secret they listen on (we send there), theirsTs: when they signed
    // it; shared: ours reached them (they sent us something bound to it, or the book says so); sentAt: when
    // our rendezvous envelope last went out by ID.
    rendezvous: { mine: '', mineTag: '', theirs: '', theirsTs: 0, shared: false, sentAt: 0 },
    requestedByMe: false, // we sent the friend request: we offer our secret first (contacts.js)
    idLive: true, // the friendship by session ID exists on the server (false for contacts restored from the book)
    bookKey: '', // the contact book's name for this contact (contactbook.js bookKeyFor)
    received: { through: 0, extra: [], missing: [], floor: 0 }, // seqs accepted from them (receipts.js)
    lastReachable: 0, // when we last had proof they were connected (our clock)
    probeNonce: '', // the nonce of our last `here` probe: an answer must echo it
    answeredNonces: [], // nonces of their probes we answered, newest last (contacts.js ANSWERED_NONCES_KEPT)
    updatedAt: 0, // when anything the contact book keeps changed
  };
}

export function isLive(friend) {
  return Boolean(friend && friend.status === 'friends');
}

/** Secrets of our invite link kept unused at once (older ones are forgotten: their links stop proving anything). */
export const INVITE_SECRETS_KEPT = 8;

/** Whether closing or reloading the page would end a live friendship (the session, and its ID, go with it). */
export function hasLiveFriendships(state) {
  for (const friend of state.friends.values()) if (isLive(friend)) return true;
  return false;
}

/** The friend with this ID while the friendship is live, else undefined. */
export function liveFriend(state, id) {
  const friend = state.friends.get(id);
  return isLive(friend) ? friend : undefined;
}

/**
 * What the friends list and chat header show: 'gone' once the friendship ended, 'unknown' while we are offline
 * (we cannot know then), else the friend's presence.
 */
export function shownPresence(friend, connectionStatus) {
  if (!isLive(friend)) return 'gone';
  return connectionStatus === 'online' ? friend.presence : 'unknown';
}

// --- building a transition's result ----------------------------------------------------------------------
// A transition starts with begin(state) and replaces `next.state` step by step; `next` is its own
// accumulator, so handlers can be composed without threading two values through every call.

/** A transition's result under construction: the new state so far and the effects it asks for. */
export function begin(state) {
  return { state, effects: [] };
}

export function withEntry(map, key, value) {
  return new Map(map).set(key, value);
}

export function withoutEntry(map, key) {
  if (!map.has(key)) return map;
  const copy = new Map(map);
  copy.delete(key);
  return copy;
}

export function withMember(set, value) {
  return set.has(value) ? set : new Set(set).add(value);
}

export function withoutMember(set, value) {
  if (!set.has(value)) return set;
  const copy = new Set(set);
  copy.delete(value);
  return copy;
}

/** Adds `value` to the set `map` keeps under `key`. */
export function withMemberAt(map, key, value) {
  const set = map.get(key) || new Set();
  return set.has(value) ? map : withEntry(map, key, new Set(set).add(value));
}

/** Replaces the friend with the same ID. */
export function putFriend(next, friend) {
  next.state = { ...next.state, friends: withEntry(next.state.friends, friend.id, friend) };
  return friend;
}

/** Applies `change(friend) → friend` to friend `id`, if there is one; returns the new friend. */
export function updateFriend(next, id, change) {
  const friend = next.state.friends.get(id);
  return friend ? putFriend(next, change(friend)) : undefined;
}

/** A new localId for a line of a conversation. */
export function takeLocalId(next) {
  const localId = next.state.nextLocalId;
  next.state = { ...next.state, nextLocalId: localId + 1 };
  return localId;
}

/** Appends a line numbered by takeLocalId() to friend `id`'s conversation. */
export function pushLine(next, id, line) {
  updateFriend(next, id, (friend) => ({ ...friend, messages: [...friend.messages, line] }));
}

/** A system line (the view words it, text.js): `what` names the event, the rest are its details. */
export function appendSystemLine(next, id, what, details = {}) {
  pushLine(next, id, { localId: takeLocalId(next), direction: 'system', what, ...details });
}

/** The friend's line with this localId, or undefined. */
export function findLine(friend, localId) {
  for (let i = friend.messages.length - 1; i >= 0; i -= 1) {
    if (friend.messages[i].localId === localId) return friend.messages[i];
  }
  return undefined;
}

/** The friend with line `localId` replaced by `change(line)` (unchanged when there is no such line). */
export function withLine(friend, localId, change) {
  const index = friend.messages.findLastIndex((line) => line.localId === localId);
  if (index < 0) return friend;
  const messages = friend.messages.slice();
  messages[index] = change(messages[index]);
  return { ...friend, messages };
}
