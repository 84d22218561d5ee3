// The single state object the app renders from, and what of it may rest in localStorage.
// Stored only on the user's "remember on this device": the passphrase-protected armored private key,
// the public key, and fingerprints the user verified (all public data). Never a decrypted key or text.

const KEY_STORE = 'secchat.key.v1';
const VERIFIED_STORE = 'secchat.verified.v1';
const SETTINGS_STORE = 'secchat.settings.v1';

export function createState() {
  return {
    screen: 'keys', // 'keys' | 'chat'
    identity: null, // {publicArmored, protectedArmored, fingerprint, userId, privateBinary (unlocked, for the crypto worker)}
    remember: false,
    connection: { status: 'idle', retryAt: 0 }, // retryAt: when the next reconnect attempt happens
    // version: what the server's CONNECT reply said (PROTOCOL §9); 2 means vanished requests are withdrawn (FRIEND_CANCEL)
    session: { id: null, version: 1, limits: { max_message_bytes: 65536 }, everConnected: false },
    friends: new Map(), // id -> friend, see newFriend()
    pins: new Map(), // id -> fingerprint pinned for that ID during this page's life (detects key changes)
    pinnedNames: new Map(), // key user ID -> Set of fingerprints pinned with it during this page's life
    offeredKeys: new Map(), // id -> Set of fingerprints offered for that ID (requests, acceptances) in this page's life
    endedFriendships: new Map(), // id -> {reason:'left'|'removed', at}: the server said this ID ended a friendship
    friendshipsStarted: 0, // page-wide, so a friendship's number outlives a closed chat (see friend.friendship)
    signedSeen: new Map(), // "fingerprint\nsigned ts\ntext" -> number of the friendship it first arrived in (replays across friendships)
    expectations: new Map(), // id -> fingerprint an invite link promised; set when the link is read, until the key pinned for that ID is that one
    verifiedFingerprints: new Set(), // fingerprints the user verified (remembered when opted in)
    incomingRequests: new Map(), // id -> {id, publicArmored ('' once refused), fingerprint|null (null: unusable), userId, error|null, otherKeys: up to 3 fingerprints of repeats with other keys ('unreadable' for a refused one), moreOtherKeys: further such repeats counted}
    requestsIgnored: 0, // requests dropped unread because MAX_KEPT_REQUESTS were already pending (requests.js)
    withdrawnRequests: new Map(), // id -> when its pending request was withdrawn (FRIEND_CANCEL), for the card's short note
    outgoingRequests: new Map(), // id -> {id, state:'pending'|'declined', unsure: true when the connection dropped before the ACK}
    invite: null, // {id, fingerprint} from the URL fragment, until used or dismissed
    activeFriendId: null,
    notices: [], // {id, tone:'info'|'warn'|'error', text}
    notifications: false,
    drawerOpen: false,
  };
}

/** A friend as the chat pane and friends list see it. */
export function newFriend(id) {
  return {
    id,
    publicArmored: '', // the pinned key (armored); the crypto worker reads it for every seal/open
    fingerprint: '',
    userId: '',
    trust: 'unverified', // 'unverified' | 'verified' | 'changed'
    trustSource: '', // 'compared' | 'invite' | 'remembered'; while 'changed': 'invite' | 'own_key' | 'pinned_elsewhere' | ''
    changedFrom: '', // the fingerprint before a key change, or the invite's, while trust is 'changed'
    sharedWith: '', // while trust is 'changed' with 'pinned_elsewhere': the live friend ID pinned to the same key
    presence: 'online', // 'online' | 'away' | 'gone'
    goneReason: '', // 'left' | 'removed' | 'removed_by_you' | 'session_lost'
    friendship: 0, // this friendship's number, unique in the page; each incoming message records its own
    friendshipStartedAt: 0, // local time the current friendship started (Date.now())
    copiesShown: new Set(), // seqs of this friendship already shown once as a quiet duplicate
    sendSeq: 0, // last seq used for this friendship (§6)
    expectedSeq: 1, // next seq expected from them
    messages: [],
    outbox: [], // outgoing messages not yet acknowledged, oldest first
    pumping: false,
    unread: 0,
    draft: '',
  };
}

/** While we are offline we cannot know whether a friend is online: say so instead of showing stale data. */
export function shownPresence(state, friend) {
  if (friend.presence === 'gone' || state.connection.status === 'online') return friend.presence;
  return 'unknown';
}

function readJson(name) {
  try {
    const text = localStorage.getItem(name);
    return text ? JSON.parse(text) : null;
  } catch {
    return null; // storage disabled or corrupted: behave as if nothing was remembered
  }
}

function writeJson(name, value) {
  try {
    localStorage.setItem(name, JSON.stringify(value));
  } catch {
    // storage full or disabled: remembering is best effort
  }
}

export function loadRememberedKey() {
  const value = readJson(KEY_STORE);
  if (!value || typeof value.privateArmored !== 'string' || typeof value.fingerprint !== 'string') return null;
  return value;
}

/** Stores the protected private key; refuses anything that is not passphrase-protected armor. */
export function rememberKey(identity) {
  if (!identity.protectedArmored || !identity.protectedArmored.includes('BEGIN PGP PRIVATE KEY BLOCK')) return false;
  writeJson(KEY_STORE, {
    privateArmored: identity.protectedArmored,
    publicArmored: identity.publicArmored,
    fingerprint: identity.fingerprint,
    userId: identity.userId,
  });
  return true;
}

export function forgetRememberedData() {
  try {
    localStorage.removeItem(KEY_STORE);
    localStorage.removeItem(VERIFIED_STORE);
    localStorage.removeItem(SETTINGS_STORE);
  } catch {
    // nothing to forget
  }
}

export function loadVerifiedFingerprints() {
  const value = readJson(VERIFIED_STORE);
  return new Set(Array.isArray(value) ? value.filter((fp) => /^[0-9A-F]{40}$/.test(fp)) : []);
}

export function saveVerifiedFingerprints(fingerprints) {
  writeJson(VERIFIED_STORE, [...fingerprints]);
}

export function loadSettings() {
  const value = readJson(SETTINGS_STORE);
  return { notifications: Boolean(value && value.notifications) };
}

export function saveSettings(settings) {
  writeJson(SETTINGS_STORE, { notifications: Boolean(settings.notifications) });
}
