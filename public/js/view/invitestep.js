// An invite link the user opened, as the main area's first step on every screen size: "Send a friend request
// to K7Q2ZD?", with the fingerprint the link promises. Nothing is sent before the click.
import { fingerprintElement, h, nodes, setText } from './dom.js';

export function createInviteStep({ actions }) {
  const title = h('h2', { className: 'step-title', id: 'invite-title', tabindex: '-1' });
  const body = h('div', { className: 'stack' });
  const error = h('p', { className: 'form-error small', role: 'alert' });
  const root = h('section', { className: 'panel invite-card invite-step', 'aria-labelledby': 'invite-title', hidden: true }, title, body, error);
  let shown = '';

  function update(state) {
    const invite = state.invite;
    const key = invite ? `${invite.id}|${invite.fingerprint}|${state.session.id}` : '';
    root.hidden = !invite;
    if (key === shown) return;
    shown = key;
    if (!invite) return;
    const own = invite.id === state.session.id;
    setText(title, own ? 'This is your own invite link' : `Send a friend request to ${invite.id}?`);
    setText(error, '');
    const send = h('button', {
      type: 'button', className: 'btn btn-primary', id: 'invite-send', text: 'Send friend request', onClick: async () => {
        send.disabled = true;
        setText(error, '');
        try {
          await actions.useInvite();
        } catch (failure) {
          setText(error, failure.message);
          send.disabled = false;
        }
      },
    });
    body.replaceChildren(...nodes(own
      ? [h('p', { text: 'Send it to a friend instead: when they open it, they are asked to send you a request.' })]
      : [
        h('p', {}, 'You opened an invite link from ', h('strong', { className: 'friend-id', text: invite.id }),
          '. When they accept your request, you can chat. Their key must match this fingerprint from the link; SecChat checks it for you and marks them verified.'),
        h('span', { className: 'label', text: 'Their key fingerprint (from the link)' }),
        fingerprintElement(invite.fingerprint),
        invite.secret ? h('p', { className: 'small muted', text: 'Your request proves you opened their link, so they see it came from you.' }) : false,
      ]),
    h('div', { className: 'actions' },
      own ? false : send,
      h('button', { type: 'button', className: 'btn', text: own ? 'Dismiss' : 'Not now', onClick: () => actions.dismissInvite() })));
  }

  return { root, update, focus: () => title.focus() };
}
