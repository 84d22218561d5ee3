// A group's signed member list (PROTOCOL §6 "Groups"): parsing and bounding a `group` envelope, its list hash,
// and the rules that decide which version a member holds. Pure (SHA-256 is Web Crypto's, passed in or taken
// from globalThis), so it runs under Node too.
//
// A group's state is plain data, never changed in place:
//   {gid, me, history, pending, dropped, previousSecrets, leaving}
// - history: the versions applied, oldest first, at most MAX_HISTORY; the last is the current one (the head).
//   Each is {ver, prev, hash, ts, name, secret, members: [{fp, name, admin, since?}], signer}; only the
//   current one keeps its signed `text` (to hand it to a new member byte for byte: the list hash is over
//   those bytes). `since` (admins only) is the version at which that member last became admin: its seniority.
// - pending: versions whose predecessor has not arrived ({version, signer, until}), at most MAX_PENDING.
// - dropped: hashes of versions that lost to a competing version (at the head, or to a late fork that
//   replaced them), at most MAX_DROPPED, so that what was built on them is recognised as such.
// - previousSecrets: [{secret, until}], secrets replaced less than PREVIOUS_SECRET_MS ago, at most
//   MAX_PREVIOUS_SECRETS (their handles are still listened on: messages in flight, the mailbox).
// - leaving: fingerprints of members of the current version who sent `gleave` (the next admin change
//   removes them).
//
// Invariants: consecutive history entries chain (each `prev` is the hash of the one before, `ver` rises by
// one); every version in history was signed by an admin of the version before it (the first one held: by an
// admin in it, see joinGroup), removed or demoted no admin senior to its signer but itself, and carries the
// seniority its predecessor implies; a version that drops a member of its predecessor has a different secret.
// The versions above a kept one are replaced only by a competing version on it whose signer wins over each of
// them (at the head: the more senior signer, or one signer's smaller hash; below it: a signer that outranks the
// signer of every version it drops), so an admin can never rewrite what an admin it does not outrank signed.
import { isSecret, toBase64Url } from './rendezvous.js';

export const MAX_MEMBERS = 64;
/** Group and member names: 1 to 64 Unicode code points (shown through names.js cleanName). */
export const MAX_NAME_POINTS = 64;
export const MAX_HISTORY = 16;
export const MAX_PENDING = 8;
/** Hashes of dropped versions: a late fork drops up to MAX_HISTORY - 1 at once. */
export const MAX_DROPPED = 2 * MAX_HISTORY;
export const MAX_PREVIOUS_SECRETS = 2;
const DAY_MS = 24 * 60 * 60 * 1000;
/** A version waiting for its predecessor is given up after the mailbox's TTL (PROTOCOL §10). */
export const PENDING_MS = 7 * DAY_MS;
export const PREVIOUS_SECRET_MS = 7 * DAY_MS;

/** 16 bytes, unpadded base64url: 22 characters, the last holding 2 bits (so one text per gid). */
const GID = /^[A-Za-z0-9_-]{21}[AQgw]$/;
const FINGERPRINT = /^[0-9A-F]{40}$/;
const LINE_BREAK = /[\r\n]/;

export const isGid = (value) => typeof value === 'string' && GID.test(value);
export const isFingerprint = (value) => typeof value === 'string' && FINGERPRINT.test(value);
/** A list hash has the shape of a secret: the unpadded base64url of 32 bytes. */
export const isListHash = isSecret;
const isTime = (n) => Number.isSafeInteger(n) && n >= 0;

export function isName(value) {
  if (typeof value !== 'string' || value.length === 0 || value.length > 2 * MAX_NAME_POINTS) return false;
  return [...value].length <= MAX_NAME_POINTS;
}

const malformed = (detail) => ({ ok: false, problem: 'malformed', detail });

/**
 * The fields of a `group` envelope's text, checked against §6: {ok:true, list:{gid, ver, prev, ts, name,
 * secret, members}} (`prev` null for version 1; members as {fp, name, admin}, admins with `since` too, a
 * version from 1 to `ver`) or {ok:false, problem, detail}
 * with problem 'malformed' or 'version'. A text with a line break is malformed: none is ever needed (JSON
 * escapes them in strings) and OpenPGP.js rewrites line endings of text messages, so only without one is the
 * text a receiver reads the literal data as signed, byte for byte, and its hash the same for everyone.
 */
export function parseGroupList(text) {
  if (typeof text !== 'string') return malformed('not_text');
  if (LINE_BREAK.test(text)) return malformed('line_break');
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return malformed('not_json');
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return malformed('not_object');
  if (value.v !== 1) return { ok: false, problem: 'version', detail: 'version' };
  if (value.kind !== 'group') return malformed('kind');
  if (!isGid(value.gid)) return malformed('gid');
  if (!Number.isSafeInteger(value.ver) || value.ver < 1) return malformed('ver');
  if (value.ver === 1 ? value.prev !== undefined : !isListHash(value.prev)) return malformed('prev');
  if (!isTime(value.ts)) return malformed('ts');
  if (!isName(value.name)) return malformed('name');
  if (!isSecret(value.secret)) return malformed('secret');
  if (!Array.isArray(value.members) || value.members.length < 1) return malformed('members');
  if (value.members.length > MAX_MEMBERS) return malformed('too_many_members');
  const members = [];
  const seen = new Set();
  for (const m of value.members) {
    if (m === null || typeof m !== 'object' || Array.isArray(m)) return malformed('member');
    if (!isFingerprint(m.fp)) return malformed('member_fp');
    if (!isName(m.name)) return malformed('member_name');
    if (m.admin !== undefined && typeof m.admin !== 'boolean') return malformed('member_admin');
    const admin = m.admin === true;
    // An admin's seniority is a version at or before this one; nobody else has one.
    if (admin ? !(Number.isSafeInteger(m.since) && m.since >= 1 && m.since <= value.ver) : m.since !== undefined) return malformed('member_since');
    if (seen.has(m.fp)) return malformed('member_twice');
    seen.add(m.fp);
    // `was`: the key this member's replaces (same person, new fingerprint). Only a later version can replace a
    // key, and the key replaced is gone from this version (checked below; that it was in the version before
    // is checkChange's).
    if (m.was !== undefined && (value.ver === 1 || !isFingerprint(m.was) || m.was === m.fp)) return malformed('member_was');
    const entry = admin ? { fp: m.fp, name: m.name, admin, since: m.since } : { fp: m.fp, name: m.name, admin };
    members.push(m.was === undefined ? entry : { ...entry, was: m.was });
  }
  if (!members.some((m) => m.admin)) return malformed('no_admin');
  const replaced = members.filter((m) => m.was).map((m) => m.was);
  if (new Set(replaced).size !== replaced.length || replaced.some((fp) => seen.has(fp))) return malformed('member_was');
  return {
    ok: true,
    list: { gid: value.gid, ver: value.ver, prev: value.ver === 1 ? null : value.prev, ts: value.ts, name: value.name, secret: value.secret, members },
  };
}

/** The envelope text of a version (no line breaks: JSON.stringify never writes one). */
export function buildGroupList({ gid, ver, prev, ts, name, secret, members }) {
  const value = { v: 1, kind: 'group', gid, ver };
  if (ver !== 1) value.prev = prev;
  Object.assign(value, {
    ts, name, secret, members: members.map((m) => {
      const out = m.admin ? { fp: m.fp, name: m.name, admin: true, since: m.since } : { fp: m.fp, name: m.name };
      return m.was ? { ...out, was: m.was } : out;
    }),
  });
  return JSON.stringify(value);
}

/** base64url-unpadded(SHA-256(the text as UTF-8)): the list hash, 43 characters. */
export async function listHash(text, subtle = globalThis.crypto.subtle) {
  const digest = await subtle.digest('SHA-256', new TextEncoder().encode(text));
  return toBase64Url(new Uint8Array(digest));
}

/** A version read from a `group` envelope's text: {ok:true, version:{...list, hash, text}} or parseGroupList's refusal. */
export async function readVersion(text, subtle = globalThis.crypto.subtle) {
  const parsed = parseGroupList(text);
  if (!parsed.ok) return parsed;
  return { ok: true, version: { ...parsed.list, hash: await listHash(text, subtle), text } };
}

/** A fresh gid: 16 random bytes. */
export function newGid(crypto = globalThis.crypto) {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
}

// --- the versions a member holds ---

export const current = (state) => state.history[state.history.length - 1];
export const versionOf = (state, ver) => state.history.find((entry) => entry.ver === ver) || null;
export const memberOf = (version, fp) => version.members.find((m) => m.fp === fp) || null;
export const isAdmin = (version, fp) => Boolean(memberOf(version, fp)?.admin);
export const isMember = (state) => Boolean(memberOf(current(state), state.me));

/**
 * Whether admin `a` is senior to admin `b` in `version`: it became admin at an earlier version, or at the same
 * one and has the smaller fingerprint. A strict total order on the admins of a version, the same for every
 * member (the seniorities are in the signed list); false when either is not an admin there.
 */
export function isSenior(version, a, b) {
  const ma = memberOf(version, a);
  const mb = memberOf(version, b);
  if (!ma?.admin || !mb?.admin || a === b) return false;
  return ma.since < mb.since || (ma.since === mb.since && a < b);
}

/**
 * Whether `signer`, an admin in `base`, may take the admin rights or the membership of `fp` away: `fp` is no
 * admin, or one junior to the signer, or the signer itself (an admin may step down or leave).
 */
export const mayDemote = (base, signer, fp) => !isAdmin(base, fp) || fp === signer || isSenior(base, signer, fp);

/** Who a version names ({ver, hash, signer}), for results and the words shown. */
const summary = (v) => ({ ver: v.ver, hash: v.hash, signer: v.signer });

function entryOf(version, signer) {
  const { ver, prev, hash, ts, name, secret, members, text } = version;
  return { ver, prev, hash, ts, name, secret, members, signer, text };
}

function withoutText(entry) {
  const copy = { ...entry };
  delete copy.text;
  return copy;
}

/** `history` with `entry` appended as the current version: bounded, and text only on the current one. */
function appendHistory(history, entry) {
  const kept = history.map((e) => ('text' in e ? withoutText(e) : e));
  return [...kept, entry].slice(-MAX_HISTORY);
}

/** `fps` of `from` not in `to`. */
const removedFrom = (from, to) => from.members.filter((m) => !memberOf(to, m.fp)).map((m) => m.fp);

function withPreviousSecrets(previous, secrets, currentSecret, now) {
  let out = previous.filter((p) => p.secret !== currentSecret);
  for (const secret of secrets) {
    if (secret === currentSecret) continue;
    out = [...out.filter((p) => p.secret !== secret), { secret, until: now + PREVIOUS_SECRET_MS }];
  }
  return out.slice(-MAX_PREVIOUS_SECRETS);
}

/**
 * The first version a member holds of a group: version 1 from its creator, or the version that added the
 * member, handed over by a contact (the wiring calls this only for a `group` envelope that came to a contact's
 * handle signed by that contact's pinned key). The member cannot check the chain before it, so it is taken
 * when its signer is an admin in it and the member is in it. Returns {state, result} as applyVersion.
 */
export function joinGroup(version, signer, { me }) {
  if (!isAdmin(version, signer)) return { state: null, result: { ok: false, problem: 'not_admin', version: summary({ ...version, signer }) } };
  if (!memberOf(version, me)) return { state: null, result: { ok: false, problem: 'not_member', version: summary({ ...version, signer }) } };
  const entry = entryOf(version, signer);
  const state = { gid: version.gid, me, history: [entry], pending: [], dropped: [], previousSecrets: [], leaving: [] };
  return { state, result: { ok: true, applied: summary(entry), removedMe: false, change: null } };
}

/**
 * A `version` (readVersion) signed by `signer` for the group held in `state`, at `now`. Version n + 1 is valid
 * when its `prev` is the hash of the version n held, its signer is an admin in n, it removes or demotes no
 * admin of n senior to its signer (checkChange), and its admins' seniorities follow from n. A valid version on
 * the current version (the head) is applied; one on the head's predecessor competes with the head (see
 * below); one on an older kept version is a late fork (see below). Returns {state, result, released}: `result` for
 * this version, `released` for versions that were waiting for it (each a result), in the order they were
 * applied.
 *
 * A result is {ok:true, applied, removedMe, change, conflict?}, {ok:true, duplicate:true} (held already), or
 * {ok:false, problem} with problem:
 * - 'not_admin': signed by someone who is not an admin in the version it builds on;
 * - 'not_allowed': removes or demotes an admin senior to its signer;
 * - 'wrong_seniority': an admin's `since` is not its `since` in the version before (or, for a new admin, this
 *   version's number);
 * - 'removed_without_new_secret': drops a member and keeps the secret;
 * - 'bad_was': a member's `was` (the key it replaces) names no member of the version before, or the member
 *   with it was in the version before already;
 * - 'wrong_prev': `prev` names a version held, but not the one before it (or a second version 1);
 * - 'too_late': a valid late fork (on a version below the head's predecessor) whose signer does not outrank
 *   the signer of every version it would drop; never applied. `equivocation` is the signer's fingerprint when
 *   the version held on the same predecessor was signed by the same admin, else null;
 * - 'superseded': built on a version that lost (at the head, or to a late fork), or is such a version arriving again;
 * - 'too_old': builds on a version older than the history kept, so it cannot be checked;
 * - 'gap': its predecessor has not arrived; kept in `pending` (held:true) or not (held:false, the bound);
 * - 'wrong_group': another group's version.
 * Two valid versions n + 1 on the head's predecessor n: the one signed by the admin more senior in n wins
 * (isSenior); two by the same admin (it equivocated): the smaller list hash, as strings. Either way the same
 * one wins whatever the order they arrive in. `conflict` is then {kept, dropped: [{ver, hash, signer, change}],
 * equivocation} (`equivocation` the admin's fingerprint, or null); `applied` is null when the version that came
 * lost. `change` (changeBetween) is what the dropped version did, for its admin to make again on top of the
 * winner.
 *
 * A late fork, a valid version n + 1 on a kept version n below the head's predecessor, replaces the versions
 * n + 1 up to the head when its signer outranks (outranks: earlier `since`, then smaller fingerprint) the
 * signer of each, that signer ranked in the version it built on; they are dropped as a loser at the head is,
 * and `conflict` is {kept, dropped: [each, oldest first], equivocation: null, late: true} ("Alice's change
 * replaced later changes by Bob"). Otherwise it is 'too_late'. `late` is false for a conflict at the head.
 */
export function applyVersion(state, version, signer, now) {
  const first = applyOne(state, version, signer, now);
  let next = first.state;
  const released = [];
  if (first.result.ok && !first.result.duplicate) {
    for (;;) {
      const ready = next.pending.find((p) => decidable(next, p.version));
      if (!ready) break;
      const rest = { ...next, pending: next.pending.filter((p) => p !== ready) };
      const step = applyOne(rest, ready.version, ready.signer, now);
      next = step.state;
      released.push(step.result);
    }
  }
  return { state: next, result: first.result, released };
}

/** Whether a waiting version can now be decided (its predecessor is held, lost, or fell out of the history). */
function decidable(state, version) {
  const oldest = state.history[0].ver;
  return state.history.some((e) => e.hash === version.prev || e.hash === version.hash)
    || state.dropped.includes(version.prev) || state.dropped.includes(version.hash) || version.ver - 1 < oldest;
}

/**
 * Why `version`, signed by `signer` as the successor of `base`, is not valid, or null: the signer is an admin
 * in `base`, takes no rights from an admin senior to it, gives every admin the seniority `base` implies (kept
 * when it was an admin there, this version's number when not), and a removal comes with a new secret.
 */
export function checkChange(base, version, signer) {
  if (!isAdmin(base, signer)) return 'not_admin';
  for (const before of base.members) {
    const after = memberOf(version, before.fp);
    if (before.admin && !after?.admin && !mayDemote(base, signer, before.fp)) return 'not_allowed';
  }
  for (const m of version.members) {
    if (m.admin && m.since !== (isAdmin(base, m.fp) ? memberOf(base, m.fp).since : version.ver)) return 'wrong_seniority';
  }
  // A replaced key names a member of `base` (parseGroupList: one gone from this version), and its new key is
  // new here: an admin cannot relabel two members who both stay, nor name a key nobody held.
  if (version.members.some((m) => m.was && (memberOf(base, m.fp) || !memberOf(base, m.was)))) return 'bad_was';
  if (removedFrom(base, version).length > 0 && version.secret === base.secret) return 'removed_without_new_secret';
  return null;
}

/**
 * Whether admin `a` outranks admin `b` (members as listed, each in the version its signature is checked
 * against): an earlier `since`, or the same and a smaller fingerprint. Strict: nobody outranks itself.
 */
const outranks = (a, b) => a.since < b.since || (a.since === b.since && a.fp < b.fp);

/** Whether `a` wins over `b`, two valid successors of `base`: the more senior signer, or for one signer the smaller hash. */
function wins(base, a, b) {
  if (a.signer === b.signer) return a.hash < b.hash;
  return isSenior(base, a.signer, b.signer);
}

function applyOne(state, version, signer, now) {
  const refuse = (problem, extra = {}) => ({ state, result: { ok: false, problem, version: summary({ ...version, signer }), ...extra } });
  if (version.gid !== state.gid) return refuse('wrong_group');
  if (state.history.some((e) => e.hash === version.hash)) return { state, result: { ok: true, duplicate: true, version: summary({ ...version, signer }) } };
  if (state.dropped.includes(version.hash) || state.dropped.includes(version.prev)) return refuse('superseded');
  if (version.ver === 1) return refuse('wrong_prev');
  const at = state.history.findIndex((e) => e.hash === version.prev);
  if (at < 0) {
    if (version.ver - 1 < state.history[0].ver) return refuse('too_old');
    return hold(state, version, signer, now);
  }
  const base = state.history[at];
  if (base.ver !== version.ver - 1) return refuse('wrong_prev');
  const problem = checkChange(base, version, signer);
  if (problem) return refuse(problem);
  const entry = entryOf(version, signer);
  const head = current(state);
  if (base === head) {
    const next = {
      ...state,
      history: appendHistory(state.history, entry),
      previousSecrets: withPreviousSecrets(state.previousSecrets, [base.secret], entry.secret, now),
      leaving: state.leaving.filter((fp) => memberOf(entry, fp)),
    };
    return { state: next, result: { ok: true, applied: summary(entry), removedMe: !memberOf(entry, state.me), change: changeBetween(base, entry) } };
  }
  // We hold another version on the same predecessor: `ours`, and above it everything up to the head.
  const ours = state.history[at + 1];
  const equivocation = ours.signer === signer ? signer : null;
  if (ours === head) {
    if (wins(base, entry, head)) return replaceFrom(state, at, entry, now, { equivocation });
    const next = { ...state, dropped: [...state.dropped, entry.hash].slice(-MAX_DROPPED) };
    return {
      state: next,
      result: {
        ok: true, applied: null, removedMe: false, change: null, conflict: { kept: summary(head), dropped: [{ ...summary(entry), change: changeBetween(base, entry) }], equivocation, late: false },
      },
    };
  }
  // A late fork: it would drop `ours` and everything built on it. It does only when its signer outranks the
  // signer of every one of them, each ranked as an admin in the version it was built on (an admin's rank only
  // falls over time: `since` grows when it is made admin again). So an admin who was removed or demoted can
  // never come back this way: the version that did it was signed by itself or by an admin that outranked it,
  // and that version is among those it would drop. Work and state are bounded by the history: `at` is a kept
  // version, so at most MAX_HISTORY - 1 versions are dropped (a fork on an older one is 'too_old').
  const rank = memberOf(base, signer);
  const later = state.history.slice(at + 1);
  const outranksAll = later.every((d, i) => outranks(rank, memberOf(state.history[at + i], d.signer)));
  if (!outranksAll) return refuse('too_late', { equivocation });
  return replaceFrom(state, at, entry, now, { equivocation: null });
}

/**
 * `state` with the versions above history[at] replaced by `entry` (a valid successor of history[at] that won):
 * the dropped ones recorded so that what was built on them is refused, their secrets listened on for a while.
 */
function replaceFrom(state, at, entry, now, { equivocation }) {
  const base = state.history[at];
  const later = state.history.slice(at + 1);
  const next = {
    ...state,
    history: appendHistory(state.history.slice(0, at + 1), entry),
    dropped: [...state.dropped, ...later.map((d) => d.hash)].slice(-MAX_DROPPED),
    // Messages may have gone to the handles of the secrets held meanwhile.
    previousSecrets: withPreviousSecrets(state.previousSecrets, [base.secret, ...later.map((d) => d.secret)], entry.secret, now),
    leaving: state.leaving.filter((fp) => memberOf(entry, fp)),
  };
  const dropped = later.map((d, i) => ({ ...summary(d), change: changeBetween(state.history[at + i], d) }));
  return {
    state: next,
    result: {
      ok: true,
      applied: summary(entry),
      removedMe: !memberOf(entry, state.me),
      change: changeBetween(base, entry),
      conflict: { kept: summary(entry), dropped, equivocation, late: later.length > 1 },
    },
  };
}

/** Keeps a version whose predecessor has not arrived, the nearest ones first, at most MAX_PENDING. */
function hold(state, version, signer, now) {
  const result = (held) => ({ ok: false, problem: 'gap', held, version: summary({ ...version, signer }) });
  if (state.pending.some((p) => p.version.hash === version.hash)) return { state, result: result(true) };
  const pending = [...state.pending, { version, signer, until: now + PENDING_MS }]
    .sort((a, b) => a.version.ver - b.version.ver || (a.version.hash < b.version.hash ? -1 : 1))
    .slice(0, MAX_PENDING);
  const held = pending.some((p) => p.version === version);
  return { state: { ...state, pending }, result: result(held) };
}

/** `state` without waiting versions and previous secrets whose time is up. Returns {state, expired} (summaries). */
export function expireGroup(state, now) {
  const expired = state.pending.filter((p) => p.until <= now);
  const previousSecrets = state.previousSecrets.filter((p) => p.until > now);
  if (expired.length === 0 && previousSecrets.length === state.previousSecrets.length) return { state, expired: [] };
  return {
    state: { ...state, pending: state.pending.filter((p) => p.until > now), previousSecrets },
    expired: expired.map((p) => summary({ ...p.version, signer: p.signer })),
  };
}

/**
 * The version from which `fp` has been a member without a break, as far back as the history reaches (the
 * oldest kept version when it reaches no further); null when it is no member now.
 */
function memberSince(state, fp) {
  let since = null;
  for (let i = state.history.length - 1; i >= 0 && memberOf(state.history[i], fp); i -= 1) since = state.history[i].ver;
  return since;
}

/**
 * A member of the current version sent `gleave`, naming the version it held (`ver`): the next admin change removes
 * them. A `gleave` naming a version from before the member's present membership began ('stale') is an earlier
 * leave, replayed by the server into a membership that began since (it was re-added): refused.
 */
export function leaveReceived(state, signer, ver) {
  const since = memberSince(state, signer);
  if (since === null) return { state, ok: false, problem: 'not_member' };
  if (!Number.isSafeInteger(ver) || ver < since) return { state, ok: false, problem: 'stale' };
  if (state.leaving.includes(signer)) return { state, ok: true };
  return { state: { ...state, leaving: [...state.leaving, signer] }, ok: true };
}

/**
 * Why we may not leave the group held in `state`, or null: 'last_admin' when we are its only admin (admins who
 * sent `gleave` do not count) and others stay. Nobody could then change the list again (add, remove, or
 * remove us as a leaver), so another member must be made admin first.
 */
export function leaveProblem(state) {
  const version = current(state);
  if (!isAdmin(version, state.me) || version.members.length < 2) return null;
  const others = version.members.filter((m) => m.admin && m.fp !== state.me && !state.leaving.includes(m.fp));
  return others.length === 0 ? 'last_admin' : null;
}

// --- changes ---

/**
 * What `to` changes from `from`: {name (new group name or null), add: [members], remove: [fps], replaced:
 * [{fp, was, name, admin}] (a member's new key: neither in `add` nor its old one in `remove`), admin: {fp: boolean} (flag
 * changed), rename: {fp: name}, newSecret: boolean}.
 */
export function changeBetween(from, to) {
  const admin = {};
  const rename = {};
  for (const m of to.members) {
    const before = memberOf(from, m.fp);
    if (!before) continue;
    if (before.admin !== m.admin) admin[m.fp] = m.admin;
    if (before.name !== m.name) rename[m.fp] = m.name;
  }
  // A key replaced (`was`, checked by checkChange) is neither an addition nor a removal: the same person.
  const replaced = to.members.filter((m) => m.was && !memberOf(from, m.fp) && memberOf(from, m.was))
    .map((m) => ({ fp: m.fp, was: m.was, name: m.name, admin: m.admin }));
  const was = new Set(replaced.map((r) => r.was));
  const now = new Set(replaced.map((r) => r.fp));
  return {
    name: from.name === to.name ? null : to.name,
    add: to.members.filter((m) => !memberOf(from, m.fp) && !now.has(m.fp)),
    remove: removedFrom(from, to).filter((fp) => !was.has(fp)),
    replaced,
    admin,
    rename,
    newSecret: from.secret !== to.secret,
  };
}

/**
 * The text of the next version after the current one, with `change` ({name?, add?, remove?, admin?, rename?},
 * as changeBetween) made by us, an admin. Members who sent `gleave` are removed too unless
 * `removeLeavers` is false, except admins senior to us (only they themselves or a more senior admin may remove
 * them; they stay in `leaving`). Removing anyone needs `secret`, a new one; it may be given without a removal
 * too. Admins keep their seniority; a new admin's is the new version. Adding a member already in the list, or
 * removing one not in it, changes nothing (so a change dropped in a conflict can be made again on top of the
 * winner as it was). A member added with `was` (a fingerprint) is that member's new key: `was` must be in the
 * list and removed by the same change, else 'bad_was'. Returns {ok:true, text, list} or {ok:false, problem}:
 * 'not_admin', 'not_allowed' (removes or demotes an admin senior to us), 'needs_new_secret', 'no_change',
 * 'bad_was', or parseGroupList's 'malformed' (a bound).
 */
export function proposeChange(state, change, { ts, secret = null, removeLeavers = true }) {
  const base = current(state);
  if (!isAdmin(base, state.me)) return { ok: false, problem: 'not_admin' };
  const ver = base.ver + 1;
  const leavers = removeLeavers ? state.leaving.filter((fp) => mayDemote(base, state.me, fp)) : [];
  const remove = new Set([...(change.remove || []), ...leavers]);
  const adminAfter = (m) => (Object.hasOwn(change.admin || {}, m.fp) ? change.admin[m.fp] === true : m.admin);
  if (base.members.some((m) => (remove.has(m.fp) || !adminAfter(m)) && !mayDemote(base, state.me, m.fp))) return { ok: false, problem: 'not_allowed' };
  const withRights = (m, admin) => (admin ? { ...m, admin, since: m.since || ver } : { ...m, admin });
  let members = base.members.filter((m) => !remove.has(m.fp)).map((m) => withRights({
    fp: m.fp,
    name: Object.hasOwn(change.rename || {}, m.fp) ? change.rename[m.fp] : m.name,
    since: m.admin ? m.since : undefined,
  }, adminAfter(m)));
  for (const m of change.add || []) {
    // A new key for a member (`was`) replaces one that is in the list and goes in this change.
    if (m.was !== undefined && (!memberOf(base, m.was) || !remove.has(m.was))) return { ok: false, problem: 'bad_was' };
    if (members.some((x) => x.fp === m.fp) || remove.has(m.fp)) continue;
    const added = withRights({ fp: m.fp, name: m.name }, m.admin === true);
    members = [...members, m.was === undefined ? added : { ...added, was: m.was }];
  }
  const removedAny = base.members.some((m) => !members.some((x) => x.fp === m.fp));
  if (removedAny && (!secret || secret === base.secret)) return { ok: false, problem: 'needs_new_secret' };
  const list = {
    gid: state.gid, ver, prev: base.hash, ts, name: change.name || base.name, secret: secret || base.secret, members,
  };
  const text = buildGroupList(list);
  const parsed = parseGroupList(text);
  if (!parsed.ok) return parsed;
  const same = changeBetween(base, parsed.list);
  if (!same.name && !same.add.length && !same.remove.length && !same.replaced.length && !Object.keys(same.admin).length && !Object.keys(same.rename).length && !same.newSecret) {
    return { ok: false, problem: 'no_change' };
  }
  return { ok: true, text, list: parsed.list };
}

/**
 * What is left to do of `change` (changeBetween: a change of ours that lost to one made at the same time, PROTOCOL
 * §6 "Two changes at once") on top of the version held now, so that its admin can make it again: {ok:true,
 * change (proposeChange's input), removes (it removes someone: a new secret is needed)} or {ok:false, problem}:
 * 'not_admin' (we are no admin now), 'done' (the list already is as it would make it: the members to add are in,
 * those to remove are gone, flags and names as it set them), 'not_allowed' (it would now remove or demote an
 * admin senior to us). Only what still differs is kept: a member to add who is in already, or to remove who is
 * gone, is left out; a new key (`was`) is given again only while the old key is listed and the new one is not.
 */
export function redoChange(state, change) {
  const base = current(state);
  if (!isAdmin(base, state.me)) return { ok: false, problem: 'not_admin' };
  const replaced = (change.replaced || []).filter((r) => memberOf(base, r.was) && !memberOf(base, r.fp));
  const add = [
    ...(change.add || []).filter((m) => !memberOf(base, m.fp)).map((m) => ({ fp: m.fp, name: m.name, admin: m.admin === true })),
    ...replaced.map((r) => ({ fp: r.fp, name: r.name, admin: r.admin === true, was: r.was })),
  ];
  const remove = [...(change.remove || []).filter((fp) => memberOf(base, fp)), ...replaced.map((r) => r.was)];
  const admin = Object.fromEntries(Object.entries(change.admin || {}).filter(([fp, flag]) => memberOf(base, fp) && memberOf(base, fp).admin !== flag));
  const rename = Object.fromEntries(Object.entries(change.rename || {}).filter(([fp, name]) => memberOf(base, fp) && memberOf(base, fp).name !== name));
  const name = change.name && change.name !== base.name ? change.name : null;
  if (!add.length && !remove.length && !Object.keys(admin).length && !Object.keys(rename).length && !name) return { ok: false, problem: 'done' };
  const takes = [...remove, ...Object.keys(admin).filter((fp) => !admin[fp])];
  if (takes.some((fp) => !mayDemote(base, state.me, fp))) return { ok: false, problem: 'not_allowed' };
  return { ok: true, change: { ...(name ? { name } : {}), add, remove, admin, rename }, removes: remove.length > 0 };
}

/** The text of version 1 of a new group made by `me` (its first admin) with `others` ([{fp, name, admin?}]). */
export function createGroupList({ gid, ts, name, secret, me, others = [] }) {
  const members = [{ fp: me.fp, name: me.name, admin: true, since: 1 }, ...others.map((m) => (m.admin ? { ...m, since: 1 } : m))];
  const list = { gid, ver: 1, prev: null, ts, name, secret, members };
  const text = buildGroupList(list);
  const parsed = parseGroupList(text);
  return parsed.ok ? { ok: true, text, list: parsed.list } : parsed;
}
