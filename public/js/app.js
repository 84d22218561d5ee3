// Wiring: one state object, the transport's events applied to it (in arrival order per peer ID), user
// actions, and a render after every change (at most one per animation frame). The user's own key is handled
// here with keys.js; friends' keys and payloads only in the crypto worker (cryptoclient.js). Delivery is in
// messaging.js, incoming requests in requests.js, trust in trust.js.
import { createCrypto } from './cryptoclient.js';
import * as keys from './keys.js';
import { isCanonicalId, normalizeId } from './ids.js';
import { inviteLink, parseInvite } from './invite.js';
import { createMessaging, envelopeTextBytes, maxTextBytes } from './messaging.js';
import { enableNotifications, notify, updateTitle } from './notify.js';
import { createPeerQueue, droppedText } from './peerqueue.js';
import { createIncomingRequests, refusalText } from './requests.js';
import {
  createState, forgetRememberedData, loadRememberedKey, loadSettings, loadVerifiedFingerprints, newFriend,
  rememberKey, saveSettings, saveVerifiedFingerprints,
} from './state.js';
import { createTransport } from './transport.js';
import {
  ASSESSMENT_TEXT, acceptChangedKey, canSendTo, markUnverified, markVerified, pinFriendKey, recordOffer,
} from './trust.js';
import { createChatArea } from './view/chat.js';
import { confirmDialog, h } from './view/dom.js';
import { createKeyScreen } from './view/keyscreen.js';
import { createSidebar } from './view/sidebar.js';
import { createNotices, createTopbar } from './view/topbar.js';

/** Text for ERROR codes answering friend requests, accepts and removals. */
const REQUEST_ERROR_TEXT = {
  bad_id: 'That is not a valid ID.',
  self_request: 'That is your own ID.',
  unknown_peer: 'Nobody is online with that ID. IDs change each session: ask your friend for the current one.',
  already_friends: 'You are already friends.',
  bad_key: 'The server did not accept your public key.',
  rate_limited: 'Too many requests: wait a minute and try again.',
  no_pending_request: 'This request is no longer valid (they may have left).',
  too_many_requests: 'That person has too many pending requests right now; try again in a minute.',
  key_too_large: 'The server refused your public key as too large. Import a smaller export of it (gpg --export-options export-minimal).',
  not_friends: 'You are not friends any more.',
  offline: 'You are offline. Wait for the connection to come back.',
  connection_lost: 'The connection dropped. Try again when it is back.',
};

const state = createState();
const appRoot = document.getElementById('app');
let transport = null;
let messaging = null;
let views = null;
let pgp = null; // the crypto workers (cryptoclient.js)
let requests = null;
let renderQueued = false;
let noticeCounter = 0;
// Bumped when our session ends: work begun for the old session (a key check) must not land in the new one.
let sessionEpoch = 0;
const warnedForgedAccept = new Set(); // IDs whose chat already has the "unexpected acceptance" line
const peerQueue = createPeerQueue(reportInternalError, { onDropped: (peer, count) => {
  const friend = state.friends.get(peer); // in that chat; for any other ID, one notice naming it
  if (friend) addSystem(friend, droppedText(count), 'warn');
  else addNotice('warn', `${peer}: ${droppedText(count)}`, { kind: 'dropped' });
} });

function reportInternalError(error) {
  addNotice('error', `Internal error while handling a server message: ${error && error.message}`);
}

// A render draws every change since the last one: one per animation frame however many frames arrive. Hidden
// tabs get no animation frames, so a timer draws there (the tab title counts unread messages).
const RENDER_FALLBACK_MS = 100;

function changed() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(renderIfQueued);
  setTimeout(renderIfQueued, RENDER_FALLBACK_MS);
}

function renderIfQueued() {
  if (renderQueued) render(); // else the other of the two callbacks, or a direct render, already drew
}

function render() {
  renderQueued = false;
  if (!views) return;
  views.topbar.update(state);
  views.notices.update(state);
  views.sidebar.update(state);
  views.chat.update(state);
  updateTitle(state);
}

function addNotice(tone, text, extra = {}) {
  const notice = { id: ++noticeCounter, tone, text, ...extra };
  if (extra.kind) state.notices = state.notices.filter((n) => n.kind !== extra.kind);
  state.notices.push(notice);
  changed();
  return notice;
}

function addSystem(friend, text, tone = 'info') {
  friend.messages.push({ direction: 'system', text, tone });
  changed();
}

function persistVerified() {
  if (state.remember) saveVerifiedFingerprints(state.verifiedFingerprints);
}

// --- key screen ---------------------------------------------------------------------------------------

function showKeyScreen() {
  state.screen = 'keys';
  const remembered = loadRememberedKey();
  const screen = createKeyScreen({ actions: keyActions(remembered), remembered });
  appRoot.replaceChildren(screen.root);
  document.body.className = 'screen-keys';
}

function keyActions(remembered) {
  const finish = (identity, remember) => {
    state.remember = remember;
    if (remember) {
      if (!rememberKey(identity)) {
        addNotice('warn', 'Your key was not remembered: a key without a passphrase is never stored.');
        state.remember = false;
      }
      state.verifiedFingerprints = loadVerifiedFingerprints();
      state.notifications = loadSettings().notifications && typeof Notification === 'function' && Notification.permission === 'granted';
    }
    return identity;
  };
  return {
    async generate({ name, passphrase, remember }) {
      const pair = await keys.generateKeyPair({ name, passphrase });
      const identity = await keys.unlockKeyPair({ privateSource: pair.privateArmored, publicSource: pair.publicArmored, passphrase });
      return finish(identity, remember);
    },
    async importKeys({ privateSource, publicSource, passphrase, remember }) {
      return finish(await keys.unlockKeyPair({ privateSource, publicSource, passphrase }), remember);
    },
    async unlockSaved({ passphrase }) {
      const identity = await keys.unlockKeyPair({
        privateSource: remembered.privateArmored, publicSource: remembered.publicArmored, passphrase,
      });
      return finish(identity, true);
    },
    forgetSaved() {
      forgetRememberedData();
      state.remember = false;
    },
    enter(identity) {
      state.identity = identity;
      showChatScreen();
    },
  };
}

// --- chat screen --------------------------------------------------------------------------------------

function showChatScreen() {
  state.screen = 'chat';
  const actions = chatActions();
  views = {
    topbar: createTopbar({ actions }),
    notices: createNotices({ actions }),
    sidebar: createSidebar({ actions }),
    chat: createChatArea({ actions }),
  };
  const backdrop = h('div', { className: 'drawer-backdrop', 'aria-hidden': 'true', onClick: () => actions.toggleDrawer(false) });
  appRoot.replaceChildren(h('div', { className: 'chat-screen' },
    views.topbar.root, views.notices.root,
    h('div', { className: 'chat-layout' }, views.sidebar.root, backdrop, views.chat.root)));
  document.body.className = 'screen-chat';
  if (state.invite) views.sidebar.prefillAdd(state.invite.id);

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  pgp = createCrypto();
  pgp.start(state.identity.privateBinary);
  transport = createTransport({ url: `${scheme}//${location.host}/ws`, onEvent: (event) => enqueueEvent(event) });
  messaging = createMessaging({ state, transport, pgp, changed, onIncoming });
  requests = createIncomingRequests({
    state, pgp, changed, onNew: (request) => notify(state, 'SecChat', `Friend request from ${request.id}`),
  });
  transport.start();
  render();
}

/**
 * Frames about one peer ID are applied in arrival order (decrypting is async, and `seq` checks depend on
 * order); frames about different IDs, and everything else, do not wait for each other (peerqueue.js).
 */
function enqueueEvent(event) {
  const peer = event.kind === 'frame' ? peerOf(event.frame) : null;
  const epoch = sessionEpoch;
  if (peer) {
    peerQueue.run(peer, () => onFrame(event.frame, () => epoch === sessionEpoch));
    return;
  }
  try {
    handleEvent(event);
  } catch (error) {
    reportInternalError(error);
  }
}

/** The peer ID a server frame is about, or null for frames about none (ERROR, UNDELIVERED, unknown ones). */
function peerOf(frame) {
  const id = ['DISCONNECT', 'PRESENCE'].includes(frame.type) ? frame.id : frame.from;
  return isCanonicalId(id) && typeof frame.type === 'string' ? id : null;
}

function handleEvent(event) {
  if (event.kind === 'status') {
    state.connection = { status: event.status, retryAt: event.retryInMs ? Date.now() + event.retryInMs : 0 };
    if (event.status === 'taken_over') {
      addNotice('warn', 'This session was taken over by another tab or device, so this tab is disconnected.', {
        kind: 'session', action: { label: 'Start a new session here', run: startNewSession },
      });
      endAllFriendships('session_lost');
    }
    changed();
    return;
  }
  if (event.kind === 'session') {
    onSession(event);
    return;
  }
  onFrame(event.frame, () => true).catch(reportInternalError);
}

function onSession({ id, version, resumed, resumeAttempted, friends, limits }) {
  const previousId = state.session.id;
  state.session.id = id;
  state.session.version = version;
  if (limits && Number.isSafeInteger(limits.max_message_bytes)) state.session.limits.max_message_bytes = limits.max_message_bytes;
  if (resumeAttempted && !resumed) {
    sessionEpoch += 1;
    endAllFriendships('session_lost');
    clearRequests();
    addNotice('warn', `Your session could not be resumed (the connection was down too long), so your ID changed from ${previousId} to ${id}. Friends must add you again: share your new ID or invite link.`, { kind: 'session' });
  } else if (resumed) {
    const present = new Map(friends.map((f) => [f.id, f.online === true]));
    for (const friend of state.friends.values()) {
      if (friend.presence === 'gone') continue;
      if (!present.has(friend.id)) endFriendship(friend, 'left');
      else friend.presence = present.get(friend.id) ? 'online' : 'away';
    }
    state.notices = state.notices.filter((n) => n.kind !== 'session');
  }
  // A session exists, so whatever "server full" said is over.
  state.notices = state.notices.filter((n) => n.kind !== 'server');
  state.session.everConnected = true;
  messaging.pumpAll();
  changed();
}

/** `isCurrent()` says whether our session is still the one the frame arrived in (see sessionEpoch). */
async function onFrame(frame, isCurrent) {
  const from = isCanonicalId(frame.from) ? frame.from : null;
  switch (frame.type) {
    case 'FRIEND_REQUEST': return from ? requests.receive(from, frame.public_key, isCurrent) : undefined;
    case 'FRIEND_ACCEPT': return onFriendAccept(from, frame.public_key, isCurrent);
    // Version 2 servers: a pending request from this ID went away unanswered (its sender's session ended).
    case 'FRIEND_CANCEL':
      if (from) requests.withdraw(from);
      return undefined;
    case 'FRIEND_DECLINE': {
      const request = state.outgoingRequests.get(from);
      if (request) request.state = 'declined';
      changed();
      return undefined;
    }
    case 'FRIEND_REMOVE': {
      const friend = state.friends.get(from);
      if (friend && friend.presence !== 'gone') endFriendship(friend, 'removed');
      return undefined;
    }
    case 'DISCONNECT': {
      const friend = state.friends.get(frame.id);
      if (friend && friend.presence !== 'gone') endFriendship(friend, 'left');
      requests.withdraw(frame.id);
      state.outgoingRequests.delete(frame.id);
      changed();
      return undefined;
    }
    case 'PRESENCE': {
      const friend = state.friends.get(frame.id);
      if (!friend || friend.presence === 'gone') return undefined;
      friend.presence = frame.online === true ? 'online' : 'away';
      if (frame.online === true) {
        messaging.queuedDelivered(friend);
        messaging.pump(friend);
      }
      changed();
      return undefined;
    }
    case 'MESSAGE': {
      const friend = state.friends.get(from);
      // The server only forwards between friends; anything else is not ours to show.
      if (!friend || friend.presence === 'gone' || !friend.publicArmored) return undefined;
      return messaging.receive(friend, frame);
    }
    case 'UNDELIVERED':
      messaging.markUndelivered(frame.ref);
      return undefined;
    case 'ERROR':
      if (frame.code === 'server_full') addNotice('warn', 'The server is full. Retrying…', { kind: 'server' });
      else addNotice('error', `Server error: ${REQUEST_ERROR_TEXT[frame.code] || frame.code}`);
      return undefined;
    default:
      return undefined;
  }
}

async function onFriendAccept(from, publicArmored, isCurrent) {
  if (!from) return;
  // An honest server forwards FRIEND_ACCEPT only for our own pending request (PROTOCOL FRIEND_ACCEPT). Anything
  // else would start a new friendship and reset `seq` both ways, letting the server replay a recorded
  // conversation as verified (SECURITY.md): ignore it, and say so.
  const live = state.friends.get(from);
  const isLive = Boolean(live && live.presence !== 'gone');
  if (state.outgoingRequests.get(from)?.state !== 'pending' || isLive) {
    const text = `Ignored an unexpected friend acceptance from ${from}: ${isLive ? 'they are already your friend' : 'you have no pending request to them'}. The server may be misbehaving.`;
    addNotice('warn', text, { kind: `unexpected-accept-${from}` });
    // Once per ID: a server repeating the forgery must not flood the conversation.
    if (isLive && !warnedForgedAccept.has(from)) addSystem(live, text, 'warn');
    warnedForgedAccept.add(from);
    return;
  }
  state.outgoingRequests.delete(from);
  state.incomingRequests.delete(from);
  let keyInfo;
  try {
    keyInfo = await pgp.readFriendKey(publicArmored);
  } catch (error) {
    if (!isCurrent()) return;
    addNotice('error', `${from} accepted your request, but SecChat refused their key. ${refusalText(error)} The friendship was ended.`);
    transport.request({ type: 'FRIEND_REMOVE', to: from }).catch(() => {});
    return;
  }
  if (!isCurrent()) return; // our session ended while the key was checked: this acceptance was for the old one
  recordOffer(state, from, keyInfo.fingerprint);
  const friend = startFriendship(from, { ...keyInfo, publicArmored });
  addSystem(friend, `${from} accepted your friend request.`);
  if (!state.activeFriendId) state.activeFriendId = from;
  notify(state, 'SecChat', `${from} accepted your friend request`);
  changed();
}

function startFriendship(id, keyInfo) {
  let friend = state.friends.get(id);
  if (!friend) {
    friend = newFriend(id);
    state.friends.set(id, friend);
  } else {
    // A new friendship: §6 seq restarts at 1 both ways.
    Object.assign(friend, { sendSeq: 0, expectedSeq: 1, outbox: [], presence: 'online', goneReason: '' });
  }
  friend.presence = 'online';
  // Replays into this friendship are told apart by these (messaging.js check).
  // Numbered page-wide, not per friend object: closing a chat deletes the object, and a per-friend count
  // would start again and make the next friendship look like the one whose messages are being replayed.
  state.friendshipsStarted += 1;
  friend.friendship = state.friendshipsStarted;
  state.endedFriendships.delete(id);
  friend.friendshipStartedAt = Date.now();
  friend.copiesShown = new Set();
  const assessment = pinFriendKey(state, friend, keyInfo);
  persistVerified();
  const fingerprintNote = {
    invite_match: 'Key matches your invite link: verified.',
    name_reused: ASSESSMENT_TEXT.name_reused,
    pinned_before: ASSESSMENT_TEXT.pinned_before,
  }[assessment] || 'Key pinned. Compare fingerprints to verify it.';
  const warn = friend.trust === 'changed' || assessment === 'name_reused' || assessment === 'pinned_before';
  addSystem(friend, `Friendship started. ${friend.trust === 'changed' ? 'WARNING: key differs from what you expected.' : fingerprintNote}`, warn ? 'warn' : 'info');
  return friend;
}

function endFriendship(friend, reason) {
  friend.presence = 'gone';
  friend.goneReason = reason;
  // Only the server says so: a faked end followed by a request "from" the same ID restarts `seq`.
  if (reason === 'left' || reason === 'removed') state.endedFriendships.set(friend.id, { reason, at: Date.now() });
  messaging.abandonOutbox(friend, reason === 'session_lost' ? 'session_lost' : 'friend_gone');
  const text = {
    left: `${friend.id} left SecChat.`,
    removed: `${friend.id} removed you as a friend.`,
    removed_by_you: `You removed ${friend.id}.`,
    session_lost: 'Your session ended; this friendship is over.',
  }[reason];
  addSystem(friend, text, 'warn');
}

function endAllFriendships(reason) {
  for (const friend of state.friends.values()) {
    if (friend.presence !== 'gone') endFriendship(friend, reason);
  }
}

function onIncoming(friend, message) {
  const looking = friend.id === state.activeFriendId && !document.hidden;
  if (!looking) friend.unread += 1;
  if (document.hidden) notify(state, 'SecChat', `New message from ${friend.id}`);
  if (message.problems.length > 0 && !looking) {
    addNotice('warn', `A message from ${friend.id} failed a security check.`, { kind: `flag-${friend.id}` });
  }
}

/** Requests belong to a session: a new one starts without any. */
function clearRequests() {
  state.incomingRequests.clear();
  state.outgoingRequests.clear();
  state.requestsIgnored = 0;
  state.withdrawnRequests.clear();
}

function startNewSession() {
  sessionEpoch += 1;
  state.notices = state.notices.filter((n) => n.kind !== 'session');
  clearRequests();
  state.session.id = null;
  transport.restart();
  changed();
}

function requestError(error) {
  return new Error(REQUEST_ERROR_TEXT[error.code] || error.message || String(error.code));
}

function chatActions() {
  const actions = {
    inviteLink: () => inviteLink(location, state.session.id, state.identity.fingerprint),
    redraw: changed,

    async addFriend(text) {
      const id = normalizeId(text);
      if (!id) throw new Error('An ID is 6 letters and digits, like K7Q2ZD.');
      if (id === state.session.id) throw new Error('That is your own ID.');
      const friend = state.friends.get(id);
      if (friend && friend.presence !== 'gone') throw new Error(`${id} is already your friend.`);
      let unsure = false;
      try {
        await transport.request({ type: 'FRIEND_REQUEST', to: id, public_key: state.identity.publicArmored });
      } catch (error) {
        // Dropped before the ACK: the request may have reached them, and their accept must then count, or
        // they would think us friends while we drop their messages.
        if (error.code !== 'connection_lost') throw requestError(error);
        unsure = true;
      }
      state.outgoingRequests.set(id, { id, state: 'pending', unsure });
      changed();
    },

    async useInvite() {
      const invite = state.invite;
      if (!invite) return;
      try {
        await actions.addFriend(invite.id);
      } catch (error) {
        addNotice('error', `Could not send the request to ${invite.id}: ${error.message}`, { kind: 'invite' });
        return;
      }
      views.sidebar.prefillAdd('');
      actions.dismissInvite();
    },

    dismissInvite() {
      state.invite = null;
      history.replaceState(null, '', `${location.pathname}${location.search}`);
      changed();
    },

    async acceptRequest(id) {
      const request = state.incomingRequests.get(id);
      if (!request || !request.fingerprint) return;
      try {
        await transport.request({ type: 'FRIEND_ACCEPT', to: id, public_key: state.identity.publicArmored });
      } catch (error) {
        if (error.code === 'no_pending_request') {
          state.incomingRequests.delete(id);
          changed();
        }
        throw requestError(error);
      }
      state.incomingRequests.delete(id);
      state.outgoingRequests.delete(id);
      startFriendship(id, request);
      actions.selectFriend(id);
    },

    async declineRequest(id) {
      try {
        await transport.request({ type: 'FRIEND_DECLINE', to: id });
      } catch (error) {
        if (error.code !== 'no_pending_request') throw requestError(error);
      }
      state.incomingRequests.delete(id);
      changed();
    },

    dismissSent(id) {
      state.outgoingRequests.delete(id);
      changed();
    },

    async removeFriend(id) {
      const friend = state.friends.get(id);
      if (!friend || friend.presence === 'gone') return;
      const ok = await confirmDialog({
        title: `Remove ${id}?`,
        body: 'The friendship ends for both of you. To chat again, one of you has to send a new request.',
        confirmText: 'Remove friend',
        danger: true,
      });
      if (!ok) return;
      try {
        await transport.request({ type: 'FRIEND_REMOVE', to: id });
      } catch (error) {
        if (error.code !== 'not_friends') {
          addNotice('error', `Could not remove ${id}: ${requestError(error).message}`);
          return;
        }
      }
      endFriendship(friend, 'removed_by_you');
    },

    dismissFriend(id) {
      state.friends.delete(id);
      if (state.activeFriendId === id) state.activeFriendId = null;
      changed();
    },

    selectFriend(id) {
      const friend = state.friends.get(id);
      if (!friend) return;
      state.activeFriendId = id;
      friend.unread = 0;
      state.drawerOpen = false;
      state.notices = state.notices.filter((n) => n.kind !== `flag-${id}`);
      render();
      views.chat.focusComposer(id);
    },

    sendMessage(id, text) {
      const friend = state.friends.get(id);
      if (!friend || !canSendTo(friend)) return false;
      if (envelopeTextBytes(text) > maxTextBytes(state.session.limits.max_message_bytes)) return false;
      messaging.sendText(friend, text);
      return true;
    },

    retryMessage(id, message) {
      const friend = state.friends.get(id);
      if (friend && canSendTo(friend)) messaging.retry(friend, message);
    },

    revealMessage(id, message) {
      message.hidden = false;
      changed();
    },

    markVerified(id) {
      const friend = state.friends.get(id);
      if (!friend) return;
      markVerified(state, friend);
      persistVerified();
      addSystem(friend, 'You marked this key as verified.');
    },

    markUnverified(id) {
      const friend = state.friends.get(id);
      if (!friend) return;
      markUnverified(state, friend);
      persistVerified();
      addSystem(friend, 'You marked this key as unverified.');
    },

    acceptChangedKey(id) {
      const friend = state.friends.get(id);
      if (!friend) return;
      acceptChangedKey(friend);
      addSystem(friend, 'You chose to continue with the new key (unverified).', 'warn');
      messaging.pump(friend);
    },

    async setNotifications(on) {
      state.notifications = on ? await enableNotifications() : false;
      if (on && !state.notifications) addNotice('warn', 'Notifications are blocked by the browser for this site.', { kind: 'notifications' });
      if (state.remember) saveSettings({ notifications: state.notifications });
      changed();
    },

    async leave() {
      const ok = await confirmDialog({
        title: 'Leave SecChat?',
        body: 'Your ID ends now and your friends are told you left. Your key stays usable; a new session gets a new ID.',
        confirmText: 'Leave',
        danger: true,
      });
      if (!ok) return;
      await transport.leave();
      endAllFriendships('session_lost');
      addNotice('info', 'You left. Your ID is gone and your friends were told.', {
        kind: 'session', action: { label: 'Start a new session', run: startNewSession },
      });
    },

    dismissNotice(noticeId) {
      state.notices = state.notices.filter((n) => n.id !== noticeId);
      changed();
    },

    toggleDrawer(open) {
      setDrawer(typeof open === 'boolean' ? open : !state.drawerOpen);
    },
  };
  return actions;
}

// --- page lifecycle -----------------------------------------------------------------------------------

function readInviteFromUrl() {
  const invite = parseInvite(location.hash);
  if (invite) {
    state.invite = invite;
    // From now on, whatever path befriends this ID (the card, the add-friend form it prefills, a request
    // from it, an acceptance after a reconnect) is checked against the link's fingerprint (trust.js).
    state.expectations.set(invite.id, invite.fingerprint);
    if (views) views.sidebar.prefillAdd(invite.id);
    changed();
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) return;
  if (transport) transport.check();
  const friend = state.friends.get(state.activeFriendId);
  if (friend && friend.unread) {
    friend.unread = 0;
    changed();
  }
});
// iOS restores pages from the back-forward cache with `pageshow`, not `visibilitychange`.
window.addEventListener('pageshow', () => transport && transport.check());
window.addEventListener('online', () => transport && transport.check());
window.addEventListener('offline', () => transport && transport.networkLost());
window.addEventListener('hashchange', readInviteFromUrl);
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && state.drawerOpen) setDrawer(false);
});

/** Opens or closes the phone drawer, moving focus into it and back to its toggle for keyboard users. */
function setDrawer(open) {
  if (state.drawerOpen === open) return;
  state.drawerOpen = open;
  render();
  const target = document.querySelector(open ? '.drawer-close' : '.drawer-toggle');
  if (target && target.offsetParent !== null) target.focus();
}

readInviteFromUrl();
showKeyScreen();
