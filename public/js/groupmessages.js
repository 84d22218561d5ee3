// What members send each other inside a group (PROTOCOL §6 "Groups"): the envelopes `gtext`, `greceipt`,
// `gleave` and `gkeys` (built, parsed, bounded), the members' keys as one member holds them, and the checks
// a received `gtext` must pass before it is shown as verified. Pure: OpenPGP.js stays in the crypto worker,
// which hands in what these checks need (who signed, the key IDs a message was encrypted to, each key's
// fingerprint and key IDs).
//
// A member's message state for one group is plain data, never changed in place:
//   {sendSeq, received: {fp: receipts.js record}, keys: {fp: {armored, keyIds, signingKeyIds, source, changed}}}
// - sendSeq: the last seq we used in this group (the next message takes sendSeq + 1).
// - received: per sender, which seqs were accepted (receipts.js: duplicates, late, gaps; bounded).
// - keys: the key used for each member: `source` 'own' (ours), 'contact' (the member is a contact: its pinned
//   key, which always wins), 'gkeys' (the first one an admin sent; a later different one is not taken).
//   `changed` marks a member for whom a different key was offered: shown as "key changed".
//   `keyIds` are every key ID the key carries (what a message may be encrypted to); `signingKeyIds` those it can
//   sign with (keys.js signingKeyIdsOf: the primary, and subkeys with a back-signature). Only the latter say
//   whose key it is: anyone can bind another person's key packet to their own key, but not sign with it.
// Bounds: `received` and `keys` hold fingerprints of the versions in the group's history (at most 16 × 64).
import { MAX_RECEIPT_ACKS } from './envelope.js';
import { current, isAdmin, isFingerprint, isGid, isListHash, memberOf, parseGroupList, versionOf } from './grouplist.js';
import { checkArmoredSize, checkKeyPackets, readPackets } from './keypolicy.js';
import { accept, classifyReceived, emptyReceived } from './receipts.js';

export const GROUP_KINDS = new Set(['group', 'gkeys', 'gtext', 'greceipt', 'gleave', 'gremoved', 'gjoined']);
/** Keys per `gkeys` envelope: 8 within the key policy's 16 KiB each stay well inside one frame. */
export const MAX_GROUP_KEYS = 8;
export const MAX_GROUP_ACKS = MAX_RECEIPT_ACKS;
/** Messages (gtext, gkeys) waiting for a version of the list not held yet, per group. */
export const MAX_WAITING = 32;
export const WAITING_MS = 7 * 24 * 60 * 60 * 1000;
/** The key ID of an anonymous recipient (RFC 9580 §5.1.1): it could be anyone. */
export const WILDCARD_KEY_ID = '0000000000000000';

const isSeq = (n) => Number.isSafeInteger(n) && n >= 1;
const isTime = (n) => Number.isSafeInteger(n) && n >= 0;
const KEY_ID = /^[0-9a-f]{16}$/;
const malformed = (detail) => ({ ok: false, problem: 'malformed', detail });

// --- envelopes ---

/**
 * A decrypted text that is a group envelope, checked against §6: {ok:true, envelope} or {ok:false, problem,
 * detail?} with problem 'not_group' (another kind or none: envelope.js reads it), 'version' or 'malformed'.
 * Group envelopes carry no `to`: the handle they came to names the group, the signature the sender. For a
 * `group` envelope the envelope holds the list's fields (grouplist.js); readVersion adds its hash.
 */
export function parseGroupEnvelope(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'not_group' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || !GROUP_KINDS.has(value.kind)) return { ok: false, problem: 'not_group' };
  if (value.v !== 1) return { ok: false, problem: 'version' };
  if (value.kind === 'group') {
    const parsed = parseGroupList(text);
    return parsed.ok ? { ok: true, envelope: { kind: 'group', ...parsed.list } } : parsed;
  }
  if (!isGid(value.gid)) return malformed('gid');
  if (!isTime(value.ts)) return malformed('ts');
  const base = { kind: value.kind, gid: value.gid, ts: value.ts };
  switch (value.kind) {
    case 'gtext':
      if (!isSeq(value.ver)) return malformed('ver');
      if (!isListHash(value.list)) return malformed('list');
      if (!isSeq(value.seq)) return malformed('seq');
      if (typeof value.text !== 'string') return malformed('text');
      return { ok: true, envelope: { ...base, ver: value.ver, list: value.list, seq: value.seq, text: value.text } };
    case 'greceipt':
      if (!Array.isArray(value.acks) || value.acks.length < 1) return malformed('acks');
      if (value.acks.length > MAX_GROUP_ACKS) return malformed('too_many_acks');
      if (!value.acks.every(isSeq)) return malformed('acks');
      return { ok: true, envelope: { ...base, acks: [...new Set(value.acks)] } };
    case 'gleave':
      if (!isSeq(value.ver)) return malformed('ver');
      return { ok: true, envelope: { ...base, ver: value.ver } };
    case 'gremoved':
    case 'gjoined':
      if (!isSeq(value.ver)) return malformed('ver');
      return { ok: true, envelope: { ...base, ver: value.ver } };
    default: { // gkeys
      if (!isSeq(value.ver)) return malformed('ver');
      if (!Array.isArray(value.keys) || value.keys.length < 1) return malformed('keys');
      if (value.keys.length > MAX_GROUP_KEYS) return malformed('too_many_keys');
      for (const key of value.keys) {
        const refused = groupKeyPolicy(key);
        if (refused) return malformed(refused);
      }
      return { ok: true, envelope: { ...base, ver: value.ver, keys: [...value.keys] } };
    }
  }
}

export function buildGroupText({ gid, ver, list, seq, ts, text }) {
  return JSON.stringify({ v: 1, kind: 'gtext', gid, ver, list, seq, ts, text });
}

export function buildGroupReceipt({ gid, ts, acks }) {
  return JSON.stringify({ v: 1, kind: 'greceipt', gid, ts, acks });
}

/** `ver`: the version the leaver holds, so that a replay into a later membership is told apart (grouplist.js). */
export function buildGroupLeave({ gid, ver, ts }) {
  return JSON.stringify({ v: 1, kind: 'gleave', gid, ver, ts });
}

/** An admin tells a member it removed that version `ver` (the one without them) exists: see removalNotice. */
export function buildGroupRemoved({ gid, ts, ver }) {
  return JSON.stringify({ v: 1, kind: 'gremoved', gid, ts, ver });
}

/**
 * A verified `gremoved` from `signer` for the group held in `list`: taken ({ok:true}) when the signer is an
 * admin in our current version, which names us, and `ver` is the next one (the version we cannot be given,
 * since it holds the new secret). Else {ok:false, problem}: 'wrong_group', 'not_admin', 'not_member' (we are not
 * in our current version: nothing to be removed from), 'wrong_version'.
 */
export function removalNotice(list, { envelope, signer }) {
  if (envelope.gid !== list.gid) return { ok: false, problem: 'wrong_group' };
  const version = current(list);
  if (!memberOf(version, list.me)) return { ok: false, problem: 'not_member' };
  if (!isAdmin(version, signer)) return { ok: false, problem: 'not_admin' };
  if (envelope.ver !== version.ver + 1) return { ok: false, problem: 'wrong_version' };
  return { ok: true };
}

/**
 * A new member tells the admin who handed it the group that it holds version `ver` and every member's key
 * (grouphandover.js): the admin stops handing it again.
 */
export function buildGroupJoined({ gid, ver, ts }) {
  return JSON.stringify({ v: 1, kind: 'gjoined', gid, ver, ts });
}

/** The `gkeys` envelopes carrying `keys` (armored), at most MAX_GROUP_KEYS each. */
export function buildGroupKeys({ gid, ver, ts, keys }) {
  const out = [];
  for (let i = 0; i < keys.length; i += MAX_GROUP_KEYS) {
    out.push(JSON.stringify({ v: 1, kind: 'gkeys', gid, ver, ts, keys: keys.slice(i, i + MAX_GROUP_KEYS) }));
  }
  return out;
}

// --- keys ---

const BEGIN = '-----BEGIN PGP PUBLIC KEY BLOCK-----';
const END = '-----END PGP PUBLIC KEY BLOCK-----';
const ARMOR_HEADER = /^[A-Za-z][A-Za-z0-9-]*: /;
const CHECKSUM = /^=[A-Za-z0-9+/]{4}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The base64 of an armored public key's packets (headers, line breaks and checksum left out), or null when
 * the text is not one armored public key block. Two armorings of the same key have the same body.
 */
export function armorBody(armored) {
  if (typeof armored !== 'string') return null;
  const lines = armored.split('\n').map((line) => line.replace(/[ \t\r]+$/, ''));
  if (lines[0] !== BEGIN) return null;
  let at = 1;
  while (at < lines.length && lines[at] !== '') {
    if (!ARMOR_HEADER.test(lines[at])) return null;
    at += 1;
  }
  at += 1;
  const body = [];
  while (at < lines.length && lines[at] !== END && !CHECKSUM.test(lines[at])) body.push(lines[at++]);
  if (at < lines.length && CHECKSUM.test(lines[at])) at += 1;
  if (lines[at] !== END || lines.slice(at + 1).some((line) => line !== '')) return null;
  const joined = body.join('');
  return BASE64.test(joined) && joined.length % 4 === 0 ? joined : null;
}

/** Whether two armored keys hold the same packets. */
export function sameKey(a, b) {
  const body = armorBody(a);
  return body !== null && body === armorBody(b);
}

/**
 * Why an armored key in `gkeys` is refused, or null: the size the server accepts for keys, one armored public
 * key block, and the key policy (keypolicy.js) on its packets, before OpenPGP.js sees it.
 */
export function groupKeyPolicy(armored) {
  if (typeof armored !== 'string') return 'key_not_text';
  if (!checkArmoredSize(armored).ok) return 'key_too_large';
  const body = armorBody(armored);
  if (body === null) return 'key_not_armored';
  let bytes;
  try {
    bytes = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  } catch {
    return 'key_not_armored';
  }
  const policy = checkKeyPackets(bytes, 'This key');
  if (!policy.ok) return `key_${policy.code}`;
  if (readPackets(bytes).some((p) => p.tag === 5 || p.tag === 7)) return 'key_secret';
  return null;
}

export const emptyGroupMessages = () => ({ sendSeq: 0, received: {}, keys: {} });

/** Key IDs as OpenPGP.js `KeyID.toHex()` writes them: 16 lower-case hex digits, each once. */
const keyIdList = (ids) => [...new Set([...ids].map((id) => String(id).toLowerCase()))];
const normalizeKeyIds = (ids) => keyIdList(ids).filter((id) => KEY_ID.test(id));

/**
 * {keyIds, signingKeyIds} of a key as the crypto worker read it (readFriendKey), normalized; signing key IDs
 * are always among the key's IDs. Without `signingKeyIds` every key ID counts as one the key may sign with:
 * the stricter reading, under which a key ID another key also carries names nobody.
 */
export function keyReading({ keyIds = [], signingKeyIds } = {}) {
  const all = normalizeKeyIds(keyIds);
  const signing = signingKeyIds === undefined ? all : normalizeKeyIds(signingKeyIds).filter((id) => all.includes(id));
  return { keyIds: all, signingKeyIds: signing };
}

/** The key IDs a held key can sign with (see keyReading). */
const signingIdsOf = (key) => key.signingKeyIds || key.keyIds || [];

/** Our own key (armored, with its key IDs as the crypto worker read them: {keyIds, signingKeyIds}). */
export function withOwnKey(messages, me, armored, reading) {
  return { ...messages, keys: { ...messages.keys, [me]: { armored, ...keyReading(reading), source: 'own', changed: false } } };
}

/**
 * The pinned keys of the user's contacts, by fingerprint, from the domain's friends (model.js): friends whose
 * key is not an unconfirmed change. `readings` maps a fingerprint to its key's {keyIds, signingKeyIds} (the crypto worker reads
 * them); a contact without them is left out, since its messages' recipients could not be told apart.
 */
export function contactKeys(friends, readings) {
  const out = new Map();
  for (const friend of friends) {
    if (!friend || friend.status !== 'friends' || friend.trust === 'changed' || !isFingerprint(friend.fingerprint) || !friend.publicArmored) continue;
    const read = readings.get(friend.fingerprint);
    const reading = read ? keyReading(read) : null;
    if (reading && reading.keyIds.length) out.set(friend.fingerprint, { armored: friend.publicArmored, ...reading });
  }
  return out;
}

/**
 * Members of the current version who are contacts (`contacts`: contactKeys) get their pinned key: it replaces
 * one an admin sent when they differ (the member is then marked changed).
 */
export function keysFromContacts(list, messages, contacts) {
  let keys = messages.keys;
  for (const m of current(list).members) {
    const contact = contacts.get(m.fp);
    const held = keys[m.fp];
    if (!contact || m.fp === list.me || held?.source === 'contact') continue;
    const changed = Boolean(held) && (held.changed || !sameKey(held.armored, contact.armored));
    keys = { ...keys, [m.fp]: { armored: contact.armored, keyIds: contact.keyIds, signingKeyIds: contact.signingKeyIds, source: 'contact', changed } };
  }
  return keys === messages.keys ? messages : { ...messages, keys };
}

/**
 * A verified `gkeys` envelope from `signer`. `read` holds, for each of its keys in order, what the crypto
 * worker made of it: {fingerprint, keyIds, signingKeyIds} or {error} (a code). `contacts` as contactKeys. A key is taken only
 * when its fingerprint is in the list of the envelope's `ver` and the member holds no key yet; a member who is
 * a contact keeps the pinned key. Returns {messages, result}: result {ok:true, outcomes:[{fingerprint, outcome}]}
 * with outcome 'taken', 'same', 'own', 'not_in_list', 'refused' or 'key_changed' (another key was held and is
 * kept; the member is marked changed); or {ok:false, problem}: 'wrong_group', 'wait' (that version is not held
 * yet: keep the envelope, see holdForVersion), 'unknown_version' (older than the history) or 'not_admin' (the
 * signer is neither an admin in that version nor the admin who signed it).
 */
export function takeGroupKeys(list, messages, { envelope, signer, read, contacts = new Map() }) {
  if (envelope.gid !== list.gid) return { messages, result: { ok: false, problem: 'wrong_group' } };
  const version = versionOf(list, envelope.ver);
  if (!version) {
    return { messages, result: { ok: false, problem: envelope.ver > current(list).ver ? 'wait' : 'unknown_version' } };
  }
  if (!isAdmin(version, signer) && version.signer !== signer) return { messages, result: { ok: false, problem: 'not_admin' } };
  let keys = messages.keys;
  const outcomes = [];
  envelope.keys.forEach((armored, i) => {
    const info = read[i];
    if (!info || info.error || !isFingerprint(info.fingerprint)) {
      outcomes.push({ fingerprint: info?.fingerprint || null, outcome: 'refused' });
      return;
    }
    const fp = info.fingerprint;
    const outcome = (name) => outcomes.push({ fingerprint: fp, outcome: name });
    if (fp === list.me) return outcome('own');
    if (!memberOf(version, fp)) return outcome('not_in_list');
    const held = keys[fp];
    const contact = contacts.get(fp);
    if (held) {
      if (sameKey(held.armored, armored)) return outcome('same');
      keys = { ...keys, [fp]: { ...held, changed: true } };
      return outcome('key_changed');
    }
    if (contact) {
      const changed = !sameKey(contact.armored, armored);
      keys = { ...keys, [fp]: { armored: contact.armored, keyIds: contact.keyIds, signingKeyIds: contact.signingKeyIds, source: 'contact', changed } };
      return outcome(changed ? 'key_changed' : 'taken');
    }
    const reading = keyReading(info);
    // Two keys that can both sign with one key ID (the same signing subkey bound with its back-signature to
    // two primaries, or a 64-bit collision) would make that member's signatures ambiguous: refused, and shown
    // with who sent it. Only signing key IDs count, on both sides: a key carrying another member's key packet
    // without that member's back-signature cannot sign with it, so it neither blocks that member's real key
    // (in whichever order the two arrive) nor is blocked by it.
    const heldIds = new Set(Object.entries(keys).filter(([other]) => other !== fp).flatMap(([, k]) => signingIdsOf(k)));
    for (const contactKey of contacts.values()) for (const id of signingIdsOf(contactKey)) heldIds.add(id);
    if (reading.signingKeyIds.some((id) => heldIds.has(id))) return outcome('shared_key_id');
    keys = { ...keys, [fp]: { armored, ...reading, source: 'gkeys', changed: false } };
    return outcome('taken');
  });
  return { messages: keys === messages.keys ? messages : { ...messages, keys }, result: { ok: true, outcomes } };
}

/** For each member of the current version but us: 'ok', 'changed' or 'missing' (cannot be written to). */
export function memberKeyStatus(list, messages) {
  const out = new Map();
  for (const m of current(list).members) {
    if (m.fp === list.me) continue;
    const held = messages.keys[m.fp];
    out.set(m.fp, !held ? 'missing' : held.changed ? 'changed' : 'ok');
  }
  return out;
}

// --- sending ---

/** The seq for our next message in this group, and the state that has used it. */
export function takeSendSeq(messages) {
  const seq = messages.sendSeq + 1;
  return { messages: { ...messages, sendSeq: seq }, seq };
}

/**
 * Who a message to the current version goes to: `keys` (armored: every member with a key, ours included, so
 * a second device of ours could read it), `handles` (the others' handles, from grouphandles.js `send`), `to`
 * (their fingerprints) and `missing` (members without a key or handle: shown, never silently left out).
 */
export function sendPlan(list, messages, sendHandles) {
  const version = current(list);
  const keys = [];
  const handles = [];
  const to = [];
  const missing = [];
  for (const m of version.members) {
    const held = messages.keys[m.fp];
    if (m.fp === list.me) {
      if (held) keys.push(held.armored);
      continue;
    }
    const handle = sendHandles.get(m.fp);
    if (!held || !handle) {
      missing.push(m.fp);
      continue;
    }
    keys.push(held.armored);
    handles.push(handle);
    to.push(m.fp);
  }
  return { ver: version.ver, list: version.hash, keys, handles, to, missing };
}

// --- receiving ---

/**
 * Which member each signing key ID names: a Map of key ID → fingerprint from `members` ([{fingerprint,
 * signingKeyIds}]), leaving out every ID that two members' keys can both sign with: a signature made with it
 * is no member's. Key IDs a key merely carries (another member's packet bound without its back-signature)
 * are no signing key IDs, so they name nobody and take nothing from the member whose key it is.
 */
export function signingKeyOwners(members) {
  const owners = new Map();
  const shared = new Set();
  for (const { fingerprint, signingKeyIds } of members) {
    for (const id of signingKeyIds) {
      if (owners.has(id) && owners.get(id) !== fingerprint) shared.add(id);
      owners.set(id, fingerprint);
    }
  }
  for (const id of shared) owners.delete(id);
  return owners;
}

/**
 * The one held key (`keys`: a group's messages.keys) that can have made signatures with the issuer key IDs
 * `signerKeyIds` (one per signature of a message, as OpenPGP.js reads them, unverified): {fingerprint,
 * armored}, or null when there is no signature, one names a key ID no held key can sign with (or two can),
 * or they name more than one member. Only this key is then read and checked against the message (keys.js
 * verifyGroupPayload): opening a message costs at most one key, whatever the group holds.
 */
export function messageSigner(keys, signerKeyIds) {
  if (!Array.isArray(signerKeyIds) || signerKeyIds.length === 0) return null;
  const owners = signingKeyOwners(Object.entries(keys).map(([fingerprint, k]) => ({ fingerprint, signingKeyIds: signingIdsOf(k) })));
  const signers = new Set(signerKeyIds.map((id) => owners.get(String(id).toLowerCase()) || null));
  if (signers.has(null) || signers.size !== 1) return null;
  const [fingerprint] = signers;
  return { fingerprint, armored: keys[fingerprint].armored };
}

/**
 * Which of `recipients` (the key IDs an OpenPGP message was encrypted to: OpenPGP.js
 * `message.getEncryptionKeyIDs()`, as hex) belong to none of `memberKeyIds` (the key IDs of every key of the
 * version's members). An anonymous recipient (WILDCARD_KEY_ID) is no key's ID, so it always counts: it could
 * be anyone.
 */
export function strangerRecipients(recipients, memberKeyIds) {
  const members = new Set(normalizeKeyIds(memberKeyIds));
  return keyIdList(recipients).filter((id) => !members.has(id));
}

/**
 * The recipients of a message naming `version`, against the keys held: {outsiders: [{keyId, fp}] (fp: whose
 * key it is when we hold it, else null), missingKeys: [fps of members of the version without a key]}.
 */
export function checkRecipients(version, keys, recipients) {
  const memberIds = [];
  const missingKeys = [];
  for (const m of version.members) {
    if (keys[m.fp]) memberIds.push(...keys[m.fp].keyIds);
    else missingKeys.push(m.fp);
  }
  const owner = new Map();
  for (const [fp, key] of Object.entries(keys)) for (const id of key.keyIds) owner.set(id, fp);
  const outsiders = strangerRecipients(recipients, memberIds).map((keyId) => ({ keyId, fp: owner.get(keyId) || null }));
  return { outsiders, missingKeys };
}

/**
 * A `gtext` envelope (parseGroupEnvelope) that came to one of the group's handles, signed by `signer` (a key
 * the crypto worker verified against the members' keys), encrypted to `recipients` (key IDs). `held` is the
 * message this page holds from that signer with that seq, if any ({ts, text}). Returns {messages, verdict}:
 * verdict {verified, kind, missing, problems, notes, receipt, outsiders}:
 * - kind: 'first' (the first message from that sender since we joined: no gap is counted before it),
 *   'in_order', 'late' (fills a gap), 'gap' (`missing` seqs not here yet), 'duplicate' (accepted before: not
 *   shown again), 'wait' (its version of the list is not held yet: hold it, see holdForVersion), or null;
 * - problems (not verified, not shown as trusted, seq not moved): 'wrong_group', 'unknown_version' (older than
 *   the history: cannot be checked), 'own_message', 'not_member' (the signer is not in that version),
 *   'members_disagree' (its list hash is not ours for that version), 'extra_recipient' (also encrypted to a
 *   key of no member of that version: see outsiders), 'sender_removed' (the signer is no longer in the current
 *   version: a removed member cannot reach the group's handles any more, so a message of theirs now came
 *   through someone else), 'replay' (a seq accepted before, with other content);
 * - notes (shown, still verified): 'unknown_recipient' (a recipient we cannot name while some member's key is
 *   missing: it may be theirs);
 * - receipt: a `greceipt` for this seq is due (accepted, or a quiet duplicate).
 */
export function checkGroupText(list, messages, { envelope, signer, recipients = [], held = null }) {
  const verdict = { verified: false, kind: null, missing: 0, problems: [], notes: [], receipt: false, outsiders: [] };
  const done = () => ({ messages, verdict });
  if (envelope.gid !== list.gid) {
    verdict.problems.push('wrong_group');
    return done();
  }
  const version = versionOf(list, envelope.ver);
  if (!version) {
    if (envelope.ver > current(list).ver) verdict.kind = 'wait';
    else verdict.problems.push('unknown_version');
    return done();
  }
  if (signer === list.me) verdict.problems.push('own_message');
  else if (!memberOf(version, signer)) verdict.problems.push('not_member');
  if (envelope.list !== version.hash) verdict.problems.push('members_disagree');
  const { outsiders, missingKeys } = checkRecipients(version, messages.keys, recipients);
  verdict.outsiders = outsiders;
  const othersMissing = missingKeys.filter((fp) => fp !== list.me).length > 0;
  if (outsiders.some((o) => o.fp !== null || o.keyId === WILDCARD_KEY_ID || !othersMissing)) verdict.problems.push('extra_recipient');
  else if (outsiders.length > 0) verdict.notes.push('unknown_recipient');
  if (verdict.problems.length === 0 && !memberOf(current(list), signer)) verdict.problems.push('sender_removed');
  if (verdict.problems.length > 0) return done();

  const record = Object.hasOwn(messages.received, signer) ? messages.received[signer] : null;
  let kind;
  let missing = 0;
  if (!record) {
    kind = 'first';
  } else {
    const order = classifyReceived(record, envelope.seq);
    if (order.kind === 'duplicate') {
      if (held && (held.ts !== envelope.ts || held.text !== envelope.text)) {
        verdict.problems.push('replay');
        return done();
      }
      return { messages, verdict: { ...verdict, verified: true, kind: 'duplicate', receipt: true } };
    }
    // Right after a sender's first message the record has nothing below it: one more is in order, not a gap.
    kind = order.kind === 'gap' && order.missing === 0 ? 'in_order' : order.kind;
    missing = order.missing;
  }
  const received = { ...messages.received, [signer]: accept(record || emptyReceived(), envelope.seq) };
  return { messages: { ...messages, received }, verdict: { ...verdict, verified: true, kind, missing, receipt: true } };
}

/**
 * Drops what is held for fingerprints no longer in any version of the history (removed members long gone),
 * keeping `keys` and `received` bounded by the history.
 */
export function pruneMessages(list, messages) {
  const known = new Set(list.history.flatMap((v) => v.members.map((m) => m.fp)));
  const keep = (record) => Object.fromEntries(Object.entries(record).filter(([fp]) => known.has(fp)));
  const keys = keep(messages.keys);
  const received = keep(messages.received);
  if (Object.keys(keys).length === Object.keys(messages.keys).length && Object.keys(received).length === Object.keys(messages.received).length) return messages;
  return { ...messages, keys, received };
}

// --- messages waiting for a version of the list ---

/**
 * Holds `item` ({ver, ...} — a checked envelope with what the wiring needs to finish it) until the list's
 * version `ver` arrives, at most MAX_WAITING per group (the oldest given up first) and WAITING_MS each.
 * Returns {waiting, evicted}: what was given up (shown as unverifiable).
 */
export function holdForVersion(waiting, item, now) {
  const all = [...waiting, { item, until: now + WAITING_MS }];
  const evicted = all.length > MAX_WAITING ? all.slice(0, all.length - MAX_WAITING).map((w) => w.item) : [];
  return { waiting: all.slice(-MAX_WAITING), evicted };
}

/**
 * What can be checked now that the group holds `list`: {waiting, ready (their version is held, or older than
 * the current one: checkGroupText decides), expired (waited WAITING_MS: unverifiable)}.
 */
export function releaseWaiting(waiting, list, now) {
  const ready = [];
  const expired = [];
  const kept = [];
  const latest = current(list).ver;
  for (const w of waiting) {
    if (w.item.ver <= latest) ready.push(w.item);
    else if (w.until <= now) expired.push(w.item);
    else kept.push(w);
  }
  return { waiting: kept, ready, expired };
}
