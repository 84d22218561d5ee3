// The words the page uses for groups: system lines, a message's problems, members' trust states. Names come
// from the member list an admin signed (cleaned, names.js), so a line says who did what in the group's own
// words. Pure.
import { cleanName } from './names.js';

const NAME_MAX = 40;

/** What a member is called in `group`: the name in the newest version that lists them, else a fingerprint's end. */
export function memberName(group, fp, me) {
  if (fp === me) return 'you';
  for (let i = group.list.history.length - 1; i >= 0; i -= 1) {
    const m = group.list.history[i].members.find((x) => x.fp === fp);
    if (m) return cleanName(m.name, NAME_MAX) || `…${fp.slice(-8)}`;
  }
  return fp ? `someone outside the group (key …${fp.slice(-8)})` : 'someone';
}

export const GROUP_TRUST_TEXT = {
  you: 'you',
  verified: 'verified',
  unverified: 'not verified',
  changed: 'key changed',
  missing: 'key missing: cannot be written to',
};

export const GROUP_PROBLEM_TEXT = {
  members_disagree: 'Members disagree on who is in the group: this message names another member list.',
  not_member: 'Its sender is not a member of the list it names.',
  extra_recipient: 'It was also encrypted to someone outside the group.',
  sender_removed: 'Its sender was removed from the group.',
  replay: 'REPLAY: a message with this number from this sender said something else.',
  own_message: 'It is signed with your own key, but you did not write it here.',
  unknown_version: 'It names a member list too old to check.',
  wrong_group: 'It belongs to another group.',
};

/** Why leaving is refused (grouplist.js leaveProblem). */
export const LEAVE_PROBLEM_TEXT = {
  last_admin: 'You are this group\'s only admin: make another member an admin before you leave, or nobody can change the group again.',
};

const REFUSAL_TEXT = {
  not_admin: 'signed by someone not allowed to make it',
  not_allowed: 'signed by someone not allowed to make it',
  wrong_prev: 'it does not follow the member list you hold',
  removed_without_new_secret: 'it removes a member but keeps the group\'s secret',
  bad_was: 'it gives a new key to someone who was not a member, or to a member who stays',
  superseded: 'it builds on a change that lost to another',
  too_late: 'it came after the group had moved on',
  too_old: 'it builds on a member list too old to check',
  wrong_group: 'it belongs to another group',
  gap: 'an earlier change is missing',
  not_in_list: 'a key for someone not in the group',
  unknown_version: 'it names a member list too old to check',
};

/** Why a change of ours that lost to one made at the same time was not made again (groupsync.js redoDropped). */
const REDO_PROBLEM_TEXT = {
  done: 'the group already is as your change would make it',
  not_admin: 'you are no longer an admin',
  not_allowed: 'it would now take rights from an admin senior to you',
  again: 'it lost to another change a second time; make it again yourself if it is still wanted',
  unreachable: 'the friends it added can no longer be reached',
  failed: 'it could not be applied',
};

function changeText(group, change, me) {
  if (!change) return 'changed the group';
  const parts = [];
  if (change.add.length) parts.push(`added ${change.add.map((m) => memberName(group, m.fp, me)).join(', ')}`);
  if (change.remove.length) parts.push(`removed ${change.remove.map((fp) => memberName(group, fp, me)).join(', ')}`);
  if (change.replaced?.length) parts.push(`gave ${change.replaced.map((r) => memberName(group, r.fp, me)).join(', ')} a new key`);
  if (change.name) parts.push(`renamed the group to "${cleanName(change.name, NAME_MAX)}"`);
  if (Object.keys(change.admin).length) parts.push('changed who are admins');
  if (Object.keys(change.rename).length) parts.push('renamed members');
  return parts.length ? parts.join('; ') : 'changed the group';
}

/** A message's delivery line: how many members have it, and how many copies the server could not deliver. */
export function deliveryText({ have, of, unreached }) {
  const counted = `${have} of ${of} have it`;
  return unreached.length ? `${counted} · ${unreached.length} could not be reached` : counted;
}

/** The text of a system line of a group (groupsync.js `what`). */
export function groupLineText(group, line, me) {
  const who = (fp) => memberName(group, fp, me);
  const capital = (text) => text.charAt(0).toUpperCase() + text.slice(1);
  switch (line.what) {
    case 'created': return 'You created the group. Members join when they get it.';
    case 'joined': return `${capital(who(line.by))} added you to the group.`;
    case 'restored': return 'Group restored from your contact book; earlier messages are not kept.';
    case 'changed': return `${capital(who(line.by))} ${changeText(group, line.change, me)}.`;
    case 'removed_me': return `${capital(who(line.by))} removed you from the group. Nothing sent to it from now on can reach you.`;
    case 'conflict': return `Two admins changed the group at once; ${who(line.kept)}'s change was kept.`;
    case 'equivocation': return `${capital(who(line.by))} signed two different versions of the member list under the same number: a fault in their app, or someone else using their key. Every member keeps the same one of the two, but some may have seen the other first; compare fingerprints with them.`;
    case 'change_refused': return `A change to the group was refused (${REFUSAL_TEXT[line.problem] || line.problem}); it came from ${who(line.by)}.`;
    case 'keys_refused': return `Keys sent by ${who(line.by)} were refused (${REFUSAL_TEXT[line.problem] || line.problem}).`;
    case 'key_changed': return `${capital(who(line.member))}'s key changed: another key was offered for them. The key you had is kept; compare fingerprints before you trust either.`;
    case 'redone': return `Your change was redone after ${who(line.by)}'s: two admins changed the group at once and theirs was kept, so yours was made again on top of it.`;
    case 'not_redone': return `Two admins changed the group at once and ${who(line.by)}'s change was kept; yours was not made again: ${REDO_PROBLEM_TEXT[line.problem] || `it is no longer possible (${line.problem})`}.`;
    case 'key_replaced': return `${capital(who(line.member))} has a new key: ${who(line.by)} replaced their old one (fingerprint ending ${line.was.slice(-8)}) in the group. Compare fingerprints with ${who(line.member)} before you trust it.`;
    case 'key_shares_id': return `The key ${who(line.by)} sent for ${who(line.member)} can also sign as a key you already hold for someone else, which would make that person's messages look like no one's. It was refused; compare fingerprints with ${who(line.member)}.`;
    case 'not_from_member': return 'A message to the group was not signed by any member: it is not shown.';
    case 'malformed': return `A message from ${who(line.from)} was not a valid group message.`;
    case 'unverifiable': return `A message from ${who(line.from)} names a member list that never arrived: it cannot be checked.`;
    case 'member_left': return `${capital(who(line.from))} left the group.`;
    case 'you_left': return 'You left the group.';
    case 'handover_given_up': return `${capital(who(line.member))} never confirmed getting the group, though it was handed to them again and again: remove them and add them again to try once more.`;
    case 'not_handed': return `${capital(who(line.member))} could not be reached to join: they get the group when an admin adds them again.`;
    default: return String(line.what);
  }
}
