// Groups in the domain state (model.js `groups`, `groupHandles`): the record the page keeps per group and the
// transitions that store it. The group's rules live in the pure core (grouplist.js, groupmessages.js,
// groupdelivery.js); its asynchronous steps (hashing, handles, crypto, the network) in groupsync.js, which
// hands each result in here as a whole record. Pure.
//
// A group record: {gid, list (grouplist.js state), messages (groupmessages.js state), deliveries
// (groupdelivery.js), waiting (messages held for a version not here yet), lines (the conversation, oldest
// first, at most MAX_GROUP_LINES), nextLine, status, alerts, updatedAt}.
// - status: 'member' (we are in the current version and listen), 'removed' (a version without us arrived),
//   'left' (we sent gleave). Only a member listens on the group's handles and writes to it.
// - alerts: what does not add up about the group as a whole (a refused change, two admins at once), newest
//   last, at most MAX_ALERTS; shown in the group's header until the user dismisses them.
import { withEntry, withoutEntry } from './model.js';
import { emptyDeliveries } from './groupdelivery.js';

/** Lines kept per group in this page (older ones scroll away for good: the chat is not stored). */
export const MAX_GROUP_LINES = 500;
export const MAX_ALERTS = 8;

export function newGroup(list, messages, now) {
  return {
    gid: list.gid, list, messages, deliveries: emptyDeliveries(), waiting: [], lines: [], nextLine: 1, status: 'member', alerts: [], updatedAt: now,
  };
}

/** `group` with `line` appended (numbered: views key their elements by `id`). */
export function withGroupLine(group, line) {
  const lines = [...group.lines, { ...line, id: group.nextLine }].slice(-MAX_GROUP_LINES);
  return { ...group, lines, nextLine: group.nextLine + 1 };
}

/** `group` with the lines `match` selects replaced by `change(line)`. */
export function withGroupLines(group, match, change) {
  let changed = false;
  const lines = group.lines.map((line) => {
    if (!match(line)) return line;
    changed = true;
    return change(line);
  });
  return changed ? { ...group, lines } : group;
}

export function withAlert(group, alert) {
  return { ...group, alerts: [...group.alerts, alert].slice(-MAX_ALERTS) };
}

/** groupPut {group}: the record as groupsync.js made it replaces the one held. */
export function groupPut(next, { group }) {
  next.state = { ...next.state, groups: withEntry(next.state.groups, group.gid, group) };
}

/** groupForgotten {gid}: the user closed a group it no longer belongs to. */
export function groupForgotten(next, { gid }) {
  next.state = { ...next.state, groups: withoutEntry(next.state.groups, gid) };
}

/** groupHandlesDerived {listen: handle → gid, send: gid → (fp → handle)}: what the groups listen on and send to today. */
export function groupHandlesDerived(next, { listen, send }) {
  next.state = { ...next.state, groupHandles: { listen, send } };
}

/** groupAlertsDismissed {gid} */
export function groupAlertsDismissed(next, { gid }) {
  const group = next.state.groups.get(gid);
  if (group && group.alerts.length) groupPut(next, { group: { ...group, alerts: [] } });
}
