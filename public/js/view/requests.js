// Incoming friend requests, where the eye is: at the top of the main area on every screen size (a phone's
// drawer is closed, and on a desktop the side panel's lower half is below the fold). At most
// REQUEST_CARDS_SHOWN cards are in the DOM; the rest are counted ("Show more" adds as many again). Requests
// from IDs an invite link named come first, then those that proved our invite link's secret. The name on a
// request's key is attacker-chosen: it is shown cleaned and bounded (names.js) and marked as chosen by its
// owner, never where the page's own verdicts go, and flagged when it reads like a friend's name or ID.
import { fingerprintElement, h, setText, toggleClass } from './dom.js';
import { WITHDRAWN_NOTE_MS, inviteStatus } from '../requests.js';
import { friendsNamedLike, keyName } from '../names.js';
import { ASSESSMENT_TEXT, refusalText } from '../text.js';
import { assessKey, isAlarm, otherIdsPinnedTo, otherKeysNamed, otherOfferedKeys } from '../trust.js';

const SHOWN_OTHER_KEYS = 3; // a server can repeat a request without end: name the first few, count the rest
// Any ID can send requests: at most this many cards are in the DOM, the rest are counted ("Show more" adds as
// many again). Requests from IDs an invite link named come first, then those that proved our link's secret.
export const REQUEST_CARDS_SHOWN = 20;

export function createRequestsPanel({ actions }) {
  const requestsList = h('ul', { className: 'request-list', 'aria-labelledby': 'requests-title' });
  const moreText = h('span', { className: 'muted small' });
  const moreButton = h('button', {
    type: 'button', className: 'btn btn-small', text: `Show ${REQUEST_CARDS_SHOWN} more`,
    onClick: () => {
      cardLimit += REQUEST_CARDS_SHOWN;
      actions.redraw();
    },
  });
  const moreLine = h('p', { className: 'request-more', hidden: true }, moreText, ' ', moreButton);
  const ignoredLine = h('p', { className: 'request-ignored small', role: 'status', hidden: true });
  const requests = h('section', { className: 'panel requests', id: 'requests', 'aria-labelledby': 'requests-title', hidden: true },
    h('h2', { className: 'panel-title', id: 'requests-title', text: 'Friend requests' }),
    h('p', { className: 'small muted', text: 'Accept only people you know: they get your public key and can write to you.' }),
    requestsList, moreLine, ignoredLine);

  // id -> {element, number, assessment, otherKeys, moreOtherKeys, swapSlot, invite, inviteSlot, clashes,
  // clashSlot}: the cards in the DOM
  const requestViews = new Map();
  const withdrawnNotes = new Map(); // id -> note element standing where a withdrawn request's card was
  let cardLimit = REQUEST_CARDS_SHOWN;

  /**
   * Draws at most `cardLimit` cards. Only cards that appear, disappear or change are touched: a flood of
   * requests costs one pass over the pending requests per animation frame, not a rebuilt list per request.
   */
  function updateRequests(state) {
    const visible = visibleRequests(state);
    const assess = (request) => (request.fingerprint ? assessKey(state, request.id, request.fingerprint, request.userId) : '');
    for (const [id, view] of requestViews) {
      const request = state.incomingRequests.get(id);
      // A request's number tells it from a later request by the same ID; only its other keys ever change.
      if (!request || !visible.includes(request) || view.number !== request.number || view.assessment !== assess(request)) {
        if (!request && state.withdrawnRequests.has(id)) showWithdrawn(id, view.element);
        else view.element.remove();
        requestViews.delete(id);
      } else {
        // Only a warning changes: rebuilding the card would move the Accept button under the user's pointer.
        if (view.otherKeys !== request.otherKeys || view.moreOtherKeys !== request.moreOtherKeys) {
          view.swapSlot.replaceChildren(...swapWarning(request));
          view.otherKeys = request.otherKeys;
          view.moreOtherKeys = request.moreOtherKeys;
        }
        // What its invite proof is worth changes when another request proves the same secret, or the secret goes.
        const invite = inviteStatus(state, request);
        if (view.invite !== invite) {
          view.inviteSlot.replaceChildren(...inviteNote(invite));
          toggleClass(view.element, 'request-notice', !view.element.classList.contains('request-warn') && (invite === 'shared' || view.notice));
          view.invite = invite;
        }
        const clashes = nameClashesOf(state, request).join(' ');
        if (view.clashes !== clashes) {
          view.clashSlot.replaceChildren(...clashNote(clashes));
          view.clashes = clashes;
        }
      }
    }
    for (const request of visible) {
      // The ID asked again: its card replaces the note.
      withdrawnNotes.get(request.id)?.remove();
      withdrawnNotes.delete(request.id);
    }
    let cursor = requestsList.firstChild;
    for (const request of visible) {
      let view = requestViews.get(request.id);
      if (!view) {
        const assessment = assess(request);
        const earlierNamed = assessment === 'name_reused' ? otherKeysNamed(state, request.userId, request.fingerprint) : [];
        const earlierOffered = request.fingerprint && !state.pins.has(request.id) ? otherOfferedKeys(state, request.id, request.fingerprint) : [];
        const sharedWith = ['pinned_elsewhere', 'pinned_before', 'contact'].includes(assessment) ? otherIdsPinnedTo(state, request.id, request.fingerprint) : [];
        const swapSlot = h('div', { className: 'request-swap-slot' }, ...swapWarning(request));
        const invite = inviteStatus(state, request);
        const inviteSlot = h('div', { className: 'request-invite-slot' }, ...inviteNote(invite));
        const clashes = nameClashesOf(state, request).join(' ');
        const clashSlot = h('div', { className: 'request-clash-slot' }, ...clashNote(clashes));
        const ended = state.endedFriendships.get(request.id);
        const element = requestCard(request, assessment, { earlierNamed, earlierOffered, sharedWith, ended, swapSlot, inviteSlot, clashSlot, invite });
        view = {
          element, number: request.number, assessment, otherKeys: request.otherKeys, moreOtherKeys: request.moreOtherKeys, swapSlot,
          invite, inviteSlot, clashes, clashSlot, notice: assessment === 'name_reused' || assessment === 'pinned_before' || Boolean(ended),
        };
        requestViews.set(request.id, view);
      }
      // Withdrawal notes stay where they are; cards keep their order, and only a new card is inserted.
      while (cursor && withdrawnNotes.has(cursor.dataset.withdrawn)) cursor = cursor.nextSibling;
      if (view.element !== cursor) requestsList.insertBefore(view.element, cursor);
      else cursor = cursor.nextSibling;
    }
    const hiddenCount = state.incomingRequests.size - visible.length;
    moreLine.hidden = hiddenCount <= 0;
    setText(moreText, `…and ${hiddenCount} more request${hiddenCount === 1 ? '' : 's'}.`);
    ignoredLine.hidden = state.requestsIgnored === 0;
    setText(ignoredLine, `${state.requestsIgnored} more request${state.requestsIgnored === 1 ? ' was' : 's were'} ignored: too many are pending.`);
    requests.hidden = state.incomingRequests.size === 0 && withdrawnNotes.size === 0 && state.requestsIgnored === 0;
  }

  /**
   * The first `cardLimit` pending requests: those from IDs an invite link named first, then those that proved
   * a secret of our invite link (no server can make that proof, so no flood of requests pushes them out of
   * sight), then by arrival.
   */
  function visibleRequests(state) {
    const visible = [];
    for (const id of state.expectations.keys()) {
      const request = state.incomingRequests.get(id);
      if (request && visible.length < cardLimit) visible.push(request);
    }
    const proving = (request) => ['proved', 'shared'].includes(inviteStatus(state, request));
    for (const first of [true, false]) {
      for (const request of state.incomingRequests.values()) {
        if (visible.length >= cardLimit) break;
        if (!state.expectations.has(request.id) && proving(request) === first) visible.push(request);
      }
    }
    return visible;
  }

  /** Friends whose name or ID the request's key name reads like (names.js). */
  function nameClashesOf(state, request) {
    return request.fingerprint ? friendsNamedLike(state, keyName(request.userId), request.id) : [];
  }

  /** A short note where a card was, when its request was withdrawn while the user could see it. */
  function showWithdrawn(id, card) {
    const note = h('li', { className: 'request-withdrawn muted small', role: 'status', 'data-withdrawn': id,
      text: `${id} withdrew the friend request (their session ended).` });
    withdrawnNotes.get(id)?.remove();
    withdrawnNotes.set(id, note);
    card.replaceWith(note);
    setTimeout(() => {
      if (withdrawnNotes.get(id) !== note) return;
      note.remove();
      withdrawnNotes.delete(id);
      actions.redraw();
    }, WITHDRAWN_NOTE_MS);
  }

  function requestCard(request, assessment, { earlierNamed, earlierOffered, sharedWith, ended, swapSlot, inviteSlot, clashSlot, invite }) {
    const usable = Boolean(request.fingerprint);
    const accept = h('button', { type: 'button', className: 'btn btn-primary', text: 'Accept', 'aria-label': `Accept friend request from ${request.id}`, disabled: !usable });
    const decline = h('button', { type: 'button', className: 'btn', text: 'Decline', 'aria-label': `Decline friend request from ${request.id}` });
    const error = h('p', { className: 'form-error small', role: 'alert' });
    const run = async (button, work) => {
      accept.disabled = true;
      decline.disabled = true;
      try {
        await work();
      } catch (failure) {
        setText(error, failure.message);
        accept.disabled = !usable;
        decline.disabled = false;
      }
    };
    accept.addEventListener('click', () => run(accept, () => actions.acceptRequest(request.id)));
    decline.addEventListener('click', () => run(decline, () => actions.declineRequest(request.id)));
    const warn = isAlarm(assessment) || request.otherKeys.length > 0 || !usable;
    // A reused name or key is a notice (amber), not an alarm: a friend back after a reload or an ID change
    // causes it too.
    const noticeOnly = assessment === 'name_reused' || assessment === 'pinned_before';
    const notice = noticeOnly || Boolean(ended) || invite === 'shared';
    const assessmentClass = isAlarm(assessment) ? ' assessment-warn' : noticeOnly ? ' assessment-notice' : '';
    return h('li', { className: `request-card${warn ? ' request-warn' : notice ? ' request-notice' : ''}`, 'data-request': request.id, 'data-assessment': assessment || 'refused' },
      h('p', {}, 'From ', h('strong', { className: 'friend-id', text: request.id })),
      ended ? endedNotice(ended) : null,
      usable
        ? [h('div', { className: 'request-key' }, h('span', { className: 'label small', text: 'Key fingerprint' }), fingerprintElement(request.fingerprint)),
          keyName(request.userId) ? h('p', { className: 'key-name muted small', text: `Name on their key (chosen by its owner, not checked): ${keyName(request.userId)}` }) : null,
          clashSlot,
          inviteSlot,
          h('p', { className: `assessment small${assessmentClass}`, role: assessmentClass === ' assessment-warn' ? 'alert' : 'status', text: ASSESSMENT_TEXT[assessment] }),
          sharedWith.length > 0 ? h('p', { className: 'request-shared-with small', text: `Pinned to: ${sharedWith.slice(0, SHOWN_OTHER_KEYS).join(', ')}` }) : null,
          earlierNamed.length > 0 ? keyList('request-name-clash', 'Earlier key with this name:', earlierNamed) : null,
          earlierOffered.length > 0 ? keyList('request-offered-before', 'Key offered earlier for this ID:', earlierOffered.slice(0, SHOWN_OTHER_KEYS)) : null]
        : h('p', { className: 'form-error small request-refused', role: 'alert', text: `Key refused. ${refusalText(request.refusal)}` }),
      swapSlot,
      // Decline first, as in the page's dialogs (the confirming button last): Tab into a card, from anywhere
      // before it or after a card above was answered, reaches Decline before Accept.
      h('div', { className: 'actions' }, decline, accept),
      error);
  }

  /**
   * The server told us, in this page, that this ID left or removed us. It can fake that, then forge a request
   * from the same ID with the same key: the new friendship restarts `seq`, and the old messages could be
   * replayed (inbox.js flags copies and old ones, but the user should know why the card is here).
   */
  function endedNotice({ reason, at }) {
    const minutes = Math.max(0, Math.round((Date.now() - at) / 60000));
    const ago = minutes === 0 ? 'less than a minute ago' : `${minutes} minute${minutes === 1 ? '' : 's'} ago`;
    const what = reason === 'removed' ? 'removed you as a friend' : 'ended its session';
    return h('p', { className: 'request-ended small', role: 'status',
      text: `⚠ The server said this ID ${what} ${ago}. A server can fake that to restart the conversation and replay old messages: ask your friend whether they really did.` });
  }

  /** What the request's invite proof says (requests.js inviteStatus), in words. */
  function inviteNote(invite) {
    switch (invite) {
      case 'proved':
        return [h('p', { className: 'request-via-invite small', 'data-via-invite': 'true', text: '✉ Came through your invite link: the request proves its sender opened your link, for this very key. Accepting marks the key verified.' })];
      case 'shared':
        return [h('p', { className: 'request-via-invite-shared small assessment-notice', role: 'status', 'data-via-invite': 'shared',
          text: '⚠ Another request proved the same invite link: it reached more than one person, so it verifies neither. Ask your friend which ID is theirs, and compare fingerprints after accepting.' })];
      case 'used':
        return [h('p', { className: 'request-not-via-invite small muted', 'data-via-invite': 'used', text: 'Came through an invite link that is used up or expired: it verifies nothing now. Compare fingerprints after accepting.' })];
      default:
        return [h('p', { className: 'request-not-via-invite small muted', 'data-via-invite': 'false', text: 'Not through your invite link (sent to your ID): compare fingerprints after accepting.' })];
    }
  }

  /** The key's name reads like these friends' (space-separated IDs): the same warning as in the friends list. */
  function clashNote(clashes) {
    if (!clashes) return [];
    const ids = clashes.split(' ');
    return [h('p', { className: 'name-clash small', 'data-name-clash': clashes, text: `⚠ same name as ${ids.join(', ')}: the name on a key is chosen by its owner` })];
  }

  /** A repeated request from the same ID brought another key: the first one is kept (requests.js keepFirstKey). */
  function swapWarning(request) {
    if (request.otherKeys.length === 0) return [];
    const fingerprints = request.otherKeys.filter((fp) => fp !== 'unreadable');
    const shown = fingerprints.slice(0, SHOWN_OTHER_KEYS); // requests.js keeps no more than these
    const more = fingerprints.length - shown.length + request.moreOtherKeys;
    return [h('div', { className: 'banner banner-danger request-swap-warning', role: 'alert' },
      h('strong', { text: '⚠ A second request from this ID came with a different key' }),
      h('p', { className: 'small', text: 'The server should never send a request twice. Someone may be trying to swap the key while you compare it. The key shown above is the first one received; accept only if your friend confirms that fingerprint over another channel.' }),
      shown.length > 0 ? keyList('', 'The other key (ignored):', shown) : null,
      more > 0 ? h('p', { className: 'small request-more-keys', text: `…and ${more} more request${more === 1 ? '' : 's'} with other keys.` }) : null,
      fingerprints.length < request.otherKeys.length ? h('p', { className: 'small', text: 'Another request carried an unreadable key.' }) : null)];
  }

  function keyList(className, label, fingerprints) {
    return h('div', { className }, h('span', { className: 'label small', text: label }), fingerprints.map((fp) => fingerprintElement(fp)));
  }


  return { root: requests, update: updateRequests };
}
