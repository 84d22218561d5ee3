// Groups in the domain state (model.js `groups`, `groupHandles`): the record the page keeps per group and the
// transitions that store it. The group's rules live in the pure core (grouplist.js, groupmessages.js,
// groupdelivery.js); its asynchronous steps (hashing, handles, crypto, the network) in groupsync.js, which
// hands each result in here as a whole record. Pure.
//
// A group record: {gid, list (grouplist.js state), messages (groupmessages.js state), deliveries
// (groupdelivery.js), waiting (messages held for a version not here yet), lines (the conversation, oldest
// first, at most MAX_GROUP_LINES), nextLine, status, alerts, handovers, updatedAt}.
// - status: 'member' (we are in the current version and listen), 'removed' (a version without us arrived),
//   'left' (we sent gleave). Only a member listens on the group's handles and writes to it.
// - handovers: new members we handed the group to and who have not confirmed yet (grouphandover.js).
// - alerts: what does not add up about the group as a whole (a refused change, two admins at once), newest
//   last, at most MAX_ALERTS; shown in the group's header until the user dismisses them.
// - handedBy: the fingerprint of the contact who handed us the group ('' for a group we made): at most
//   MAX_GROUPS_PER_CONTACT groups held per contact (joinProblem).
// - keyChanges: {fp: the fingerprint it replaced}, for members of the current version whose key an admin
//   replaced (a member entry's `was`, grouplist.js): shown as *key changed* until the user verifies that key.
//   Only current members (at most MAX_MEMBERS).
import { withEntry, withoutEntry } from './model.js';
import { emptyDeliveries } from './groupdelivery.js';
import { current } from './grouplist.js';

/** Groups remembered as taken off the list (groups.js forgottenWith), newest kept. */
export const MAX_FORGOTTEN_GROUPS = 256;
/** Groups one contact may hand us (held at once, in any status): one contact cannot fill every slot. */
export const MAX_GROUPS_PER_CONTACT = 8;

/** Lines kept per group in this page (older ones scroll away for good: the chat is not stored). */
export const MAX_GROUP_LINES = 500;
export const MAX_ALERTS = 8;

export function newGroup(list, messages, now) {
  return {
    gid: list.gid, list, messages, deliveries: emptyDeliveries(), waiting: [], lines: [], nextLine: 1, status: 'member', alerts: [], handovers: [], keyChanges: {}, handedBy: '', updatedAt: now,
  };
}

/**
 * `group` (its list already holding the version) with the keys a change replaced (changeBetween's `replaced`,
 * signed by `by`) marked *key changed*, each with a line, and marks of members no longer in the current
 * version dropped.
 */
export function withReplacedKeys(group, replaced, by) {
  let out = group;
  const keyChanges = { ...(group.keyChanges || {}) };
  for (const r of replaced || []) {
    keyChanges[r.fp] = r.was;
    out = withGroupLine(out, { direction: 'system', what: 'key_replaced', member: r.fp, was: r.was, by, flagged: true });
  }
  return { ...out, keyChanges: currentKeyChanges(out.list, keyChanges) };
}

/** `keyChanges` of members of the list's current version only. */
export function currentKeyChanges(list, keyChanges) {
  const members = list.history[list.history.length - 1].members;
  return Object.fromEntries(Object.entries(keyChanges || {}).filter(([fp]) => members.some((m) => m.fp === fp)));
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

/**
 * `group` with the outcome of one applied or refused version (grouplist.js applyVersion's `result`, signed by
 * `signer`) shown: a line for a change, a conflict or a refusal; an alert for what does not add up. An admin
 * that signed two different versions under one number (`equivocation`, at the head or too late) is an alert
 * naming that admin: an honest client never does it, so it means a bug or someone else holding its key, and the
 * members it reached may have been shown different lists.
 */
export function withVersionOutcome(group, result, signer) {
  if (result.ok && result.duplicate) return group;
  if (result.ok) {
    let out = group;
    if (result.applied) {
      out = withGroupLine(out, { direction: 'system', what: result.removedMe ? 'removed_me' : 'changed', by: result.applied.signer, change: result.change });
    }
    out = withReplacedKeys(out, result.applied && !result.removedMe ? result.change?.replaced : [], result.applied?.signer);
    if (result.conflict?.equivocation) return withEquivocation(out, result.conflict.equivocation);
    if (result.conflict) {
      out = withGroupLine(out, { direction: 'system', what: 'conflict', kept: result.conflict.kept.signer, dropped: result.conflict.dropped.map((d) => d.signer) });
    }
    return out;
  }
  if (result.problem === 'gap' && result.held) return group;
  const line = { direction: 'system', what: 'change_refused', problem: result.problem, by: result.version?.signer || signer, flagged: true };
  const out = withAlert(withGroupLine(group, line), line);
  return result.equivocation ? withEquivocation(out, result.equivocation) : out;
}

function withEquivocation(group, admin) {
  const line = { direction: 'system', what: 'equivocation', by: admin, flagged: true };
  return withAlert(withGroupLine(group, line), line);
}

/** groupPut {group}: the record as groupsync.js made it replaces the one held. */
export function groupPut(next, { group }) {
  next.state = { ...next.state, groups: withEntry(next.state.groups, group.gid, group) };
}

/** `forgotten` ([{gid, ver}], newest last) with `gid` forgotten at version `ver`: one entry per gid, bounded. */
export function forgottenWith(forgotten, gid, ver) {
  return [...forgotten.filter((f) => f.gid !== gid), { gid, ver }].slice(-MAX_FORGOTTEN_GROUPS);
}

/**
 * Why a group handed to us by contact `from` (its version `version`: {gid, ver}) must not be joined, or null, for
 * a group we do not hold: 'forgotten' (we took it off the list at a version at least as new: a replay of what we
 * held then, or older), 'groups_full' (MAX_GROUPS held), 'contact_full' (that contact handed us
 * MAX_GROUPS_PER_CONTACT of the groups we hold). A newer version than the one forgotten is an admin adding us back.
 */
export function joinProblem(state, version, from, maxGroups) {
  const forgotten = state.forgottenGroups.find((f) => f.gid === version.gid);
  if (forgotten && version.ver <= forgotten.ver) return 'forgotten';
  if (state.groups.size >= maxGroups) return 'groups_full';
  const fromThem = [...state.groups.values()].filter((g) => g.handedBy === from).length;
  return fromThem >= MAX_GROUPS_PER_CONTACT ? 'contact_full' : null;
}

/** Forgotten groups read from the contact book, checked: [{gid, ver}], or null when malformed. */
export function checkedForgotten(value, isGid) {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_FORGOTTEN_GROUPS) return null;
  const seen = new Set();
  for (const f of value) {
    if (f === null || typeof f !== 'object' || !isGid(f.gid) || !Number.isSafeInteger(f.ver) || f.ver < 1 || seen.has(f.gid)) return null;
    seen.add(f.gid);
  }
  return value.map((f) => ({ gid: f.gid, ver: f.ver }));
}

/** groupForgotten {gid}: the user closed a group it no longer belongs to; its gid and version are remembered. */
export function groupForgotten(next, { gid }) {
  const group = next.state.groups.get(gid);
  const forgottenGroups = group ? forgottenWith(next.state.forgottenGroups, gid, current(group.list).ver) : next.state.forgottenGroups;
  next.state = { ...next.state, groups: withoutEntry(next.state.groups, gid), forgottenGroups };
}

/** groupsForgottenLoaded {forgotten}: the contact book's forgotten groups, merged with this page's (the page's win). */
export function groupsForgottenLoaded(next, { forgotten }) {
  let merged = next.state.forgottenGroups;
  for (const f of forgotten) {
    const held = merged.find((x) => x.gid === f.gid);
    if (!held || held.ver < f.ver) merged = forgottenWith(merged, f.gid, Math.max(f.ver, held ? held.ver : 0));
  }
  if (merged !== next.state.forgottenGroups) next.state = { ...next.state, forgottenGroups: merged };
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
