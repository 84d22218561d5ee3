// The side panel (a drawer on phones): who I am (ID, fingerprint, invite link with QR code and share), adding a
// friend, sent requests, the friends list with names, presence, trust and unread counts, and leaving. Incoming
// requests and an opened invite live in the main area (view/requests.js, view/invitestep.js), where the eye is.
import { copyButton, fingerprintElement, h, setText, toggleClass } from './dom.js';
import { friendNameElement } from './names.js';
import { createGroupsPanel } from './groups.js';
import { createInviteShare } from './share.js';
import { shownPresence } from '../model.js';
import { isContact } from '../contactbook.js';
import { friendLabel, nameClashes } from '../names.js';
import { TRUST_LABELS } from '../text.js';

// A friend who dropped is in the server's resume window and may come back: "offline", not gone.
const PRESENCE_LABEL = { online: 'online', away: 'offline', gone: 'gone', unknown: '—' };

/** Outgoing messages to a contact not confirmed by its receipt yet (contacts.js). */
export function unconfirmedCount(friend) {
  return friend.messages.filter((m) => m.direction === 'out' && m.via === 'handle' && m.state !== 'delivered' && m.state !== 'error').length
    + friend.messages.filter((m) => m.direction === 'out' && !m.via && m.seq > 0 && m.state === 'waiting').length;
}

/** "online", or for an offline contact when it was last reachable, and how many of our messages wait for it. */
export function presenceLabel(friend, shown) {
  const waiting = unconfirmedCount(friend);
  const suffix = waiting ? ` · ${waiting} waiting` : '';
  if (shown !== 'away' || !isContact(friend)) return `${PRESENCE_LABEL[shown]}${suffix}`;
  if (!friend.lastReachable) return `offline${suffix}`;
  const at = new Date(friend.lastReachable);
  const sameDay = at.toDateString() === new Date().toDateString();
  const when = sameDay ? at.toTimeString().slice(0, 5) : at.toISOString().slice(0, 10);
  return `offline, last reachable ${when}${suffix}`;
}

export function createSidebar({ actions }) {
  const root = h('aside', { className: 'sidebar', id: 'sidebar', 'aria-label': 'You, adding friends, and your friends' });

  // --- identity -------------------------------------------------------------------------------------
  const myId = h('code', { className: 'my-id', id: 'my-id' });
  const myFp = h('div', { className: 'fp-slot' });
  const share = createInviteShare({ actions, prefix: '' });
  const notifyBox = h('input', { type: 'checkbox', id: 'notify-toggle', className: 'checkbox', onChange: (event) => actions.setNotifications(event.target.checked) });
  const identity = h('section', { className: 'panel identity', 'aria-labelledby': 'identity-title' },
    h('h2', { className: 'panel-title', id: 'identity-title', text: 'You' }),
    h('div', { className: 'id-line' },
      h('span', { className: 'label', text: 'Your ID' }), myId,
      copyButton('Copy your ID', () => myId.textContent, () => myId)),
    h('p', { className: 'small muted id-explained', text: 'A temporary address for this session only: it changes every time you open SecChat. Anyone who has it can ask to be your friend; nothing happens until you accept.' }),
    share.root,
    h('span', { className: 'label', text: 'Your key fingerprint' }),
    h('div', { className: 'fp-line' }, myFp, copyButton('Copy your fingerprint', () => myFp.firstChild?.getAttribute('data-fingerprint') || '', () => myFp)),
    h('div', { className: 'check-row' }, notifyBox, h('label', { htmlFor: 'notify-toggle', text: 'Desktop notifications while this tab is hidden' })));

  // --- add friend -----------------------------------------------------------------------------------
  const addInput = h('input', {
    type: 'text', id: 'add-friend-id', className: 'input input-id', autocomplete: 'off', spellcheck: 'false',
    autocapitalize: 'characters', maxlength: '20', placeholder: 'e.g. K7Q2ZD', 'aria-describedby': 'add-friend-hint',
  });
  const addError = h('p', { className: 'form-error small', role: 'alert', id: 'add-friend-error' });
  const addButton = h('button', { type: 'submit', className: 'btn btn-primary', text: 'Send request', id: 'add-friend-send' });
  const addForm = h('form', { className: 'panel add-friend', 'aria-labelledby': 'add-title' },
    h('h2', { className: 'panel-title', id: 'add-title', text: 'Add a friend' }),
    h('label', { htmlFor: 'add-friend-id', className: 'label', text: "Friend's ID" }),
    h('div', { className: 'inline-form' }, addInput, addButton),
    h('p', { className: 'small muted', id: 'add-friend-hint', text: 'Their 6-character ID from their screen. With an ID alone, compare fingerprints afterwards; an invite link does that for you.' }),
    addError);
  addForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    addButton.disabled = true;
    setText(addError, '');
    try {
      await actions.addFriend(addInput.value);
      addInput.value = '';
    } catch (error) {
      setText(addError, error.message);
    } finally {
      addButton.disabled = false;
    }
  });

  const sentList = h('ul', { className: 'sent-list', 'aria-labelledby': 'sent-title' });
  const sent = h('section', { className: 'panel sent', hidden: true },
    h('h2', { className: 'panel-title', id: 'sent-title', text: 'Sent requests' }), sentList);

  // --- friends ----------------------------------------------------------------------------------------
  const friendsList = h('ul', { className: 'friend-list', 'aria-labelledby': 'friends-title' });
  const friendsEmpty = h('p', { className: 'muted small', text: 'No friends yet.' });
  const namesNote = h('p', { className: 'muted small names-note', hidden: true,
    text: '~Name: the name on their key, chosen by its owner. Give a friend your own name for them under "Details" in their chat.' });
  const friends = h('section', { className: 'panel friends' },
    h('h2', { className: 'panel-title', id: 'friends-title', text: 'Friends' }), friendsEmpty, friendsList, namesNote);

  // --- the contact book: export and import (encrypted to and signed by the user's key) ----------------------
  const bookNote = h('p', { className: 'small muted', id: 'book-note', 'aria-live': 'polite' });
  const bookFile = h('input', { type: 'file', id: 'book-import-file', className: 'file-input', accept: '.asc,.pgp,.txt,text/plain' });
  bookFile.addEventListener('change', async () => {
    const chosen = bookFile.files && bookFile.files[0];
    if (!chosen) return;
    setText(bookNote, 'Importing…');
    try {
      const { added, updated } = await actions.importBook(await chosen.text());
      setText(bookNote, `Imported: ${added} new contact${added === 1 ? '' : 's'}, ${updated} already known.`);
    } catch (error) {
      setText(bookNote, error.message);
    }
    bookFile.value = '';
  });
  const exportButton = h('button', { type: 'button', className: 'btn btn-small', id: 'book-export', text: 'Export contacts',
    onClick: async () => {
      try {
        await actions.exportBook();
        setText(bookNote, 'Exported: the file is encrypted to your key; import it with the same key.');
      } catch (error) {
        setText(bookNote, error.message);
      }
    } });
  const book = h('section', { className: 'panel book', 'aria-labelledby': 'book-title' },
    h('h2', { className: 'panel-title', id: 'book-title', text: 'Contact book' }),
    h('p', { className: 'small muted', id: 'book-explained' }),
    h('div', { className: 'actions' }, exportButton),
    h('div', { className: 'file-row' }, h('label', { htmlFor: 'book-import-file', className: 'label small', text: 'Import contacts:' }), bookFile),
    bookNote);

  // --- leaving: last in the panel and in the Tab order, away from everyday controls -----------------------
  const leave = h('button', { type: 'button', className: 'btn btn-small btn-danger', id: 'leave', text: 'Leave', 'aria-label': 'Leave: end this session and your ID', onClick: () => actions.leave() });
  const session = h('section', { className: 'panel session', 'aria-labelledby': 'session-title' },
    h('h2', { className: 'panel-title', id: 'session-title', text: 'Session' }),
    h('p', { className: 'small muted', text: 'Leaving ends your ID now and tells your friends. Closing the tab does the same once the server stops waiting for you (about 30 seconds).' }),
    h('div', { className: 'actions' }, leave));

  // The accessible name starts with what is seen ("close"); the × is decoration.
  const close = h('button', { type: 'button', className: 'btn btn-small drawer-close', onClick: () => actions.toggleDrawer(false) },
    h('span', { 'aria-hidden': 'true', text: '× ' }), 'close', h('span', { className: 'sr-only', text: ' the side panel' }));
  const groups = createGroupsPanel({ actions });
  root.append(close, identity, addForm, sent, friends, groups.root, book, session);

  const friendViews = new Map(); // id -> {element, update}
  let shownFingerprint = '';

  function update(state) {
    setText(myId, state.session.id || '······');
    if (state.identity && shownFingerprint !== state.identity.fingerprint) {
      myFp.replaceChildren(fingerprintElement(state.identity.fingerprint));
      shownFingerprint = state.identity.fingerprint;
    }
    share.update(state);
    notifyBox.checked = state.notifications;
    leave.hidden = state.connection.status === 'left' || state.connection.status === 'taken_over';
    session.hidden = leave.hidden;
    updateSent(state);
    updateFriends(state);
    groups.update(state);
    book.dataset.pending = String(state.bookPending); // a save is due or running
    setText(book.querySelector('#book-explained'), state.remember
      ? 'Your contacts are kept on this device, encrypted to your key: after a reload you find each other again without a new request.'
      : 'Your contacts last as long as this tab (you chose not to remember your key here). Export them to keep them.');
  }

  function updateSent(state) {
    sent.hidden = state.outgoingRequests.size === 0;
    sentList.replaceChildren(...[...state.outgoingRequests.values()].map((request) => h('li', { className: 'sent-item', 'data-sent': request.id },
      h('span', { className: 'friend-id', text: request.id }),
      h('span', { className: 'muted small', text: sentText(request) }),
      request.state === 'declined' || request.unsure
        ? h('button', { type: 'button', className: 'btn btn-tiny', text: 'dismiss', 'aria-label': `Dismiss the ${request.state === 'declined' ? 'declined' : 'unconfirmed'} request to ${request.id}`, onClick: () => actions.dismissSent(request.id) })
        : null)));
  }

  function sentText(request) {
    if (request.state === 'declined') return ' declined';
    if (request.unsure) return ' waiting for them to accept (the connection dropped while sending: it may not have arrived)';
    return ' waiting for them to accept';
  }

  function updateFriends(state) {
    friendsEmpty.hidden = state.friends.size > 0;
    for (const [id, view] of friendViews) {
      if (!state.friends.has(id)) {
        view.element.remove();
        friendViews.delete(id);
      }
    }
    for (const friend of state.friends.values()) {
      let view = friendViews.get(friend.id);
      if (!view) {
        view = friendItem(friend.id);
        friendViews.set(friend.id, view);
        friendsList.append(view.element);
      }
      view.update(friend, friend.id === state.activeFriendId, shownPresence(friend, state.connection.status), state.unread.get(friend.id) || 0, nameClashes(state, friend.id));
    }
    namesNote.hidden = ![...state.friends.values()].some((friend) => friendLabel(friend).kind === 'key');
  }

  function friendItem(id) {
    const dot = h('span', { className: 'presence-dot', 'aria-hidden': 'true' });
    const trust = h('span', { className: 'trust-badge' });
    const presence = h('span', { className: 'presence-text small' });
    const trustWord = h('span', { className: 'sr-only' });
    const unread = h('span', { className: 'unread-badge' });
    const nameSlot = h('span', { className: 'name-slot' });
    const button = h('button', { type: 'button', className: 'friend', 'data-friend': id, onClick: () => actions.selectFriend(id) },
      dot, nameSlot, trust, trustWord, presence, unread);
    const element = h('li', {}, button);
    let shownName = '';
    function update(friend, active, presenceShown, unreadCount, clashes) {
      const label = friendLabel(friend);
      const nameKey = `${label.kind}|${label.text}|${clashes.join(' ')}`;
      if (nameKey !== shownName) {
        nameSlot.replaceChildren(friendNameElement(label, id, clashes));
        shownName = nameKey;
      }
      const trustText = TRUST_LABELS[friend.trust];
      setText(trust, friend.trust === 'verified' ? '✔' : friend.trust === 'changed' ? '⚠' : '?');
      trust.setAttribute('aria-hidden', 'true');
      trust.className = `trust-badge trust-${friend.trust}`;
      button.className = `friend presence-${presenceShown}`;
      setText(presence, presenceLabel(friend, presenceShown));
      const waiting = unconfirmedCount(friend);
      button.setAttribute('data-waiting', String(waiting));
      button.setAttribute('data-contact', String(isContact(friend)));
      // The button's accessible name is its own text (what is seen is what is read), with the words the
      // symbols stand for: "?" unverified, the count "unread".
      setText(trustWord, ` ${trustText} `);
      const shownCount = unreadCount > 99 ? '99+' : String(unreadCount);
      if (unread.firstChild?.nodeValue !== shownCount) unread.replaceChildren(shownCount, h('span', { className: 'sr-only', text: ' unread' }));
      unread.hidden = unreadCount === 0;
      toggleClass(button, 'active', active);
      if (active) button.setAttribute('aria-current', 'true');
      else button.removeAttribute('aria-current');
      button.setAttribute('data-trust', friend.trust);
      button.setAttribute('data-unread', String(unreadCount));

    }
    return { element, update };
  }

  return { root, update, focusAdd: () => addInput.focus(), prefillAdd: (value) => { addInput.value = value; } };
}
