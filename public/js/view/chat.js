// The main area: incoming requests on top (view/requests.js), then an opened invite's step
// (view/invitestep.js), the start screen while no chat is open (view/welcome.js), and one chat pane per friend:
// a one-line header (name, trust, presence) with the key's details on demand, the key-changed banner, the
// message log and the composer. Message text and names on keys are attacker-controlled and only ever become
// text nodes (and <a>s built by linkifiedText); the page's own marks are drawn outside them. A message that
// passes every check is simply shown as the friend's; one that fails is marked loudly.
import { isContact } from '../contactbook.js';
import { confirmDialog, fingerprintElement, h, linkifiedText, sendOnEnter, setText, timeElement, toggleClass } from './dom.js';
import { createGroupPane } from './grouppane.js';
import { createInviteStep } from './invitestep.js';
import { friendNameElement } from './names.js';
import { createRequestsPanel } from './requests.js';
import { createWelcome } from './welcome.js';
import { envelopeTextBytes, maxTextBytes } from '../envelope.js';
import { isRepresentableTime } from '../inbox.js';
import { isLive, shownPresence } from '../model.js';
import { friendLabel, keyName, labelText, nameClashes } from '../names.js';
import { INCOMING_PROBLEM_TEXT, SEND_ERROR_TEXT, TRUST_LABELS, systemLineText } from '../text.js';

const OUT_STATE_TEXT = {
  waiting: 'waiting for connection',
  sending: 'sending…',
  delivered: 'delivered',
  queued: 'queued (friend away)',
  sent: 'sent, waiting for their receipt',
  stored: 'waiting: kept on the server until they come back',
  undelivered: 'undelivered',
  error: 'not sent',
};

// 'away': the friend's connection dropped and the server keeps their session a short while; only a
// DISCONNECT (they left, or that window ran out) ends it.
const PRESENCE_TEXT = {
  online: 'online',
  away: 'went offline (may come back)',
  gone: 'gone',
  unknown: 'unknown while you are offline',
};

const GONE_TEXT = {
  left: (id) => `${id}'s session ended (they left, or were offline too long); this friendship has ended.`,
  removed: (id) => `${id} removed you as a friend.`,
  removed_by_you: (id) => `You removed ${id}.`,
  session_lost: () => 'Your session ended, and this friendship with it. Add each other again to keep chatting.',
};

export function createChatArea({ actions }) {
  // Not focusable itself: its first Tab stop can be a request card's Accept (see focusMain).
  const root = h('main', { className: 'chat-area', id: 'chat-area', 'aria-label': 'Conversation' });
  const requests = createRequestsPanel({ actions });
  const inviteStep = createInviteStep({ actions });
  const welcome = createWelcome({ actions });
  const top = h('div', { className: 'main-top' }, requests.root, inviteStep.root);
  root.append(top, welcome.root);
  const panes = new Map(); // friend id -> pane
  const groupPanes = new Map(); // gid -> group pane (view/grouppane.js)

  function updateGroups(state) {
    for (const [gid, pane] of groupPanes) {
      if (!state.groups.has(gid)) {
        pane.root.remove();
        groupPanes.delete(gid);
      }
    }
    for (const group of state.groups.values()) {
      let pane = groupPanes.get(group.gid);
      if (!pane) {
        pane = createGroupPane(group.gid, actions);
        groupPanes.set(group.gid, pane);
        root.append(pane.root);
      }
      pane.root.hidden = group.gid !== state.activeGroupId;
      if (group !== pane.group || !pane.root.hidden) pane.update(state, group);
    }
  }

  function update(state) {
    requests.update(state);
    inviteStep.update(state);
    top.hidden = requests.root.hidden && inviteStep.root.hidden;
    updateGroups(state);
    const groupOpen = Boolean(state.activeGroupId && state.groups.has(state.activeGroupId));
    const chatOpen = groupOpen || Boolean(state.activeFriendId && state.friends.has(state.activeFriendId));
    // With a chat open, requests stay on top but scroll within a part of the height (CSS).
    toggleClass(root, 'with-chat', chatOpen);
    welcome.root.hidden = chatOpen;
    if (!chatOpen) welcome.update(state);
    for (const [id, pane] of panes) {
      if (!state.friends.has(id)) {
        pane.root.remove();
        panes.delete(id);
      }
    }
    for (const friend of state.friends.values()) {
      let pane = panes.get(friend.id);
      if (!pane) {
        pane = createPane(friend, actions);
        panes.set(friend.id, pane);
        root.append(pane.root);
      }
      pane.root.hidden = friend.id !== state.activeFriendId;
      pane.update(state, friend);
    }
  }

  function focusGroupComposer(gid) {
    groupPanes.get(gid)?.focusComposer();
  }

  function focusComposer(id) {
    const pane = panes.get(id);
    if (pane) pane.focusComposer();
  }

  /**
   * Where the skip link takes the keyboard: the composer of the open chat `id` (also while sending is blocked:
   * it is read-only then, still focusable), else the start screen's first action. Never a request card: Tab,
   * Enter from there must not accept anyone.
   */
  function focusMain(id) {
    const pane = panes.get(id);
    if (pane && !pane.root.hidden) pane.focusComposer({ evenBlocked: true });
    else welcome.focusMain();
  }

  return { root, update, focusComposer, focusGroupComposer, focusMain, focusInvite: () => inviteStep.focus() };
}

function createPane(friend, actions) {
  const id = friend.id;
  const title = h('h2', { className: 'chat-title', id: `chat-title-${id}` }, h('span', { className: 'friend-id', text: id }));
  const trustBadge = h('span', { className: 'trust-badge' });
  const presence = h('span', { className: 'presence' }, h('span', { className: 'presence-dot', 'aria-hidden': 'true' }), h('span', { className: 'presence-text' }));
  const fpSlot = h('div', { className: 'fp-slot' });
  const keyNameLine = h('p', { className: 'key-name muted small' });
  // On a phone the header is one line; the key's details and the friend's actions open on demand (CSS shows
  // them at all times on wider screens).
  const detailsId = `chat-details-${id}`;
  const detailsToggle = h('button', {
    type: 'button', className: 'btn btn-small details-toggle', text: 'Details', 'aria-expanded': 'false', 'aria-controls': detailsId,
    'aria-label': `Details of the chat with ${id}`, onClick: () => setDetails(!head.classList.contains('details-open')),
  });
  const nicknameInput = h('input', {
    type: 'text', id: `nickname-${id}`, className: 'input input-small', autocomplete: 'off', maxlength: '64', placeholder: 'e.g. Mum',
  });
  const nicknameError = h('p', { className: 'form-error small', role: 'alert' });
  const nicknameForm = h('form', { className: 'nickname-form', 'aria-label': `Your name for ${id}` },
    h('label', { htmlFor: `nickname-${id}`, className: 'label small', text: 'Your name for them (only you see it)' }),
    h('div', { className: 'inline-form' }, nicknameInput,
      h('button', { type: 'submit', className: 'btn btn-small', text: 'Save', 'aria-label': `Save your name for ${id}` })),
    nicknameError);
  nicknameForm.addEventListener('submit', (event) => {
    event.preventDefault();
    setText(nicknameError, '');
    try {
      actions.setNickname(id, nicknameInput.value);
    } catch (error) {
      setText(nicknameError, error.message);
    }
  });
  const verifyButton = h('button', { type: 'button', className: 'btn btn-small', onClick: () => onVerifyClick() });
  const removeButton = h('button', { type: 'button', className: 'btn btn-small btn-danger', text: 'Remove friend', 'aria-label': `Remove friend ${id}`, onClick: () => actions.removeFriend(id) });
  const dismissButton = h('button', { type: 'button', className: 'btn btn-small', text: 'Close chat', 'aria-label': `Close the chat with ${id}`, onClick: () => actions.dismissFriend(id) });
  const banner = h('div', { className: 'banner banner-danger key-changed-banner', role: 'alert', hidden: true });
  const goneBanner = h('div', { className: 'banner banner-muted', role: 'status', hidden: true });
  // The log region scrolls; the messages inside it are a list (a role on the <ol> itself would hide that).
  const list = h('ol', { className: 'log-list' });
  const log = h('div', { className: 'log', role: 'log', 'aria-live': 'polite', 'aria-labelledby': `chat-title-${id}` }, list);
  const textarea = h('textarea', {
    className: 'input composer-input', id: `composer-${id}`, rows: '1',
    placeholder: 'Write a message…', autocomplete: 'off', 'aria-describedby': `composer-hint-${id}`,
  });
  const sendButton = h('button', { type: 'submit', className: 'btn btn-primary composer-send', text: 'Send', 'aria-label': `Send message to ${id}` });
  const composerNote = h('p', { className: 'composer-note small', 'aria-live': 'polite' });
  const composer = h('form', { className: 'composer', 'aria-label': `Write to ${id}` },
    h('label', { htmlFor: `composer-${id}`, className: 'sr-only', text: `Message to ${id}` }),
    textarea, sendButton,
    h('p', { className: 'composer-hint small muted', id: `composer-hint-${id}`, text: 'Enter sends · Shift+Enter for a new line' }));
  const head = h('header', { className: 'chat-head' },
    h('div', { className: 'chat-head-main' }, title, trustBadge, presence, detailsToggle),
    h('div', { className: 'chat-head-details', id: detailsId },
      h('div', { className: 'chat-head-key' }, h('span', { className: 'label small', text: 'Key fingerprint' }), fpSlot, keyNameLine, nicknameForm),
      h('div', { className: 'chat-head-actions' }, verifyButton, removeButton, dismissButton)));
  function setDetails(open) {
    toggleClass(head, 'details-open', open);
    detailsToggle.setAttribute('aria-expanded', String(open));
  }
  const root = h('section', { className: 'chat-pane', 'data-friend': id, 'aria-labelledby': `chat-title-${id}` },
    head,
    banner,
    goneBanner,
    log,
    composerNote,
    composer);

  let currentFriend = friend;
  let shownFingerprint = '';
  let shownName = '';
  let who = id; // how this friend's messages are signed off: their name (names.js) or ID
  const messageViews = new Map(); // message localId -> {element, update}

  async function onVerifyClick() {
    const f = currentFriend;
    if (f.trust === 'verified') {
      actions.markUnverified(id);
      return;
    }
    const ok = await confirmDialog({
      title: `Verify ${id}'s key`,
      body: [
        'Ask your friend to read their fingerprint to you over a channel you trust (in person, a call). It must match exactly:',
        fingerprintElement(f.fingerprint, 'fingerprint fingerprint-large'),
      ],
      confirmText: 'Fingerprints match',
    });
    if (ok) actions.markVerified(id);
  }

  let blocked = false;
  let statusNote = '';
  let maxBytes = Infinity;

  let learnedMax = Infinity; // below the size of a text that failed as too_long once sealed (bigger keys)
  const returned = new Set(); // localIds of too_long messages whose text was put back in the composer

  /** The text's size counts in UTF-8 bytes (a CJK character is 3), not in characters: see maxTextBytes. */
  function tooLongNote() {
    if (maxBytes <= 0) return 'The server\'s message size limit is too small for any message: sending is not possible.';
    const bytes = envelopeTextBytes(textarea.value);
    const limit = Math.min(maxBytes, learnedMax);
    if (bytes <= limit) return '';
    const kb = (n) => (n / 1000).toFixed(1);
    return `Too long to send: ${kb(bytes)} KB, at most ${kb(limit)} KB (UTF-8). Shorten it or split it into several messages.`;
  }

  /**
   * The composer's limit assumes keys up to RSA-8192; with bigger ones a text can still fail once sealed,
   * after the composer was cleared. Put it back (unless something new was typed) and lower the limit, so
   * the text is never lost and the same mistake is caught before sending.
   */
  function returnTooLong(f) {
    const failed = f.messages.findLast((m) => m.direction === 'out' && m.state === 'error' && m.error === 'too_long');
    if (!failed || returned.has(failed.localId)) return;
    returned.add(failed.localId);
    learnedMax = Math.min(learnedMax, envelopeTextBytes(failed.text) - 1);
    if (textarea.value === '') {
      textarea.value = failed.text;
      autoGrow();
    }
  }

  function refreshComposer() {
    const tooLong = tooLongNote();
    textarea.readOnly = blocked; // not disabled: a draft left there must stay selectable and copyable
    sendButton.disabled = blocked || tooLong !== '';
    setText(composerNote, tooLong || statusNote);
    toggleClass(composerNote, 'composer-note-error', tooLong !== '');
  }

  function send() {
    const text = textarea.value;
    if (!text.trim() || blocked || tooLongNote()) return;
    if (actions.sendMessage(id, text)) {
      textarea.value = '';
      autoGrow();
      refreshComposer();
    }
  }

  function autoGrow() {
    textarea.style.height = 'auto';
    textarea.style.height = `${Math.min(textarea.scrollHeight, 200)}px`;
  }

  sendOnEnter(composer, textarea, send);
  textarea.addEventListener('input', () => {
    autoGrow();
    refreshComposer();
  });

  function update(state, f) {
    currentFriend = f;
    setText(trustBadge, trustMark(f.trust));
    trustBadge.className = `trust-badge trust-${f.trust}`;
    trustBadge.setAttribute('data-trust', f.trust);
    root.setAttribute('data-trust', f.trust);
    const live = isLive(f);
    root.setAttribute('data-friendship', f.status);
    root.setAttribute('data-presence', live ? f.presence : 'gone');
    const presenceShown = shownPresence(f, state.connection.status);
    presence.className = `presence presence-${presenceShown}`;
    setText(presence.lastChild, PRESENCE_TEXT[presenceShown]);
    if (shownFingerprint !== f.fingerprint) {
      fpSlot.replaceChildren(fingerprintElement(f.fingerprint));
      shownFingerprint = f.fingerprint;
    }
    const label = friendLabel(f);
    const clashes = nameClashes(state, id);
    const nameKey = `${label.kind}|${label.text}|${clashes.join(' ')}`;
    if (nameKey !== shownName) {
      title.replaceChildren(friendNameElement(label, id, clashes));
      shownName = nameKey;
      if (document.activeElement !== nicknameInput) nicknameInput.value = f.nickname;
    }
    who = label.kind === 'key' ? `~${label.text}` : label.text;
    const fromKey = keyName(f.userId);
    setText(keyNameLine, fromKey ? `Name on their key (chosen by its owner, not checked): ${fromKey}` : 'Their key carries no name.');
    setText(verifyButton, f.trust === 'verified' ? 'Mark unverified' : 'Verify fingerprint…');
    verifyButton.hidden = f.trust === 'changed' || !live;
    removeButton.hidden = !live;
    dismissButton.hidden = live;

    banner.hidden = f.trust !== 'changed';
    if (f.trust === 'changed') renderChangedBanner(f);
    goneBanner.hidden = live;
    if (!live) setText(goneBanner, (GONE_TEXT[f.endedReason] || GONE_TEXT.left)(id));

    blocked = f.trust === 'changed' || !live;
    maxBytes = Math.max(0, maxTextBytes(state.session.limits.max_message_bytes));
    returnTooLong(f);
    statusNote = '';
    if (f.trust === 'changed') statusNote = 'Sending is blocked until you confirm the new key.';
    else if (live && f.presence === 'away') {
      // A contact's messages wait in the server's mailbox (days); an ID friendship's only in its resume window.
      statusNote = isContact(f)
        ? `${id} is away: messages wait on the server until they are back (up to a week).`
        : `${id} is away: messages are queued for a short while.`;
    }
    else if (state.connection.status !== 'online' && live) statusNote = 'You are offline: messages will be sent when the connection is back.';
    refreshComposer();

    renderMessages(f, blocked);
  }

  function renderChangedBanner(f) {
    const fromInvite = f.trustSource === 'invite';
    const { title, text, earlierLabel } = changedText(f, id);
    banner.replaceChildren(
      h('strong', { className: 'banner-title', text: title }),
      h('p', { text }),
      ...(earlierLabel ? [h('p', { className: 'label small', text: earlierLabel }), fingerprintElement(f.changedFrom || '')] : []),
      h('p', { className: 'label small', text: 'Key now pinned:' }),
      fingerprintElement(f.fingerprint),
      h('div', { className: 'actions' },
        h('button', { type: 'button', className: 'btn btn-danger', text: 'Continue with the new key', onClick: () => confirmChanged(fromInvite) }),
        h('button', { type: 'button', className: 'btn', text: 'Remove friend', onClick: () => actions.removeFriend(id) })),
    );
  }

  async function confirmChanged(fromInvite) {
    const ok = await confirmDialog({
      title: 'Use the new key?',
      body: fromInvite
        ? 'The key does not match the invite link. Only continue if your friend confirmed this fingerprint to you another way.'
        : 'Only continue if your friend confirmed the new fingerprint to you another way. The key will be shown as unverified.',
      confirmText: 'Use the new key',
      danger: true,
    });
    if (ok) actions.acceptChangedKey(id);
  }

  function renderMessages(f, blocked) {
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 48;
    let cursor = list.firstChild;
    let appended = false;
    const seen = new Set();
    for (const message of f.messages) {
      seen.add(message.localId);
      let view = messageViews.get(message.localId);
      if (!view) {
        view = createMessageView(message, id, actions);
        messageViews.set(message.localId, view);
        appended = true;
      }
      view.update(message, !blocked, who);
      if (view.element !== cursor) list.insertBefore(view.element, cursor);
      else cursor = cursor.nextSibling;
    }
    for (const [localId, view] of messageViews) {
      if (!seen.has(localId)) {
        view.element.remove();
        messageViews.delete(localId);
      }
    }
    // Follow new messages unless the user scrolled up to read older ones (then stay put).
    const lastOutgoing = f.messages.length > 0 && f.messages[f.messages.length - 1].direction === 'out';
    if (appended && (atBottom || lastOutgoing) && !root.hidden) log.scrollTop = log.scrollHeight;
  }

  return {
    root,
    update,
    focusComposer: ({ evenBlocked = false } = {}) => {
      log.scrollTop = log.scrollHeight;
      if (!blocked || evenBlocked) textarea.focus();
    },
  };
}

/** What the key-changed banner says, by why the key is not trusted (trust.js pinFriendKey). */
function changedText(f, id) {
  switch (f.trustSource) {
    case 'invite':
      return {
        title: '⚠ KEY DOES NOT MATCH THE INVITE LINK',
        text: `The key ${id} sent is not the one named in the invite link you opened. Someone (even the server) may be intercepting. Compare fingerprints over another channel before continuing.`,
        earlierLabel: 'Expected (invite link):',
      };
    case 'own_key':
      return {
        title: '⚠ THIS IS YOUR OWN KEY',
        text: `${id} came with your own public key. Someone, maybe the server, could use that to show your own messages as if ${id} wrote them. Continue only if ${id} is you in another tab.`,
      };
    case 'pinned_elsewhere':
      return {
        title: '⚠ KEY ALREADY USED BY ANOTHER FRIEND',
        text: `${id} came with the key of your friend ${f.sharedWith || 'under another ID'}. Someone, maybe the server, may be re-using that key to pose as a new contact. Ask ${f.sharedWith || 'that friend'} over another channel before continuing.`,
      };
    default:
      return {
        title: '⚠ KEY CHANGED',
        text: `${id} now uses a different key than before. This can mean a new device — or an attacker. Compare fingerprints over another channel before continuing.`,
        earlierLabel: 'Previous key:',
      };
  }
}

function trustMark(trust) {
  if (trust === 'verified') return `✔ ${TRUST_LABELS.verified}`;
  if (trust === 'changed') return `⚠ ${TRUST_LABELS.changed}`;
  return `? ${TRUST_LABELS.unverified}`;
}

function createMessageView(message, friendId, actions) {
  if (message.direction === 'system') {
    // The page's own sentence names the friend by ID: a name on a key is its owner's text, and would read as
    // part of the sentence ("~They came through your invite link accepted…"); the line is drawn once, so a
    // nickname given later would not reach it either.
    const { text, tone } = systemLineText(message, friendId);
    const element = h('li', { className: `msg-system msg-system-${tone}` }, h('span', { text }));
    return { element, update: () => {} };
  }
  return message.direction === 'out' ? outgoingView(message, friendId, actions) : incomingView(message, actions, friendId);
}

function outgoingView(message, friendId, actions) {
  const state = h('span', { className: 'msg-state' });
  const retry = h('button', { type: 'button', className: 'btn btn-tiny', text: 'retry', 'aria-label': 'Retry sending this message', onClick: () => actions.retryMessage(friendId, message.localId) });
  const meta = h('div', { className: 'msg-meta' },
    h('span', { className: 'msg-who', text: 'you' }),
    timeElement(message.ts),
    state, retry);
  const element = h('li', { className: 'msg msg-out' }, meta, h('p', { className: 'msg-text' }, linkifiedText(message.text)));
  let last = '';
  function update(m, canSend) {
    const key = `${m.state}|${m.error}|${canSend}`;
    if (key === last) return;
    last = key;
    element.setAttribute('data-state', m.state);
    const errorText = m.error ? `: ${SEND_ERROR_TEXT[m.error] || m.error}` : '';
    setText(state, `${OUT_STATE_TEXT[m.state]}${errorText}`);
    state.className = `msg-state msg-state-${m.state}`;
    retry.hidden = !canSend || !(m.state === 'error' || m.state === 'undelivered');
  }
  return { element, update };
}

function incomingView(message, actions, friendId) {
  const element = h('li', { className: 'msg msg-in' });
  let rendered = '';
  function update(m, canSend, who = friendId) {
    const key = `${m.hidden}|${m.problems.join(',')}|${who}`;
    if (key === rendered) return;
    const flagged = m.problems.length > 0;
    toggleClass(element, 'msg-flagged', flagged);
    element.setAttribute('data-verified', String(m.verified));
    element.setAttribute('data-problems', m.problems.join(' '));
    if (m.seq !== null) element.setAttribute('data-seq', String(m.seq));
    if (m.sentTs !== null) element.setAttribute('data-sent-ts', String(m.sentTs));
    if (m.duplicate) element.setAttribute('data-duplicate', 'true');
    // A message that passed every check needs no mark: it is simply theirs. Only a failure is marked, loudly.
    // ("verified" belongs to the key, after comparing fingerprints: the header's badge.)
    const mark = m.verified ? null
      : h('span', { className: 'msg-mark msg-mark-bad', text: m.duplicate ? 'duplicate' : '⚠ FAILED A SECURITY CHECK' });
    const children = [
      h('div', { className: 'msg-meta' }, h('span', { className: 'msg-who', text: who }), timeElement(m.ts), mark),
    ];
    if (m.duplicate) {
      // The same signed message (seq, time and text) again: a re-send after a dropped connection. Nothing new
      // to read or to fear, so it is not shown a second time.
      children.push(h('p', { className: 'msg-duplicate small muted', text: `Received again: a copy of message #${m.seq} above, not shown twice.` }));
    }
    if (m.late) children.push(h('p', { className: 'msg-late small muted', text: 'Arrived late: it fills an earlier gap.' }));
    if (m.missing > 0) {
      children.push(h('p', { className: 'msg-flag msg-flag-warn', text: `⚠ ${m.missing} earlier message${m.missing === 1 ? '' : 's'} missing (sequence gap)` }));
    }
    if (m.skewed) children.push(h('p', { className: 'msg-flag msg-flag-warn', text: skewText(m) }));
    for (const problem of m.problems) {
      children.push(h('p', { className: 'msg-flag', text: `⚠ ${INCOMING_PROBLEM_TEXT[problem] || problem}` }));
    }
    const hasText = m.text !== null && !m.duplicate; // a duplicate's text is shown with the original
    if (hasText && !m.hidden) {
      children.push(h('p', { className: 'msg-text' }, linkifiedText(m.text)));
    } else if (hasText) {
      children.push(h('button', {
        type: 'button', className: 'btn btn-tiny', text: 'show the text anyway',
        onClick: () => actions.revealMessage(friendId, m.localId),
      }));
    }
    element.replaceChildren(...children);
    rendered = key; // only once drawn: a failed draw is tried again on the next render
  }
  return { element, update };
}

/** The sender's signed time, when it is far from when it arrived here (an old message, or a wrong clock). */
function skewText(m) {
  const sent = isRepresentableTime(m.sentTs) ? new Date(m.sentTs).toLocaleString() : 'an impossible time';
  const minutes = Math.round(Math.abs(m.sentTs - m.receivedAt) / 60000);
  const distance = minutes >= 120 ? `${Math.round(minutes / 60)} hours` : `${minutes} minutes`;
  const when = m.sentTs < m.receivedAt ? 'before' : 'after';
  return `⚠ Written ${sent} by the sender's clock, ${distance} ${when} it arrived here: an old message replayed, or a wrong clock.`;
}
