// Groups in the contact book (contactbook.js, contactstore.js): what is kept of each group so that it survives a
// reload, and the checked reader for it. A stored book is only as honest as whoever made the file, so every
// field is checked and bounded, and the member list is read again from its signed text (grouplist.js
// readVersion), never from stored fields.
//
// Kept per group: the current version's text and its signer, the previous secrets still listened on, who sent
// gleave, our status, our send seq, the seqs accepted per sender (receipts.js records), the members' keys that
// an admin sent (`gkeys`; ours and the contacts' are filled in again from the identity and the book), the
// delivery record of our messages, those of them not confirmed by every member yet (to send again), the new
// members we handed the group to who have not confirmed it yet (grouphandover.js: handed again), and the
// members whose key an admin replaced (shown *key changed*, groups.js keyChanges), and the contact who handed
// it to us (groups.js handedBy). Not
// kept: the rest of the conversation, versions older than the current one (a reload
// follows the chain from the current version on, as a new member does), versions and messages waiting.
import { deliveries, emptyDeliveries, MAX_TRACKED } from './groupdelivery.js';
import { MAX_MEMBERS, MAX_PREVIOUS_SECRETS, isFingerprint, isGid, readVersion } from './grouplist.js';
import { checkedHandovers } from './grouphandover.js';
import { emptyGroupMessages, groupKeyPolicy, keyReading } from './groupmessages.js';
import { checkedForgotten, currentKeyChanges, newGroup } from './groups.js';
import { MAX_SUBKEYS } from './keypolicy.js';
import { MAX_GROUPS, isSecret } from './rendezvous.js';
import { checkedReceived } from './receipts.js';

const STATUSES = new Set(['member', 'removed', 'left']);
/** Our messages not yet confirmed by every member, kept to send again after a reload (as contactbook.js). */
export const MAX_GROUP_UNCONFIRMED = 64;
export const MAX_GROUP_UNCONFIRMED_BYTES = 256 * 1024;
const utf8 = (text) => new TextEncoder().encode(text).length;
const KEY_ID = /^[0-9a-f]{16}$/;
const isTime = (n) => Number.isSafeInteger(n) && n >= 0;
const isSeq = (n) => Number.isSafeInteger(n) && n >= 1;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
/** A key's IDs: its primary key's and at most MAX_SUBKEYS subkeys' (keypolicy.js). */
const isKeyIdList = (ids) => Array.isArray(ids) && ids.length <= 1 + MAX_SUBKEYS && ids.every((id) => typeof id === 'string' && KEY_ID.test(id));

/** The record kept for `group` (groups.js). */
export function groupRecord(group) {
  const version = group.list.history[group.list.history.length - 1];
  // Only the current members' keys: what a reload needs to write and check, and at most MAX_MEMBERS, as the
  // reader requires (the running group also holds keys of earlier versions' members).
  const current = new Set(version.members.map((m) => m.fp));
  const keys = {};
  for (const [fp, key] of Object.entries(group.messages.keys)) {
    if (key.source === 'gkeys' && current.has(fp)) {
      keys[fp] = { armored: key.armored, keyIds: key.keyIds, signingKeyIds: key.signingKeyIds, changed: key.changed };
    }
  }
  return {
    gid: group.gid,
    text: version.text,
    signer: version.signer,
    previousSecrets: group.list.previousSecrets,
    leaving: group.list.leaving,
    status: group.status,
    sendSeq: group.messages.sendSeq,
    received: group.messages.received,
    keys,
    sent: group.deliveries.messages,
    unconfirmed: unconfirmedOf(group),
    handovers: group.handovers,
    keyChanges: group.keyChanges || {},
    handedBy: group.handedBy || '',
    updatedAt: group.updatedAt,
  };
}

/** Our messages some member has not confirmed yet, newest kept within the bounds. */
function unconfirmedOf(group) {
  const open = group.lines.filter((l) => {
    if (l.direction !== 'out') return false;
    const m = group.deliveries.messages.find((x) => x.seq === l.seq);
    return !m || m.have.length < m.to.length;
  });
  const out = [];
  let bytes = 0;
  for (const l of open.slice(-MAX_GROUP_UNCONFIRMED).reverse()) {
    bytes += utf8(l.text);
    if (bytes > MAX_GROUP_UNCONFIRMED_BYTES) break;
    out.unshift({ seq: l.seq, ts: l.ts, text: l.text });
  }
  return out;
}

/**
 * The groups of a book, read back: [{group}] records for groups.js, or {problem: 'bad_group' | 'too_many_groups'
 * | 'duplicate_group'}. `me` is the user's fingerprint: a group whose current version does not hold it is kept
 * only as 'removed' or 'left'.
 */
export async function readGroups(values, me, now) {
  if (values === undefined) return { groups: [] };
  if (!Array.isArray(values)) return { problem: 'bad_group' };
  if (values.length > MAX_GROUPS) return { problem: 'too_many_groups' };
  const groups = [];
  const seen = new Set();
  for (const value of values) {
    const group = await checkedGroup(value, me, now);
    if (!group) return { problem: 'bad_group' };
    if (seen.has(group.gid)) return { problem: 'duplicate_group' };
    seen.add(group.gid);
    groups.push(group);
  }
  return { groups };
}

/** The book's groups taken off the list (groups.js forgottenWith), checked: {forgotten} or {problem: 'bad_group'}. */
export function readForgotten(value) {
  const forgotten = checkedForgotten(value, isGid);
  return forgotten ? { forgotten } : { problem: 'bad_group' };
}

async function checkedGroup(value, me, now) {
  if (!isObject(value) || !isGid(value.gid) || typeof value.text !== 'string' || !isFingerprint(value.signer)) return null;
  if (!STATUSES.has(value.status) || !Number.isSafeInteger(value.sendSeq) || value.sendSeq < 0 || !isTime(value.updatedAt)) return null;
  const read = await readVersion(value.text);
  if (!read.ok || read.version.gid !== value.gid) return null;
  const { version } = read;
  if (!Array.isArray(value.previousSecrets) || value.previousSecrets.length > MAX_PREVIOUS_SECRETS) return null;
  if (!value.previousSecrets.every((p) => isObject(p) && isSecret(p.secret) && isTime(p.until))) return null;
  if (!Array.isArray(value.leaving) || value.leaving.length > MAX_MEMBERS || !value.leaving.every(isFingerprint)) return null;
  const inVersion = (fp) => version.members.some((m) => m.fp === fp);
  if (!inVersion(value.signer) && version.ver === 1) return null;
  if (!isObject(value.received) || Object.keys(value.received).length > MAX_MEMBERS * 16) return null;
  const received = {};
  for (const [fp, record] of Object.entries(value.received)) {
    if (!isFingerprint(fp)) return null;
    received[fp] = checkedReceived(record);
  }
  if (!isObject(value.keys) || Object.keys(value.keys).length > MAX_MEMBERS) return null;
  const keys = {};
  for (const [fp, key] of Object.entries(value.keys)) {
    if (!isFingerprint(fp) || !isObject(key) || groupKeyPolicy(key.armored) !== null || typeof key.changed !== 'boolean') return null;
    if (!isKeyIdList(key.keyIds)) return null;
    // Signing key IDs are some of the key's IDs. A record without them counts every ID as one the key may sign
    // with (groupmessages.js keyReading): the stricter reading.
    if (key.signingKeyIds !== undefined && (!isKeyIdList(key.signingKeyIds) || !key.signingKeyIds.every((id) => key.keyIds.includes(id)))) return null;
    keys[fp] = { armored: key.armored, ...keyReading(key), source: 'gkeys', changed: key.changed };
  }
  if (!Array.isArray(value.sent) || value.sent.length > MAX_TRACKED) return null;
  let sent = emptyDeliveries();
  for (const m of value.sent) {
    if (!isObject(m) || !isSeq(m.seq) || m.seq > value.sendSeq || !Array.isArray(m.to) || m.to.length > MAX_MEMBERS || !m.to.every(isFingerprint)) return null;
    if (!Array.isArray(m.have) || !m.have.every(isFingerprint)) return null;
    sent = deliveries(sent, { type: 'sent', seq: m.seq, to: m.to });
    for (const fp of m.have) sent = deliveries(sent, { type: 'receipt', from: fp, acks: [m.seq] });
  }
  const unconfirmed = value.unconfirmed === undefined ? [] : value.unconfirmed;
  if (!Array.isArray(unconfirmed) || unconfirmed.length > MAX_GROUP_UNCONFIRMED) return null;
  let bytes = 0;
  for (const m of unconfirmed) {
    if (!isObject(m) || !isSeq(m.seq) || m.seq > value.sendSeq || !isTime(m.ts) || typeof m.text !== 'string') return null;
    bytes += utf8(m.text);
  }
  if (bytes > MAX_GROUP_UNCONFIRMED_BYTES) return null;
  const handovers = checkedHandovers(value.handovers);
  if (!handovers) return null;
  const handedBy = value.handedBy === undefined ? '' : value.handedBy;
  if (handedBy !== '' && !isFingerprint(handedBy)) return null;
  const keyChanges = value.keyChanges === undefined ? {} : value.keyChanges;
  if (!isObject(keyChanges) || Object.keys(keyChanges).length > MAX_MEMBERS) return null;
  if (!Object.entries(keyChanges).every(([fp, was]) => isFingerprint(fp) && isFingerprint(was) && fp !== was)) return null;
  const list = {
    gid: value.gid,
    me,
    history: [{ ...version, signer: value.signer }],
    pending: [],
    dropped: [],
    previousSecrets: value.previousSecrets.map((p) => ({ secret: p.secret, until: p.until })).filter((p) => p.until > now),
    leaving: value.leaving.filter(inVersion),
  };
  const status = value.status === 'member' && !inVersion(me) ? 'removed' : value.status;
  const messages = { ...emptyGroupMessages(), sendSeq: value.sendSeq, received, keys };
  const group = {
    ...newGroup(list, messages, value.updatedAt), deliveries: sent, status, handovers: handovers.filter((h) => inVersion(h.fp)), keyChanges: currentKeyChanges(list, keyChanges), handedBy,
  };
  // Sent again after the connection's fetch (groupsync.js resendAll): to who has not confirmed them, or to all.
  const lines = [{ id: 1, direction: 'system', what: 'restored' }, ...unconfirmed.map((m, i) => ({
    id: i + 2, direction: 'out', from: me, seq: m.seq, ts: m.ts, text: m.text, error: '', missing: [],
    state: sent.messages.some((x) => x.seq === m.seq) ? 'sent' : 'error',
  }))];
  return { ...group, lines, nextLine: lines.length + 1 };
}
