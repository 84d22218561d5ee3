// The main area while no chat is open: what to do next, on every screen size (a phone's side panel is a
// closed drawer, so "on the left" means nothing there). Share the invite link (copy, QR, share), or add a
// friend by ID, and see whose answer is awaited.
import { h, setText } from './dom.js';
import { createInviteShare } from './share.js';

export function createWelcome({ actions }) {
  const share = createInviteShare({ actions, prefix: 'welcome-', headingLevel: 'h3' });
  const myId = h('code', { className: 'friend-id welcome-id' });
  const waiting = h('ul', { className: 'welcome-waiting' });
  const waitingBlock = h('div', { className: 'stack', hidden: true },
    h('h3', { className: 'label', text: 'Waiting for an answer' }), waiting);
  const friendsHint = h('p', { className: 'muted', hidden: true });
  const root = h('section', { className: 'welcome', 'aria-labelledby': 'welcome-title' },
    h('h2', { className: 'step-title', id: 'welcome-title', text: 'Start a conversation' }),
    friendsHint,
    h('div', { className: 'panel' }, share.root),
    h('div', { className: 'panel' },
      h('h3', { className: 'label', text: 'Or use your ID' }),
      h('p', { className: 'small' }, 'Your ID for this session is ', myId,
        '. It changes every time you open SecChat. Your friend can type it under "Add a friend", or you type theirs:'),
      h('div', { className: 'actions' },
        h('button', { type: 'button', className: 'btn', id: 'welcome-add', text: 'Add a friend by ID', onClick: () => actions.focusAddFriend() }))),
    waitingBlock);

  function update(state) {
    share.update(state);
    setText(myId, state.session.id || '······');
    const live = [...state.friends.values()].filter((f) => f.status === 'friends').length;
    friendsHint.hidden = state.friends.size === 0;
    setText(friendsHint, live > 0
      ? `You have ${live} friend${live === 1 ? '' : 's'} in this session: open a chat from your friends list (on a phone, the ≡ button at the top).`
      : 'Open a past chat from your friends list, or start a new one.');
    const pending = [...state.outgoingRequests.values()].filter((r) => r.state === 'pending');
    waitingBlock.hidden = pending.length === 0;
    waiting.replaceChildren(...pending.map((r) => h('li', { 'data-waiting': r.id }, 'Request sent to ', h('strong', { className: 'friend-id', text: r.id }), ': waiting for them to accept.')));
  }

  return { root, update, focusMain: () => share.focusCopy() };
}
