// Wiring: holds the domain state (model.js) and the page's own state (`ui`), feeds every event through
// transition.js, carries out the effects (effects.js), and renders after changes (at most once per animation
// frame). Server frames about one peer ID are applied in arrival order (peerqueue.js). The user's own key is
// handled here with keys.js; friends' keys and payloads only in the crypto workers (cryptoclient.js).
import { createChatActions } from './actions.js';
import { createCrypto } from './cryptoclient.js';
import { unloadLoses } from './contactbook.js';
import { createContactStore } from './contactstore.js';
import { createContactSync } from './contactsync.js';
import { createEffects } from './effects.js';
import { createGroupSync } from './groupsync.js';
import { peerOf } from './friendship.js';
import { parseInvite } from './invite.js';
import * as keys from './keys.js';
import { createModel } from './model.js';
import { notify, updateTitle } from './notify.js';
import { createPeerQueue } from './peerqueue.js';
import {
  forgetRememberedData, loadRememberedKey, loadSettings, loadVerifiedFingerprints, rememberKey, saveVerifiedFingerprints,
} from './storage.js';
import { noticeText, notificationText } from './text.js';
import { transition } from './transition.js';
import { createTransport } from './transport.js';
import { h } from './view/dom.js';
import { createChatArea } from './view/chat.js';
import { createKeyScreen } from './view/keyscreen.js';
import { createSidebar } from './view/sidebar.js';
import { createNotices, createTopbar } from './view/topbar.js';

/** What only the page knows: not part of any friendship, and not in the domain's tests. */
const ui = {
  identity: null, // {publicArmored, protectedArmored, fingerprint, userId, privateBinary (unlocked, for the crypto worker)}
  remember: false,
  connection: { status: 'idle', retryAt: 0 }, // retryAt: when the next reconnect attempt happens
  invite: null, // {id, fingerprint, secret} from the URL fragment, until used or dismissed
  activeFriendId: null,
  activeGroupId: null, // the open group chat (then activeFriendId is null, and the other way round)
  unread: new Map(), // friend id -> messages that arrived while their chat was not in view
  notices: [], // {id, tone:'info'|'warn'|'error', text, kind?, action?}
  notifications: false,
  drawerOpen: false,
  bookPending: false, // a save of the contact book is due or running (contactstore.js)
};

const appRoot = document.getElementById('app');
let model = createModel();
let renderQueued = false;
let noticeCounter = 0;
// A peer ID with too many frames waiting gets the rest dropped; the domain says so in its chat or a notice.
const peerQueue = createPeerQueue(reportInternalError, {
  onDropped: (from, count) => dispatch({ type: 'framesDropped', from, count }).catch(reportInternalError),
});

/** What actions.js works with. `transport`, `views` and `effects` exist once the chat screen is shown. */
const app = {
  ui,
  get model() { return model; },
  transport: null,
  views: null,
  effects: null,
  contactSync: null, // contactsync.js: secrets, handles, LISTEN, FETCH, probes
  contactStore: null, // contactstore.js: the encrypted contact book (remembered, exported, imported)
  groupSync: null, // groupsync.js: groups (create, write, receive, admin)
  dispatch,
  changed,
  render,
  addNotice,
  setDrawer,
  startNewSession,
};

/**
 * Applies one event (stamped with the page's clock) and starts its effects; resolves when the ordered ones
 * (a key check, opening a message) and what follows from them are done.
 */
function dispatch(event) {
  const before = model;
  const next = transition(model, { now: Date.now(), ...event });
  model = next.state;
  if (ui.remember && model.verifiedFingerprints !== before.verifiedFingerprints) saveVerifiedFingerprints(model.verifiedFingerprints);
  if (model.friends !== before.friends || model.session !== before.session || model.groupHandles !== before.groupHandles) {
    app.contactSync?.changed();
  }
  if (model.friends !== before.friends || model.session !== before.session || model.groups !== before.groups) {
    app.contactStore?.changed();
  }
  changed();
  return app.effects ? app.effects.run(next.effects) : Promise.resolve();
}

function reportInternalError(error) {
  addNotice(noticeText('internal_error', { message: error && error.message }));
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
  if (!app.views) return;
  ui.bookPending = Boolean(app.contactStore?.pending);
  const state = { ...model, ...ui }; // the views read both; neither has a field of the other's name
  app.views.topbar.update(state);
  app.views.notices.update(state);
  app.views.sidebar.update(state);
  app.views.chat.update(state);
  updateTitle(state);
}

/** Shows a notice (text.js noticeText); one with a `kind` replaces the earlier one of that kind. */
function addNotice({ tone, text, kind }, action) {
  if (kind) ui.notices = ui.notices.filter((n) => n.kind !== kind);
  ui.notices.push({ id: ++noticeCounter, tone, text, kind, action });
  changed();
}

// --- key screen ---------------------------------------------------------------------------------------

function showKeyScreen() {
  const remembered = loadRememberedKey();
  const screen = createKeyScreen({ actions: keyActions(remembered), remembered, invite: ui.invite });
  appRoot.replaceChildren(screen.root);
  document.body.className = 'screen-keys';
}

function keyActions(remembered) {
  let verifiedFingerprints; // read from storage when the user opts in to remembering
  const finish = (identity, remember) => {
    ui.remember = remember;
    if (remember) {
      if (!rememberKey(identity)) {
        addNotice(noticeText('not_remembered'));
        ui.remember = false;
      }
      verifiedFingerprints = loadVerifiedFingerprints();
      ui.notifications = loadSettings().notifications && typeof Notification === 'function' && Notification.permission === 'granted';
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
      ui.remember = false;
    },
    enter(identity) {
      ui.identity = identity;
      showChatScreen();
      // After the chat screen made the effects runner: identityReady asks for our invite link's first secret.
      dispatch({ type: 'identityReady', fingerprint: identity.fingerprint, verifiedFingerprints }).catch(reportInternalError);
    },
  };
}

// --- chat screen --------------------------------------------------------------------------------------

function showChatScreen() {
  const actions = createChatActions(app);
  const views = {
    topbar: createTopbar({ actions }),
    notices: createNotices({ actions }),
    sidebar: createSidebar({ actions }),
    chat: createChatArea({ actions }),
  };
  app.views = views;
  const backdrop = h('div', { className: 'drawer-backdrop', 'aria-hidden': 'true', onClick: () => actions.toggleDrawer(false) });
  appRoot.replaceChildren(h('div', { className: 'chat-screen' },
    views.topbar.root, views.notices.root,
    h('div', { className: 'chat-layout' }, views.sidebar.root, backdrop, views.chat.root)));
  document.body.className = 'screen-chat';
  if (ui.invite) views.sidebar.prefillAdd(ui.invite.id);

  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const pgp = createCrypto();
  pgp.start(ui.identity.privateBinary);
  app.transport = createTransport({ url: `${scheme}//${location.host}/ws`, onEvent: onTransportEvent });
  const persist = () => app.contactStore?.persist() || Promise.resolve();
  app.groupSync = createGroupSync({
    transport: app.transport, pgp, getModel: () => model, dispatch, identity: () => ui.identity, lane: peerQueue.run, persist,
    onError: reportInternalError, notice: (code, details) => addNotice(noticeText(code, details)),
    incoming: (gid) => {
      const looking = gid === ui.activeGroupId && !document.hidden;
      if (!looking) ui.unread.set(`group:${gid}`, (ui.unread.get(`group:${gid}`) || 0) + 1);
      if (document.hidden) notify(ui, 'SecChat', 'New message in a group');
    },
  });
  app.effects = createEffects({
    transport: app.transport, pgp, dispatch, page: pageEffects, persist, groups: app.groupSync,
  });
  app.contactSync = createContactSync({
    transport: app.transport, getModel: () => model, dispatch, queued: () => peerQueue.queued, onError: reportInternalError,
    onFetched: () => app.groupSync.onFetched(),
  });
  app.contactStore = createContactStore({
    pgp, getModel: () => model, dispatch, identity: () => ui.identity, remember: () => ui.remember,
    notice: (code, details) => addNotice(noticeText(code, details)),
    onSettled: changed,
    groupsLoaded: (groups, forgotten) => app.groupSync.loaded(groups, forgotten),
  });
  // The remembered contact book first (its contacts' handles are LISTENed once the session exists).
  app.contactStore.load().catch(reportInternalError);
  app.transport.start();
  render();
  // An opened invite is the next step: take the keyboard (and a screen reader) there.
  if (ui.invite) views.chat.focusInvite();
}

/** The page's side of the domain's effects (effects.js). */
const pageEffects = {
  notice: (notice) => addNotice(notice),
  notify: (body) => notify(ui, 'SecChat', body),
  error: reportInternalError,
  /** A message from `from` was added to its chat: count it unless the user is looking at that chat. */
  incoming(from, flagged) {
    const looking = from === ui.activeFriendId && !document.hidden;
    if (!looking) ui.unread.set(from, (ui.unread.get(from) || 0) + 1);
    if (document.hidden) notify(ui, 'SecChat', notificationText('message', from));
    if (flagged && !looking) addNotice(noticeText('flagged', { from }));
  },
  /** A friendship started that the user did not start from a card: open it unless a chat is open already. */
  show(id) {
    if (!ui.activeFriendId) ui.activeFriendId = id;
  },
  /** A contact's entry moved to a new ID (friendship.js): its open chat and unread count go with it. */
  moved(from, to) {
    if (ui.activeFriendId === from) ui.activeFriendId = to;
    const unread = ui.unread.get(from);
    ui.unread.delete(from);
    if (unread) ui.unread.set(to, (ui.unread.get(to) || 0) + unread);
  },
};

/**
 * The transport's events. Frames about one peer ID wait for that peer's earlier frames (decrypting and key
 * checks are async, and `seq` checks and "a request before its withdrawal" depend on order); frames about
 * different IDs, and everything else, do not wait for each other.
 */
function onTransportEvent(event) {
  try {
    if (event.kind === 'status') onStatus(event);
    else if (event.kind === 'session') onSession(event);
    else onFrame(event.frame);
  } catch (error) {
    reportInternalError(error);
  }
}

function onFrame(frame) {
  if (frame.type === 'ERROR') {
    // An ERROR that answers none of our requests (those go to whoever sent the request).
    addNotice(noticeText(frame.code === 'server_full' ? 'server_full' : 'server_error', { code: frame.code }));
    return;
  }
  // The server gave one of our handles to an address block holding fewer (PROTOCOL §10): mail to it waits in
  // the mailbox; the sync LISTENs again later and fetches it then.
  if (frame.type === 'HANDLE_DROPPED' && typeof frame.handle === 'string') {
    if (app.contactSync?.dropped(frame.handle)) addNotice(noticeText('handle_dropped'));
    return;
  }
  // A copy of one of our group messages the server could not deliver (PROTOCOL §11) is its group's.
  if (frame.type === 'UNDELIVERED' && app.groupSync?.undelivered(frame)) return;
  // A MESSAGE to one of the groups' handles goes to its group (groupsync.js queues it in the group's lane).
  if (frame.type === 'MESSAGE' && typeof frame.handle === 'string' && model.groupHandles.listen.has(frame.handle)) {
    app.groupSync.receive(frame);
    return;
  }
  const event = { type: 'frame', frame, epoch: model.session.epoch }; // the session it arrived in
  // A MESSAGE to one of our handles is about the contact the handle belongs to (contacts.js).
  const peer = typeof frame.handle === 'string' && frame.type === 'MESSAGE' ? model.handles.listen.get(frame.handle) : peerOf(frame);
  if (peer) peerQueue.run(peer, () => dispatch(event));
  else dispatch(event).catch(reportInternalError);
}

function onStatus({ status, retryInMs }) {
  ui.connection = { status, retryAt: retryInMs ? Date.now() + retryInMs : 0 };
  if (status === 'taken_over') {
    addNotice(noticeText('taken_over'), { label: 'Start a new session here', run: startNewSession });
  }
  dispatch({ type: 'status', status }).catch(reportInternalError);
}

function onSession({ id, version, resumed, resumeAttempted, friends, limits }) {
  dispatch({ type: 'connected', id, version, resumed, resumeAttempted, friends, limits }).catch(reportInternalError);
  app.contactSync?.onSession();
  app.groupSync?.onSession();
  if (resumed) ui.notices = ui.notices.filter((n) => n.kind !== 'session');
  // A session exists, so whatever "server full" said is over.
  ui.notices = ui.notices.filter((n) => n.kind !== 'server');
  changed();
}

function startNewSession() {
  dispatch({ type: 'newSession' });
  ui.notices = ui.notices.filter((n) => n.kind !== 'session');
  app.transport.restart();
  changed();
}

// --- page lifecycle -----------------------------------------------------------------------------------

function readInviteFromUrl() {
  const invite = parseInvite(location.hash);
  if (!invite) return;
  ui.invite = invite;
  // From now on, whatever path befriends this ID (the card, the add-friend form it prefills, a request
  // from it, an acceptance after a reconnect) is checked against the link's fingerprint (trust.js).
  dispatch({ type: 'inviteOpened', id: invite.id, fingerprint: invite.fingerprint, secret: invite.secret });
  if (app.views) {
    app.views.sidebar.prefillAdd(invite.id);
    changed();
  }
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) return;
  if (app.transport) app.transport.check();
  if (ui.unread.get(ui.activeFriendId)) {
    ui.unread.delete(ui.activeFriendId);
    changed();
  }
  if (ui.activeGroupId && ui.unread.get(`group:${ui.activeGroupId}`)) {
    ui.unread.delete(`group:${ui.activeGroupId}`);
    changed();
  }
});
// iOS restores pages from the back-forward cache with `pageshow`, not `visibilitychange`.
window.addEventListener('pageshow', () => app.transport && app.transport.check());
window.addEventListener('online', () => app.transport && app.transport.check());
window.addEventListener('offline', () => app.transport && app.transport.networkLost());
window.addEventListener('hashchange', readInviteFromUrl);
// A reload or a closed tab ends the session (tokens are never stored), and with it every live friendship by ID:
// the browser asks first when that loses something (contactbook.js unloadLoses). A remembered contact loses
// nothing (the next visit finds it again, its unconfirmed messages go again), unless the book's last changes are
// not stored yet or a message to it has not been sealed; a key screen or an empty session loses nothing.
window.addEventListener('beforeunload', (event) => {
  if (!unloadLoses(model, { remember: ui.remember, bookUnsaved: Boolean(app.contactStore?.unsaved) })) return;
  event.preventDefault();
  event.returnValue = ''; // older browsers ask only when this is set
});
document.addEventListener('keydown', (event) => {
  if (event.key === 'Escape' && ui.drawerOpen) setDrawer(false);
});

/** Opens or closes the phone drawer, moving focus into it and back to its toggle for keyboard users. */
function setDrawer(open) {
  if (ui.drawerOpen === open) return;
  ui.drawerOpen = open;
  render();
  const target = document.querySelector(open ? '.drawer-close' : '.drawer-toggle');
  if (target && target.offsetParent !== null) target.focus();
}

readInviteFromUrl();
showKeyScreen();
