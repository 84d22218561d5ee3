// The contact book: what the client keeps of each contact so that, after a reload, it can carry on without a
// new friend request and without sending a key or fingerprint through the server again. Pure: building the
// book's JSON from the domain's friends, reading it back (every field checked and bounded, since an imported
// file is only as honest as whoever made it, even when it is signed by the user's key), and merging an import.
// The wiring (contactstore.js) encrypts it to the user's own key, signs it, and stores or exports it.
//
// Bounds (docs/CLIENT.md "Contact book"): at most MAX_CONTACTS contacts (the server's 4,096 handles per session
// over three days each), MAX_UNCONFIRMED messages and MAX_UNCONFIRMED_BYTES of their text per contact, and
// MAX_BOOK_BYTES for the whole JSON text. A book over a bound is refused whole on load; on save, the oldest
// unconfirmed messages beyond a contact's bound are not kept (they stay on screen until the tab closes).
import { MAX_CONTACTS, isSecret } from './rendezvous.js';
import { checkedReceived, emptyReceived, mergeReceived } from './receipts.js';
import { MAX_PUBLIC_KEY_BYTES } from './keypolicy.js';

export const BOOK_KIND = 'secchat-contact-book';
export const BOOK_VERSION = 1;
export const MAX_UNCONFIRMED = 64;
export const MAX_UNCONFIRMED_BYTES = 256 * 1024;
export const MAX_BOOK_BYTES = 4 * 1024 * 1024;
/** An armored book (stored or imported) longer than this is refused before it is decrypted. */
export const MAX_ARMORED_BOOK_CHARS = 6 * 1024 * 1024;
const NAME_MAX = 256;
const KEY = /^[a-z0-9-]{1,16}$/;
const FINGERPRINT = /^[0-9A-F]{40}$/;
const utf8 = (text) => new TextEncoder().encode(text).length;
const isTime = (n) => Number.isSafeInteger(n) && n >= 0;

/** Whether a friend is a contact: both listening secrets are known, so the two can find each other again. */
export function isContact(friend) {
  return Boolean(friend && friend.status === 'friends' && isSecret(friend.rendezvous?.mine) && isSecret(friend.rendezvous?.theirs)
    && friend.fingerprint && friend.publicArmored);
}

/** The book's name for a contact first met under session ID `id` (lower case: never a live session ID). */
export function bookKeyFor(id) {
  return String(id).toLowerCase().replace(/[^a-z0-9-]/g, '').slice(0, 16) || 'contact';
}

/** The record kept for `friend` (a contact). Unconfirmed outgoing text messages are kept newest-last, bounded. */
export function contactRecord(friend, now) {
  const pending = friend.messages.filter((m) => m.direction === 'out' && !m.kind && m.seq > 0 && m.state !== 'delivered'
    && m.state !== 'error');
  const unconfirmed = [];
  let bytes = 0;
  for (const m of pending.slice(-MAX_UNCONFIRMED).reverse()) {
    bytes += utf8(m.text);
    if (bytes > MAX_UNCONFIRMED_BYTES) break;
    unconfirmed.unshift({ seq: m.seq, ts: m.sentTs || m.ts, text: m.text });
  }
  return {
    key: friend.bookKey || bookKeyFor(friend.id),
    fingerprint: friend.fingerprint,
    userId: friend.userId,
    nickname: friend.nickname,
    verified: friend.trust === 'verified',
    publicArmored: friend.publicArmored,
    mine: friend.rendezvous.mine,
    theirs: friend.rendezvous.theirs,
    theirsTs: friend.rendezvous.theirsTs || 0,
    sendSeq: friend.sendSeq,
    received: friend.received || emptyReceived(),
    since: friend.friendshipStartedAt,
    lastReachable: friend.lastReachable || 0,
    // Not the clock when it is unknown: a record must read the same until the contact changes (contactstore.js
    // compares them to tell whether anything is left to save).
    updatedAt: friend.updatedAt || friend.friendshipStartedAt || now,
    unconfirmed,
  };
}

/**
 * Whether closing or reloading the page now would lose something, so the page should ask first: a live friend
 * who is not a remembered contact (the friendship ends with the session), a contact book whose last changes are
 * not stored yet (`bookUnsaved`), or an outgoing message to a contact that the stored book does not hold (not
 * sealed yet, so it has no seq; or beyond the book's bounds). A remembered contact's unconfirmed messages are
 * in the book and go again after the reload: nothing is lost, so they are no reason to ask.
 */
export function unloadLoses(state, { remember, bookUnsaved }) {
  for (const friend of state.friends.values()) {
    if (friend.status !== 'friends') continue;
    if (!remember || !isContact(friend)) return true;
    const kept = new Set(contactRecord(friend, 0).unconfirmed.map((m) => m.seq));
    const open = (m) => m.direction === 'out' && !m.kind && m.state !== 'delivered' && m.state !== 'error' && m.state !== 'queued';
    if (friend.messages.some((m) => open(m) && !kept.has(m.seq))) return true;
  }
  return Boolean(remember && bookUnsaved);
}

/**
 * The book's JSON text for `contacts`, `groups` (records: groupbook.js) and the groups taken off the list
 * (groups.js forgottenWith), or {problem} when it exceeds a bound.
 */
export function serializeBook(contacts, ownFingerprint, now, groups = [], forgottenGroups = []) {
  if (contacts.length > MAX_CONTACTS) return { problem: 'too_many_contacts' };
  const text = JSON.stringify({ v: BOOK_VERSION, kind: BOOK_KIND, owner: ownFingerprint, savedAt: now, contacts, groups, forgottenGroups });
  if (utf8(text) > MAX_BOOK_BYTES) return { problem: 'too_large' };
  return { text };
}

/** One record read from a book, checked; null when anything is off. */
function checkedRecord(value) {
  if (!value || typeof value !== 'object') return null;
  const strings = ['key', 'fingerprint', 'userId', 'nickname', 'publicArmored', 'mine', 'theirs'];
  if (!strings.every((name) => typeof value[name] === 'string')) return null;
  if (!KEY.test(value.key) || !FINGERPRINT.test(value.fingerprint)) return null;
  if (value.userId.length > NAME_MAX || value.nickname.length > NAME_MAX) return null;
  if (!value.publicArmored.startsWith('-----BEGIN PGP PUBLIC KEY BLOCK-----') || utf8(value.publicArmored) > MAX_PUBLIC_KEY_BYTES) return null;
  if (!isSecret(value.mine) || !isSecret(value.theirs)) return null;
  if (!Number.isSafeInteger(value.sendSeq) || value.sendSeq < 0) return null;
  if (![value.since, value.lastReachable, value.updatedAt].every(isTime)) return null;
  if (value.theirsTs !== undefined && !isTime(value.theirsTs)) return null;
  if (typeof value.verified !== 'boolean' || !Array.isArray(value.unconfirmed) || value.unconfirmed.length > MAX_UNCONFIRMED) return null;
  let bytes = 0;
  const unconfirmed = [];
  for (const m of value.unconfirmed) {
    if (!m || !Number.isSafeInteger(m.seq) || m.seq < 1 || m.seq > value.sendSeq || !isTime(m.ts) || typeof m.text !== 'string') return null;
    bytes += utf8(m.text);
    unconfirmed.push({ seq: m.seq, ts: m.ts, text: m.text });
  }
  if (bytes > MAX_UNCONFIRMED_BYTES) return null;
  return {
    key: value.key, fingerprint: value.fingerprint, userId: value.userId, nickname: value.nickname, verified: value.verified,
    publicArmored: value.publicArmored, mine: value.mine, theirs: value.theirs, theirsTs: value.theirsTs || 0, sendSeq: value.sendSeq,
    received: checkedReceived(value.received), since: value.since, lastReachable: value.lastReachable, updatedAt: value.updatedAt,
    unconfirmed: unconfirmed.sort((a, b) => a.seq - b.seq),
  };
}

/**
 * The contacts of a decrypted book (and `groups`, its groups' records as stored, for groupbook.js readGroups to
 * check, and `forgottenGroups` as stored, for readForgotten), or {problem}: 'too_large', 'malformed', 'not_yours' (made for another key),
 * 'too_many_contacts', 'bad_contact' (one record is not well formed: the book is refused whole, so nothing half
 * read is ever merged), 'duplicate' (one fingerprint twice).
 */
export function parseBook(text, ownFingerprint) {
  if (typeof text !== 'string' || utf8(text) > MAX_BOOK_BYTES) return { problem: 'too_large' };
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return { problem: 'malformed' };
  }
  if (!value || value.v !== BOOK_VERSION || value.kind !== BOOK_KIND || !Array.isArray(value.contacts)) return { problem: 'malformed' };
  if (value.owner !== ownFingerprint) return { problem: 'not_yours' };
  if (value.contacts.length > MAX_CONTACTS) return { problem: 'too_many_contacts' };
  const contacts = [];
  const seen = new Set();
  for (const record of value.contacts) {
    const checked = checkedRecord(record);
    if (!checked) return { problem: 'bad_contact' };
    if (seen.has(checked.fingerprint) || checked.fingerprint === ownFingerprint) return { problem: 'duplicate' };
    seen.add(checked.fingerprint);
    contacts.push(checked);
  }
  return { contacts, groups: value.groups, forgottenGroups: value.forgottenGroups };
}

/**
 * `incoming` records merged into `existing` ones, by fingerprint (one fingerprint is one contact; a different
 * fingerprint under the same name is another contact). For a fingerprint in both: the record updated last wins,
 * except that the pinned key text, the book key and both secrets stay the existing ones (a contact's secrets
 * never change: contacts.js), `verified` is never lost (a downgrade
 * is the user's own act, never an import's), `sendSeq` never goes down (a seq is never used twice) and the
 * accepted seqs are the union. Returns {contacts, added, updated}; more than MAX_CONTACTS: {problem}.
 */
export function mergeBooks(existing, incoming) {
  const byFingerprint = new Map(existing.map((c) => [c.fingerprint, c]));
  let added = 0;
  let updated = 0;
  for (const other of incoming) {
    const mine = byFingerprint.get(other.fingerprint);
    if (!mine) {
      byFingerprint.set(other.fingerprint, other);
      added += 1;
      continue;
    }
    const newer = other.updatedAt > mine.updatedAt ? other : mine;
    byFingerprint.set(other.fingerprint, {
      ...newer,
      key: mine.key,
      publicArmored: mine.publicArmored,
      mine: mine.mine,
      theirs: mine.theirs,
      theirsTs: mine.theirsTs,
      verified: mine.verified || other.verified,
      sendSeq: Math.max(mine.sendSeq, other.sendSeq),
      received: mergeReceived(mine.received, other.received),
      lastReachable: Math.max(mine.lastReachable, other.lastReachable),
    });
    if (newer === other) updated += 1;
  }
  if (byFingerprint.size > MAX_CONTACTS) return { problem: 'too_many_contacts' };
  return { contacts: [...byFingerprint.values()], added, updated };
}
