// Handing a group to a new member until it confirms (PROTOCOL §6 "Groups", "Handing a group over"). The version
// that adds a member and the keys (`gkeys`) go to it once by its contact route; a copy the mailbox evicted, or
// one lost with a connection, would leave the member outside the group for good, since nothing else ever
// reaches it (it does not know the group's secret). So the admin who added it keeps a handover open and hands
// the group again until the member answers with `gjoined` naming that version or a later one (or writes to
// the group under such a version), with a growing wait in between and a bounded number of tries. Pure.
//
// State: a group record's `handovers`, [{fp, ver, tries, next}], at most one per member (so at most
// MAX_MEMBERS): `ver` the version the member was added in (a confirmation must name it or a later one),
// `tries` how often the group was handed so far (1 after the first), `next` when the next try is due (ms).
// The contact book keeps them, so a reload goes on where the page stopped.
import { MAX_MEMBERS, current, isAdmin, isFingerprint, memberOf } from './grouplist.js';

const MINUTE = 60 * 1000;
const HOUR = 60 * MINUTE;
/** The waits after the 1st, 2nd, … handing; the last one is also the longest. */
export const HANDOVER_BACKOFF_MS = [1 * MINUTE, 5 * MINUTE, 30 * MINUTE, 2 * HOUR, 6 * HOUR, 12 * HOUR, 24 * HOUR];
/** Handings in all (the first and the resends): given up after about two days without an answer. */
export const MAX_HANDOVER_TRIES = HANDOVER_BACKOFF_MS.length + 1;

const waitAfter = (tries) => HANDOVER_BACKOFF_MS[Math.min(tries, HANDOVER_BACKOFF_MS.length) - 1];

/** `handovers` with member `fp`, just handed version `ver` for the first time, followed until it confirms. */
export function handoverStarted(handovers, fp, ver, now) {
  const others = handovers.filter((h) => h.fp !== fp);
  return [...others, { fp, ver, tries: 1, next: now + waitAfter(1) }].slice(-MAX_MEMBERS);
}

/** `handovers` without `fp`'s when it confirmed version `ver` (the one it was added in, or a later one). */
export function handoverConfirmed(handovers, fp, ver) {
  const out = handovers.filter((h) => h.fp !== fp || !(Number.isSafeInteger(ver) && ver >= h.ver));
  return out.length === handovers.length ? handovers : out;
}

/**
 * What to do with the open handovers of a group whose member list is `list`, at `now`: {handovers, due, givenUp}.
 * `due`: members to hand the current version again (every open one when `all`, as after a new connection, else
 * those whose wait is over); their try is counted and the next wait set. `givenUp`: members handed
 * MAX_HANDOVER_TRIES times without an answer, whose wait is over: dropped and shown. A handover whose member is
 * no longer in the current version, or that we can no longer hand (we are no admin in it), is dropped quietly.
 */
export function handoversDue(handovers, list, now, { all = false } = {}) {
  const version = current(list);
  const mayHand = isAdmin(version, list.me);
  const kept = [];
  const due = [];
  const givenUp = [];
  for (const h of handovers) {
    if (!mayHand || !memberOf(version, h.fp)) continue;
    if (!all && h.next > now) {
      kept.push(h);
    } else if (h.tries >= MAX_HANDOVER_TRIES) {
      if (h.next > now) kept.push(h);
      else givenUp.push(h.fp);
    } else {
      const tries = h.tries + 1;
      kept.push({ ...h, tries, next: now + waitAfter(tries) });
      due.push(h.fp);
    }
  }
  const same = kept.length === handovers.length && kept.every((h, i) => h === handovers[i]);
  return { handovers: same ? handovers : kept, due, givenUp };
}

/** When the next open handover of `handovers` is due, or null. */
export function nextHandover(handovers) {
  return handovers.length ? Math.min(...handovers.map((h) => h.next)) : null;
}

/** Handovers read from the contact book, checked field by field, or null when any is malformed. */
export function checkedHandovers(value) {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_MEMBERS) return null;
  const seen = new Set();
  const out = [];
  for (const h of value) {
    if (h === null || typeof h !== 'object' || !isFingerprint(h.fp) || seen.has(h.fp)) return null;
    if (!Number.isSafeInteger(h.ver) || h.ver < 1 || !Number.isSafeInteger(h.tries) || h.tries < 1 || h.tries > MAX_HANDOVER_TRIES) return null;
    if (!Number.isSafeInteger(h.next) || h.next < 0) return null;
    seen.add(h.fp);
    out.push({ fp: h.fp, ver: h.ver, tries: h.tries, next: h.next });
  }
  return out;
}
