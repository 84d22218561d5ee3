// The one entry to the client's domain logic: transition(state, event) → {state, effects}. Pure: no DOM, no
// network, no crypto, no clock (events carry `now`); the state given is never changed (model.js). The wiring
// (app.js, effects.js) applies the new state, renders it, and carries out the effects, whose outcomes come
// back as further events.
//
// Events, by where they come from:
// - the transport: connected {id, version, resumed, resumeAttempted, friends, limits}, status {status},
//   frame {frame, epoch} (a server frame about a peer or UNDELIVERED; `epoch` is the session it arrived in)
// - the event order (peerqueue.js): framesDropped {from, count} (frames about `from` dropped unread: too many waited)
// - effects done: keyChecked {purpose:'request'|'accept', from, publicArmored, key|refusal, epoch},
//   opened {peer, incoming, opened}, sealed {peer, localId, friendship, seq, payload},
//   sealFailed {peer, localId, code}, acked {peer, localId, queued}, sendFailed {peer, localId, code},
//   backoffOver {peer, localId}
// - the wiring: inviteSecretCreated {secret} (answering inviteSecretNeeded); contacts (contacts.js):
//   rendezvousSecretCreated {peer, secret}, handlesDerived {day, listen, send}, handlesSupported {supported},
//   probeContacts, probeSent {peer, nonce}, controlSent {peer, purpose, code}, bookLoaded {contacts}; groups
//   (groups.js): groupPut {group}, groupForgotten {gid}, groupsForgottenLoaded {forgotten}, groupHandlesDerived {listen, send}, groupAlertsDismissed {gid}
// - the user: inviteLinkTaken {secret, fresh} (the link shown was copied, shared or shown as a QR code; `fresh`
//   is the next secret, drawn by the wiring)
// - the user: identityReady, inviteOpened {id, fingerprint, secret}, nicknameSet {id, nickname}, requestSent, sentRequestDismissed, requestAccepted, requestClosed,
//   friendRemoved, chatClosed, messageWritten {id, text}, messageRetried {id, localId}, messageRevealed,
//   keyVerified, keyUnverified, changedKeyAccepted, left, newSession
// Events that depend on time carry `now` (ms, the page's clock).
//
// Effects (data; effects.js carries them out): send {frame} (no answer awaited), checkKey {purpose, from,
// publicArmored, epoch}, open {peer, payload, publicArmored, incoming}, seal {peer, localId, friendship, seq,
// envelope, publicArmored}, transmit {peer, localId, frame, persist} (persist: the contact book must hold
// this state before the frame leaves), retryLater {peer, localId, ms},
// notice {code, …} (text.js noticeText), notify {what, from}, incoming {from, flagged}, show {id},
// moved {from, to} (a contact's entry moved to a new ID: its open chat goes with it),
// inviteSecretNeeded (draw a new secret for our invite link), sendControl {peer, purpose, kind, fields, to, route,
// publicArmored} (seal a §6 control envelope and send it to `route` without a chat line), groupFromContact {peer, text}
// (a group envelope a contact sent us: groupsync.js). checkKey for a request that carries an invite
// proof also has {invite, inviteSecrets, ownFingerprint}, and its keyChecked answer {viaInvite}.
import * as contacts from './contacts.js';
import * as friendship from './friendship.js';
import * as groups from './groups.js';
import { messageOpened, revealMessage } from './inbox.js';
import { begin } from './model.js';
import {
  acked, backoffOver, retryMessage, sealFailed, sealed, sendFailed, writeMessage,
} from './outbox.js';

const HANDLERS = {
  connected: friendship.connected,
  status: friendship.statusChanged,
  frame: friendship.frameArrived,
  framesDropped: friendship.framesDropped,
  keyChecked: friendship.keyChecked,
  opened: messageOpened,
  sealed,
  sealFailed,
  acked,
  sendFailed,
  backoffOver,
  identityReady: friendship.identityReady,
  inviteOpened: friendship.inviteOpened,
  inviteSecretCreated: friendship.inviteSecretCreated,
  inviteLinkTaken: friendship.inviteLinkTaken,
  nicknameSet: friendship.nicknameSet,
  requestSent: friendship.requestSent,
  sentRequestDismissed: friendship.sentRequestDismissed,
  requestAccepted: friendship.requestAccepted,
  requestClosed: friendship.requestClosed,
  // A contact is told by a signed `remove` to its handle first (contacts.js), then the friendship ends here.
  friendRemoved: (next, event) => {
    contacts.contactRemoved(next, event);
    friendship.friendRemoved(next, event);
  },
  chatClosed: friendship.chatClosed,
  messageWritten: (next, { id, text, now }) => writeMessage(next, id, text, now),
  messageRetried: (next, { id, localId, now }) => retryMessage(next, id, localId, now),
  messageRevealed: revealMessage,
  keyVerified: friendship.keyVerified,
  keyUnverified: friendship.keyUnverified,
  changedKeyAccepted: friendship.changedKeyAccepted,
  left: friendship.left,
  newSession: friendship.newSession,
  // contacts (contacts.js): the wiring's secrets and handles, the server's §10 answer, probes, the book
  rendezvousSecretCreated: contacts.rendezvousSecretCreated,
  handlesDerived: contacts.handlesDerived,
  handlesSupported: contacts.handlesSupported,
  probeContacts: contacts.probeContacts,
  probeSent: contacts.probeSent,
  controlSent: contacts.controlSent,
  bookLoaded: contacts.bookLoaded,
  // groups (groups.js): records made by groupsync.js
  groupPut: groups.groupPut,
  groupForgotten: groups.groupForgotten,
  groupsForgottenLoaded: groups.groupsForgottenLoaded,
  groupHandlesDerived: groups.groupHandlesDerived,
  groupAlertsDismissed: groups.groupAlertsDismissed,
};

/** Applies `event` to `state`. An event of an unknown type changes nothing. */
export function transition(state, event) {
  const next = begin(state);
  const handler = HANDLERS[event.type];
  if (handler) handler(next, event);
  return next;
}
