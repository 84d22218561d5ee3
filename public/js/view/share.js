// Sharing the user's invite link: what the ID is and why the link is better, the link with a copy button, a
// QR code drawn in the page, and the Web Share API where the browser has one. Used in the side panel and on
// the main area's start screen; `prefix` keeps their element IDs apart.
//
// Each hand-out (copy, share, a QR code drawn) takes the link shown and its one-time secret for one friend,
// and the link shown moves on to a new secret (actions.takeInviteLink): two friends never get the same link.
import { copyButton, h, setText } from './dom.js';
import { qrCanvas } from './qr.js';
import { parseInvite } from '../invite.js';

export function createInviteShare({ actions, prefix, headingLevel = 'h3' }) {
  const link = h('code', { className: 'invite-link', id: `${prefix}invite-link` });
  // Copied by hand (select, Ctrl+C) it is handed out as well.
  link.addEventListener('copy', () => actions.takeInviteLink());
  const qrSlot = h('div', { className: 'qr-slot', id: `${prefix}qr`, hidden: true });
  const qrButton = h('button', {
    type: 'button', className: 'btn btn-small', text: 'Show QR code', 'aria-expanded': 'false', 'aria-controls': `${prefix}qr`,
    onClick: () => toggleQr(),
  });
  const shareError = h('p', { className: 'form-error small', role: 'alert' });
  // Only where the browser can share (phones, mostly); elsewhere copy and QR do the job.
  const canShare = typeof navigator.share === 'function';
  const shareButton = canShare ? h('button', {
    type: 'button', className: 'btn btn-small btn-primary', text: 'Share', 'aria-label': 'Share your invite link',
    onClick: async () => {
      setText(shareError, '');
      try {
        await navigator.share({ title: 'Chat with me on SecChat', url: actions.takeInviteLink() });
      } catch (error) {
        if (error && error.name !== 'AbortError') setText(shareError, 'Sharing did not work here: copy the link instead.');
      }
    },
  }) : null;
  const copy = copyButton('Copy your invite link', () => actions.takeInviteLink(), () => link);
  const root = h('div', { className: 'invite-share' },
    h(headingLevel, { className: 'label', id: `${prefix}invite-title`, text: 'Your invite link: the best way to add you' }),
    h('p', { className: 'small muted', text: 'It carries your ID and your key\'s fingerprint: your friend\'s SecChat checks your key by itself, and you see that their request came through your link. Send it over a channel you trust. Each copy, share or QR code is a new link with its own one-time secret, for one friend: the link shown changes once you have copied it.' }),
    h('div', { className: 'invite-line' }, link,
      h('div', { className: 'invite-buttons' }, copy, qrButton, shareButton)),
    shareError,
    qrSlot);

  let qrLink = null; // {id, secret} of the link the open QR code shows
  function toggleQr(open = qrSlot.hidden) {
    qrSlot.hidden = !open;
    qrButton.setAttribute('aria-expanded', String(open));
    setText(qrButton, open ? 'Hide QR code' : 'Show QR code');
    if (open) drawQr();
    else {
      // Shown again, it is another hand-out with a new link.
      qrSlot.replaceChildren();
      qrLink = null;
    }
  }

  function drawQr() {
    const text = actions.takeInviteLink();
    if (!text) return;
    qrLink = parseInvite(new URL(text).hash);
    qrSlot.replaceChildren(qrCanvas(text, 'QR code of your invite link'),
      h('p', { className: 'small muted', text: 'Your friend scans this with their phone\'s camera. It is a link for one friend: show it again for the next.' }));
  }

  function update(state) {
    const text = state.session.id && state.inviteSecrets.length > 0 ? actions.inviteLink() : '';
    setText(link, text);
    qrButton.disabled = !text;
    if (shareButton) shareButton.disabled = !text;
    // An open code whose link stopped working (a new ID, or its secret used or forgotten) is drawn anew.
    if (!qrSlot.hidden && text && (!qrLink || qrLink.id !== state.session.id || !state.inviteSecrets.includes(qrLink.secret))) drawQr();
  }

  return { root, update, focusCopy: () => copy.focus() };
}
