// The words the page shows for what the domain modules decide: server refusals, delivery states, message
// checks, key assessments, the lines a conversation records and the notices the wiring raises. The domain
// keeps codes; only this module and the views turn them into text.
import { JOB_BUDGET_MS } from './cryptoclient.js';

/** ERROR codes answering friend requests, accepts and removals (and our own checks before sending one). */
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
  unavailable: 'The server cannot reach the part of the service that person is connected to right now. Try again in a moment.',
};

/** Why the add-friend form refuses what was typed (friendship.js requestProblem). */
export function requestProblemText(problem, id) {
  if (problem === 'not_an_id') return 'An ID is 6 letters and digits, like K7Q2ZD.';
  if (problem === 'own_id') return 'That is your own ID.';
  if (problem === 'already_friends') return `${id} is already your friend.`;
  return REQUEST_ERROR_TEXT[problem] || problem;
}

/** A server's refusal of a request, as the Error the form or card shows. */
export function requestError(error) {
  return new Error(REQUEST_ERROR_TEXT[error.code] || error.message || String(error.code));
}

/** ERROR codes a MESSAGE can get, and local failures (outbox.js). */
export const SEND_ERROR_TEXT = {
  not_friends: 'not friends any more',
  not_encrypted: 'the server saw no encrypted payload',
  rate_limited: 'sending too fast; try again in a moment',
  peer_busy: 'your friend cannot receive right now',
  unavailable: 'the server cannot reach the part of the service your friend is connected to right now; try again in a moment',
  bad_id: 'invalid recipient ID',
  too_long: 'message too long for the server',
  encrypt_failed: 'could not encrypt',
  too_slow: `encrypting took more than ${JOB_BUDGET_MS / 1000} seconds`,
  session_lost: 'your session ended before it was sent',
  friend_gone: 'your friend has left',
  bad_request: 'the server rejected the request',
  no_mailbox: 'not delivered: your friend is not connected and the server keeps no message for them right now (its mailbox is off or the message is too large)',
  expired: 'not delivered: it waited on the server longer than the server keeps messages, and your friend did not come back in time',
  evicted: 'not delivered: the server\'s mailbox for your friend was full, so it dropped this message',
  contact_restarted: 'not confirmed before your friend came back under a new ID; Retry sends it in the new friendship',
};

/** What the checks of an incoming message found (inbox.js). */
export const INCOMING_PROBLEM_TEXT = {
  bad_signature: 'NOT signed by this friend\'s pinned key',
  undecryptable: 'could not be decrypted with your key',
  malformed: 'malformed message envelope',
  version: 'unknown envelope version',
  wrong_recipient: 'addressed to another key (re-routed?)',
  replay: 'REPLAY: this sequence number was already received',
  replay_copy: 'REPLAY: a copy of a message received in an earlier friendship',
  replay_old: 'REPLAY: written before this friendship began (by the sender\'s signed clock)',
  key_changed: 'sent with a key you have not confirmed',
  oversized: 'payload too large',
  not_pgp: 'not an OpenPGP message',
  too_slow: `REFUSED: decrypting and checking it took more than ${JOB_BUDGET_MS / 1000} seconds`,
  unknown_kind: 'a kind of message this version of SecChat does not know',
};

export const TRUST_LABELS = {
  verified: 'verified',
  unverified: 'unverified',
  changed: 'KEY CHANGED',
};

/** trust.js assessKey's verdicts, as a request card says them. */
export const ASSESSMENT_TEXT = {
  invite_mismatch: 'This key does NOT match the fingerprint in the invite link you opened. Someone may be intercepting.',
  key_changed: 'This ID used a different key earlier in this session, or offered one. Compare fingerprints before trusting it.',
  own_key: 'This is YOUR OWN key. Someone, maybe the server, is sending your key back to you: accepting would let your own messages show up as if this ID wrote them. Accept only if this is you in another tab.',
  pinned_elsewhere: 'This key already belongs to another friend of yours under a different ID. Someone, maybe the server, may be re-using their key to pose as a new contact. Ask that friend before accepting.',
  contact: 'This is the key of one of your contacts: accepting continues that contact under this ID (its conversation and verification stay).',
  invite_match: 'Matches the fingerprint in the invite link: verified.',
  remembered: 'You verified this key before.',
  pinned_before: 'This key belonged to an ID earlier in this session that is gone now: your friend back under a new ID, or someone re-using their public key. Compare fingerprints before trusting it.',
  // A notice, not an alarm: a friend who reloads without "remember" comes back with a new key and the same name.
  name_reused: 'A key with this name was used earlier in this session under another ID, with a different fingerprint: compare fingerprints before trusting it.',
  new: 'New key: compare the fingerprint with your friend to verify it.',
};

/** Why a key was refused ({code, message} from the crypto worker), for its card or a notice. */
export function refusalText(error) {
  if (error && error.code === 'too_slow') {
    return `Checking this key took too long (more than ${JOB_BUDGET_MS / 1000} seconds), so SecChat refused it.`;
  }
  if (error && error.code === 'worker_failed') return 'The key could not be checked: the browser stopped the crypto worker.';
  return (error && error.message) || 'The key could not be read.';
}

/** Frames about one ID dropped unread because too many waited (peerqueue.js): "3 messages from the server were dropped: too many waiting." */
export function droppedText(count) {
  return `${count} message${count === 1 ? '' : 's'} from the server ${count === 1 ? 'was' : 'were'} dropped: too many waiting.`;
}

function unexpectedAcceptText(from, live) {
  return `Ignored an unexpected friend acceptance from ${from}: ${live ? 'they are already your friend' : 'you have no pending request to them'}. The server may be misbehaving.`;
}

// The server says DISCONNECT both when a friend leaves and when their resume window ran out: either way their
// session is over. A dropped connection alone is PRESENCE offline, which the chat shows as "went offline".
const ENDED_LINE = {
  left: (id) => `${id}'s session ended: they left, or were offline too long.`,
  removed: (id) => `${id} removed you as a friend.`,
  removed_by_you: (id) => `You removed ${id}.`,
  session_lost: () => 'Your session ended; this friendship is over.',
};

const STARTED_NOTE = {
  invite_match: 'Key matches your invite link: verified.',
  invite_proof: 'They came through your invite link: key verified.',
  name_reused: ASSESSMENT_TEXT.name_reused,
  pinned_before: ASSESSMENT_TEXT.pinned_before,
  contact: 'Your contact, back under this ID: the same key as before.',
};

/** A conversation's system line (model.js appendSystemLine) as {text, tone}; `friendId` is the friend's ID, never a name. */
export function systemLineText(line, friendId) {
  switch (line.what) {
    case 'started': {
      const warn = line.keyChanged || line.assessment === 'name_reused' || line.assessment === 'pinned_before';
      const note = line.keyChanged ? 'WARNING: key differs from what you expected.'
        : STARTED_NOTE[line.viaInvite ? 'invite_proof' : line.assessment] || 'Key pinned. Compare fingerprints to verify it.';
      return { text: `Friendship started. ${note}`, tone: warn ? 'warn' : 'info' };
    }
    case 'accepted': return { text: `${friendId} accepted your friend request.`, tone: 'info' };
    case 'ended': return { text: (ENDED_LINE[line.reason] || ENDED_LINE.left)(friendId), tone: 'warn' };
    case 'unexpected_accept': return { text: unexpectedAcceptText(friendId, true), tone: 'warn' };
    case 'verified': return { text: 'You marked this key as verified.', tone: 'info' };
    case 'unverified': return { text: 'You marked this key as unverified.', tone: 'info' };
    case 'key_accepted': return { text: 'You chose to continue with the new key (unverified).', tone: 'warn' };
    case 'frames_dropped': return { text: droppedText(line.count), tone: 'warn' };
    case 'contact_ready': return { text: `${friendId} is now a contact: you will find each other again after a reload or a new session, without a new request.`, tone: 'info' };
    case 'contact_kept': return { text: line.reason === 'session_lost' ? 'Your session ended; this contact stays, reached through your private rendezvous.' : `${friendId}'s session ended; the contact stays, and messages wait for them on the server.`, tone: 'info' };
    case 'restored': return { text: 'Contact restored from your contact book.', tone: 'info' };
    case 'contact_merged': return { text: `${friendId} has the key of your contact ${line.from}: the same friend, back under a new ID. The conversation continues here as a new friendship.`, tone: 'info' };
    default: return { text: String(line.what), tone: 'info' };
  }
}

/**
 * A notice (the strip under the top bar) for a code: {tone, text, kind?}. A notice with a kind replaces an
 * earlier one of the same kind, and the wiring removes kinds whose cause is over.
 */
export function noticeText(code, details = {}) {
  switch (code) {
    case 'unexpected_accept':
      return { tone: 'warn', kind: `unexpected-accept-${details.from}`, text: unexpectedAcceptText(details.from, details.live) };
    case 'accept_key_refused':
      return { tone: 'error', text: `${details.from} accepted your request, but SecChat refused their key. ${refusalText(details.refusal)} The friendship was ended.` };
    case 'resume_failed':
      return { tone: 'warn', kind: 'session', text: `Your session could not be resumed (the connection was down too long), so your ID changed from ${details.previousId} to ${details.id}. Friends must add you again: share your new ID or invite link.` };
    case 'taken_over':
      return { tone: 'warn', kind: 'session', text: 'This session was taken over by another tab or device, so this tab is disconnected.' };
    case 'left':
      return { tone: 'info', kind: 'session', text: 'You left. Your ID is gone and your friends were told.' };
    case 'flagged':
      return { tone: 'warn', kind: `flag-${details.from}`, text: `A message from ${details.from} failed a security check.` };
    case 'server_full':
      return { tone: 'warn', kind: 'server', text: 'The server is full. Retrying…' };
    case 'server_error':
      return { tone: 'error', text: `Server error: ${REQUEST_ERROR_TEXT[details.code] || details.code}` };
    case 'remove_failed':
      return { tone: 'error', text: `Could not remove ${details.id}: ${details.message}` };
    case 'not_remembered':
      return { tone: 'warn', text: 'Your key was not remembered: a key without a passphrase is never stored.' };
    case 'notifications_blocked':
      return { tone: 'warn', kind: 'notifications', text: 'Notifications are blocked by the browser for this site.' };
    case 'frames_dropped':
      return { tone: 'warn', kind: 'dropped', text: `${details.from}: ${droppedText(details.count)}` };
    case 'handle_dropped':
      return { tone: 'warn', kind: 'handle-dropped', text: 'The server is short of room: some contacts\' messages wait on it for now. SecChat asks for them again in a few minutes.' };
    case 'handle_taken':
      return { tone: 'warn', kind: 'handle-taken', text: 'SecChat is open with your key in another tab or device: your contacts\' messages go there now. Reload this tab to take them back.' };
    case 'book_refused':
      return { tone: 'error', kind: 'book', text: `Contact book not loaded: ${details.reason}. It is kept as it is, and changes in this tab are not saved: reload to try again.` };
    case 'book_imported':
      return { tone: 'info', kind: 'book', text: `Contact book imported: ${details.added} new, ${details.updated} updated.` };
    case 'book_not_saved':
      return { tone: 'warn', kind: 'book-save', text: `Your contact book could not be saved on this device (${details.reason}). Export it to keep it.` };
    case 'groups_full':
      return { tone: 'warn', kind: 'groups-full', text: `A contact added you to a group, but you are in ${details.max} groups, the most SecChat can listen for at once. Leave a group, then ask them to add you again.` };
    case 'groups_from_contact_full':
      return { tone: 'warn', kind: 'groups-full', text: `${details.who} added you to another group, but ${details.max} of your groups came from them already, the most SecChat takes from one contact, so that one contact cannot fill every group slot. Leave one of those groups and remove it from your list, then ask them again.` };
    case 'internal_error':
      return { tone: 'error', text: `Internal error while handling a server message: ${details.message}` };
    default:
      return { tone: 'info', text: String(code) };
  }
}

/** The body of a desktop notification: it names the sender, never a message's text. */
export function notificationText(what, from) {
  if (what === 'request') return `Friend request from ${from}`;
  if (what === 'accepted') return `${from} accepted your friend request`;
  return `New message from ${from}`;
}
