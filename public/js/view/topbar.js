// The top bar (a skip link, the drawer toggle, the page's h1, connection status, own ID) and the notice strip
// under it. Leaving is at the end of the side panel, not the first thing Tab reaches.
import { h, setText, toggleClass } from './dom.js';

const STATUS_TEXT = {
  idle: 'starting',
  connecting: 'connecting…',
  resuming: 'resuming session…',
  online: 'online',
  reconnecting: 'reconnecting',
  offline: 'offline',
  left: 'left',
  taken_over: 'opened elsewhere',
};

export function createTopbar({ actions }) {
  const unreadBadge = h('span', { className: 'unread-badge', 'aria-hidden': 'true', hidden: true });
  const toggle = h('button', {
    type: 'button', className: 'btn btn-icon drawer-toggle', 'aria-controls': 'sidebar', 'aria-expanded': 'false',
    'aria-label': 'Show friends and requests', onClick: () => actions.toggleDrawer(),
  }, h('span', { className: 'burger', 'aria-hidden': 'true', text: '≡' }), unreadBadge);
  const dot = h('span', { className: 'status-dot', 'aria-hidden': 'true' });
  const statusText = h('span', { className: 'status-text', role: 'status' });
  // The countdown ticks twice a second: kept out of the live region so screen readers are not flooded.
  const countdown = h('span', { className: 'status-countdown', 'aria-hidden': 'true' });
  const status = h('div', { className: 'conn-status', id: 'conn-status' }, dot, statusText, countdown);
  const myId = h('span', { className: 'topbar-id' }, h('span', { className: 'label', text: 'ID ' }), h('code', { className: 'my-id-small', id: 'topbar-id' }));
  // It lands on something to type in or a harmless action (actions.focusMain), never on the main area itself:
  // the first Tab stop after that would be a request card's Accept, and Enter would befriend a stranger.
  const skip = h('a', { className: 'skip-link', href: '#chat-area', text: 'Skip to the conversation', onClick: (event) => {
    event.preventDefault();
    actions.focusMain();
  } });
  const root = h('header', { className: 'topbar' },
    skip,
    toggle,
    h('h1', { className: 'brand' }, h('span', { className: 'prompt', 'aria-hidden': 'true', text: '>' }), 'secchat',
      h('span', { className: 'cursor', 'aria-hidden': 'true', text: '_' })),
    status,
    myId);

  let retryTimer = null;
  let countingTo = 0;
  function update(state) {
    const { status: connection, retryAt } = state.connection;
    root.setAttribute('data-status', connection);
    status.setAttribute('data-status', connection);
    setText(statusText, STATUS_TEXT[connection] || connection);
    const target = connection === 'reconnecting' ? retryAt : 0;
    if (target !== countingTo) {
      countingTo = target;
      clearInterval(retryTimer);
      setText(countdown, '');
      if (target > 0) {
        const tick = () => setText(countdown, ` in ${Math.max(0, Math.ceil((target - Date.now()) / 1000))} s`);
        tick();
        retryTimer = setInterval(tick, 500);
      }
    }
    setText(myId.lastChild, state.session.id || '······');
    setText(skip, state.activeFriendId && state.friends.has(state.activeFriendId) ? 'Skip to the conversation' : 'Skip to the start screen');
    const unread = [...state.unread.values()].reduce((sum, count) => sum + count, 0) + state.incomingRequests.size;
    setText(unreadBadge, String(unread));
    unreadBadge.hidden = unread === 0;
    toggle.setAttribute('aria-expanded', String(state.drawerOpen));
    toggle.setAttribute('aria-label', state.drawerOpen ? 'Hide friends and requests' : `Show friends and requests${unread ? ` (${unread} new)` : ''}`);
    toggleClass(document.body, 'drawer-open', state.drawerOpen);
  }

  return { root, update };
}

/** Notices: session lost, taken over, errors. Dismissable; the newest is announced. */
export function createNotices({ actions }) {
  const root = h('div', { className: 'notices', 'aria-live': 'assertive', id: 'notices' });
  const shown = new Map(); // notice id -> element
  function update(state) {
    const current = new Set(state.notices.map((notice) => notice.id));
    for (const [id, element] of shown) {
      if (!current.has(id)) {
        element.remove();
        shown.delete(id);
      }
    }
    for (const notice of state.notices) {
      if (shown.has(notice.id)) continue;
      const element = h('div', { className: `banner banner-${notice.tone}`, 'data-notice': notice.kind || '' },
        h('p', { text: notice.text }),
        notice.action
          ? h('button', { type: 'button', className: 'btn btn-small btn-primary', text: notice.action.label, onClick: notice.action.run })
          : null,
        h('button', { type: 'button', className: 'btn btn-small', text: 'dismiss', 'aria-label': 'Dismiss this notice', onClick: () => actions.dismissNotice(notice.id) }));
      shown.set(notice.id, element);
      root.append(element);
    }
  }
  return { root, update };
}
