// The pure core of groups (PROTOCOL §6 "Groups") under Node: the signed member list (bounds, the list hash,
// who may change it and whom, admins' seniority, versions out of order, two admins at once, one admin's two
// versions, forks below the head, removals and secrets), the group handles (a fixed vector, checked against
// Node's own HMAC), the gtext/greceipt/gleave/gkeys envelopes and their bounds, the checks of a received
// message (members disagree, a recipient outside the group, seq rules), keys from admins against pinned
// contacts, and the delivery counts.
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { test } from 'node:test';
import * as openpgp from 'openpgp';
import {
  MAX_HISTORY, MAX_MEMBERS, MAX_PENDING, PENDING_MS, PREVIOUS_SECRET_MS, applyVersion, buildGroupList, changeBetween,
  createGroupList, current, expireGroup, joinGroup, leaveProblem, leaveReceived, listHash, parseGroupList, proposeChange, readVersion, redoChange,
} from '../../public/js/grouplist.js';
import { GROUP_HANDLE_LABEL, HANDLES_PER_GROUP, deriveMemberHandle, groupHandles, versionHandles } from '../../public/js/grouphandles.js';
import {
  MAX_GROUP_ACKS, MAX_GROUP_KEYS, MAX_WAITING, WAITING_MS, WILDCARD_KEY_ID, armorBody, buildGroupKeys, buildGroupLeave, buildGroupReceipt,
  buildGroupRemoved, removalNotice,
  buildGroupText, checkGroupText, checkRecipients, contactKeys, emptyGroupMessages, holdForVersion, keysFromContacts, memberKeyStatus,
  parseGroupEnvelope, pruneMessages, releaseWaiting, sameKey, sendPlan, strangerRecipients, takeGroupKeys, takeSendSeq, withOwnKey,
} from '../../public/js/groupmessages.js';
import { MAX_TRACKED, deliveries, deliveryOf, emptyDeliveries } from '../../public/js/groupdelivery.js';
import { newGroup, withVersionOutcome } from '../../public/js/groups.js';
import { groupLineText } from '../../public/js/grouptext.js';
import { deriveHandle, isHandle, listenPlan, toBase64Url } from '../../public/js/rendezvous.js';
import { armorPublicKey, hostileRsaKey, withUnsignedUserId } from './helpers/hostilekey.mjs';

const ALICE = 'A'.repeat(40);
const BOB = 'B'.repeat(40);
const CAROL = 'C'.repeat(40);
const DAVE = 'D'.repeat(40);
const EVE = 'E'.repeat(40);
const GID = toBase64Url(new Uint8Array(16).fill(1));
const secret = (n) => toBase64Url(new Uint8Array(32).fill(n));
const NOW = Date.UTC(2026, 0, 1, 12);
const DAY = 24 * 60 * 60 * 1000;

/** A member as parsed; `admin` true (an admin since version 1) or the version it became admin at. */
const member = (fp, name, admin = false) => (admin ? { fp, name, admin: true, since: admin === true ? 1 : admin } : { fp, name, admin: false });
const BASE_MEMBERS = [member(ALICE, 'Alice', true), member(BOB, 'Bob', true), member(CAROL, 'Carol'), member(DAVE, 'Dave')];

/** A read version (readVersion) with these fields; `prev` may be a version (its hash is taken). */
async function version({ ver = 1, prev = null, ts = NOW, name = 'Family', s = secret(1), members = BASE_MEMBERS, gid = GID } = {}) {
  const text = buildGroupList({ gid, ver, prev: prev && typeof prev === 'object' ? prev.hash : prev, ts, name, secret: s, members });
  const read = await readVersion(text);
  assert.ok(read.ok, JSON.stringify(read));
  return read.version;
}

/** Dave's state holding `v1` (signed by Alice). */
async function daveWith(v1) {
  const { state, result } = joinGroup(v1, ALICE, { me: DAVE });
  assert.ok(result.ok);
  return state;
}

// --- the member list ---

test('a group envelope is read with every field checked; the list hash is SHA-256 over its UTF-8 bytes', async () => {
  const text = buildGroupList({ gid: GID, ver: 1, ts: NOW, name: 'Fämily 👪', secret: secret(1), members: BASE_MEMBERS });
  const parsed = parseGroupList(text);
  assert.ok(parsed.ok);
  assert.deepEqual(parsed.list, { gid: GID, ver: 1, prev: null, ts: NOW, name: 'Fämily 👪', secret: secret(1), members: BASE_MEMBERS });
  assert.equal(JSON.parse(text).prev, undefined, 'version 1 has no prev');
  const hash = await listHash(text);
  assert.equal(hash, createHash('sha256').update(Buffer.from(text, 'utf8')).digest('base64url'));
  assert.equal(hash.length, 43);
  // An admin carries its seniority (the version it became admin at), written after the flag.
  assert.deepEqual(JSON.parse(text).members.slice(0, 3), [{ fp: ALICE, name: 'Alice', admin: true, since: 1 }, { fp: BOB, name: 'Bob', admin: true, since: 1 }, { fp: CAROL, name: 'Carol' }]);
  // Unknown fields are ignored; a member's admin flag may be absent (not an admin).
  const extra = JSON.stringify({ ...JSON.parse(text), future: 1, members: [{ fp: ALICE, name: 'A', admin: true, since: 1, x: 1 }, { fp: BOB, name: 'B' }] });
  assert.deepEqual(parseGroupList(extra).list.members, [member(ALICE, 'A', true), member(BOB, 'B')]);
});

test('the list hash is the same over the literal data as signed and over the text a receiver decrypts', async () => {
  const { privateKey, publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'A' }], format: 'object' });
  const text = buildGroupList({ gid: GID, ver: 1, ts: NOW, name: 'Ünïcode "quoted"\n newline', secret: secret(1), members: BASE_MEMBERS });
  assert.ok(!/[\r\n]/.test(text), 'JSON.stringify escapes line breaks');
  const sealed = await openpgp.encrypt({ message: await openpgp.createMessage({ text }), encryptionKeys: publicKey, signingKeys: privateKey });
  const asText = await openpgp.decrypt({ message: await openpgp.readMessage({ armoredMessage: sealed }), decryptionKeys: privateKey });
  const asBytes = await openpgp.decrypt({ message: await openpgp.readMessage({ armoredMessage: sealed }), decryptionKeys: privateKey, format: 'binary' });
  assert.equal(await listHash(asText.data), createHash('sha256').update(asBytes.data).digest('base64url'));
  // A text with a raw line break is refused: OpenPGP.js rewrites line endings, so its bytes would not be the signed ones.
  const pretty = JSON.stringify(JSON.parse(text), null, 1);
  assert.deepEqual(parseGroupList(pretty), { ok: false, problem: 'malformed', detail: 'line_break' });
});

test('a group envelope outside the bounds is malformed: 65 members, long names, no admin, a fingerprint twice, bad fields', async () => {
  const good = { v: 1, kind: 'group', gid: GID, ver: 2, prev: secret(9), ts: NOW, name: 'G', secret: secret(1), members: BASE_MEMBERS };
  const fp = (i) => i.toString(16).toUpperCase().padStart(40, '0');
  const many = (n) => Array.from({ length: n }, (_, i) => member(fp(i + 1), `m${i}`, i === 0));
  assert.ok(parseGroupList(JSON.stringify({ ...good, members: many(MAX_MEMBERS) })).ok, '64 members');
  assert.ok(parseGroupList(JSON.stringify({ ...good, members: [member(ALICE, 'A', 2)] })).ok, 'an admin since this version');
  assert.ok(parseGroupList(JSON.stringify({ ...good, name: '👪'.repeat(64) })).ok, '64 code points (128 UTF-16 units)');
  const cases = [
    [{ members: many(MAX_MEMBERS + 1) }, 'too_many_members'],
    [{ members: [] }, 'members'],
    [{ members: 'x' }, 'members'],
    [{ name: 'x'.repeat(65) }, 'name'],
    [{ name: '👪'.repeat(65) }, 'name'],
    [{ name: '' }, 'name'],
    [{ name: 5 }, 'name'],
    [{ members: [{ fp: ALICE, name: 'x'.repeat(65), admin: true }] }, 'member_name'],
    [{ members: [{ fp: ALICE, name: '', admin: true }] }, 'member_name'],
    [{ members: [member(ALICE, 'A'), member(BOB, 'B')] }, 'no_admin'],
    [{ members: [member(ALICE, 'A', true), member(ALICE, 'A again')] }, 'member_twice'],
    [{ members: [member(ALICE.toLowerCase(), 'A', true)] }, 'member_fp'],
    [{ members: [member('A'.repeat(39), 'A', true)] }, 'member_fp'],
    [{ members: [{ fp: ALICE, name: 'A', admin: 'yes' }] }, 'member_admin'],
    // An admin's seniority: a version from 1 to this one; nobody else has one.
    [{ members: [{ fp: ALICE, name: 'A', admin: true }] }, 'member_since'],
    [{ members: [{ fp: ALICE, name: 'A', admin: true, since: 0 }] }, 'member_since'],
    [{ members: [{ fp: ALICE, name: 'A', admin: true, since: 3 }] }, 'member_since'], // after version 2
    [{ members: [{ fp: ALICE, name: 'A', admin: true, since: '1' }] }, 'member_since'],
    [{ members: [{ fp: ALICE, name: 'A', admin: true, since: 1.5 }] }, 'member_since'],
    [{ members: [member(ALICE, 'A', true), { fp: BOB, name: 'B', since: 1 }] }, 'member_since'],
    [{ members: [member(ALICE, 'A', true), { fp: BOB, name: 'B', admin: false, since: 1 }] }, 'member_since'],
    [{ members: [null] }, 'member'],
    [{ gid: 'short' }, 'gid'],
    [{ gid: `${GID.slice(0, 21)}B` }, 'gid'], // 22 characters, but not the encoding of 16 bytes
    [{ ver: 0 }, 'ver'],
    [{ ver: 1.5 }, 'ver'],
    [{ ver: '2' }, 'ver'],
    [{ prev: undefined }, 'prev'],
    [{ prev: 'x'.repeat(43) }, 'prev'],
    [{ ver: 1 }, 'prev'], // version 1 has no prev
    [{ ts: -1 }, 'ts'],
    [{ secret: secret(1).slice(1) }, 'secret'],
    [{ secret: `${secret(1).slice(0, 42)}B` }, 'secret'], // 43 characters that are not 32 bytes
    [{ secret: undefined }, 'secret'],
    [{ kind: 'gtext' }, 'kind'],
  ];
  for (const [fields, detail] of cases) {
    assert.deepEqual(parseGroupList(JSON.stringify({ ...good, ...fields })), { ok: false, problem: 'malformed', detail }, detail);
  }
  assert.equal(parseGroupList(JSON.stringify({ ...good, v: 2 })).problem, 'version');
  assert.equal(parseGroupList('not json').problem, 'malformed');
  assert.equal(parseGroupList('[1]').problem, 'malformed');
});

test('version 1 is taken when its signer is an admin in it and we are in it; a member who is no admin cannot make one', async () => {
  const v1 = await version();
  assert.equal(joinGroup(v1, CAROL, { me: DAVE }).result.problem, 'not_admin');
  assert.equal(joinGroup(v1, EVE, { me: DAVE }).result.problem, 'not_admin');
  assert.equal(joinGroup(v1, ALICE, { me: EVE }).result.problem, 'not_member');
  const { state, result } = joinGroup(v1, ALICE, { me: DAVE });
  assert.deepEqual(result, { ok: true, applied: { ver: 1, hash: v1.hash, signer: ALICE }, removedMe: false, change: null });
  assert.equal(current(state).hash, v1.hash);
  assert.equal(current(state).text, v1.text, 'the current version keeps its signed text, to hand on byte for byte');
  // The creator's own version 1.
  const made = createGroupList({ gid: GID, ts: NOW, name: 'Mine', secret: secret(3), me: { fp: ALICE, name: 'Alice' }, others: [member(BOB, 'Bob')] });
  assert.ok(made.ok);
  const read = await readVersion(made.text);
  assert.ok(joinGroup(read.version, ALICE, { me: ALICE }).result.ok);
});

test('version n + 1 applies when prev is the hash of n and its signer is an admin in n; a forged change by a non-admin is refused', async () => {
  const v1 = await version();
  let dave = await daveWith(v1);
  // Carol (a member, no admin) makes herself admin and adds Eve: refused, nothing changes.
  const forged = await version({
    ver: 2, prev: v1, members: [...BASE_MEMBERS.filter((m) => m.fp !== CAROL), member(CAROL, 'Carol', true), member(EVE, 'Eve')],
  });
  let step = applyVersion(dave, forged, CAROL, NOW);
  assert.equal(step.result.problem, 'not_admin');
  assert.equal(step.state, dave);
  // Eve, made admin in the version she signs, is not an admin in the version before it.
  const selfMade = await version({ ver: 2, prev: v1, members: [...BASE_MEMBERS, member(EVE, 'Eve', true)] });
  assert.equal(applyVersion(dave, selfMade, EVE, NOW).result.problem, 'not_admin');
  // Bob (admin in version 1) adds Eve.
  const v2 = await version({ ver: 2, prev: v1, members: [...BASE_MEMBERS, member(EVE, 'Eve')] });
  step = applyVersion(dave, v2, BOB, NOW);
  assert.equal(step.result.ok, true);
  assert.deepEqual(step.result.applied, { ver: 2, hash: v2.hash, signer: BOB });
  assert.deepEqual(step.result.change.add, [member(EVE, 'Eve')]);
  dave = step.state;
  assert.equal(current(dave).ver, 2);
  assert.equal(dave.history[0].text, undefined, 'only the current version keeps its text');
  // The same version again: nothing to do.
  assert.equal(applyVersion(dave, v2, BOB, NOW).result.duplicate, true);
  // Another group's version is not this one's.
  const other = await version({ ver: 3, prev: v2, gid: toBase64Url(new Uint8Array(16).fill(2)) });
  assert.equal(applyVersion(dave, other, ALICE, NOW).result.problem, 'wrong_group');
});

test('a version on the wrong predecessor is refused; a second version 1 too', async () => {
  const v1 = await version();
  const v2 = await version({ ver: 2, prev: v1, name: 'Renamed' });
  const dave = applyVersion(await daveWith(v1), v2, ALICE, NOW).state;
  // Version 3 whose prev is version 1: it claims to follow a version it does not follow.
  const stale = await version({ ver: 3, prev: v1, name: 'Stale' });
  assert.equal(applyVersion(dave, stale, ALICE, NOW).result.problem, 'wrong_prev');
  const again = await version({ name: 'Another first' });
  assert.equal(applyVersion(dave, again, ALICE, NOW).result.problem, 'wrong_prev');
});

test('removing a member needs a new secret; the previous secret is kept for 7 days', async () => {
  const v1 = await version();
  const dave = await daveWith(v1);
  const withoutCarol = BASE_MEMBERS.filter((m) => m.fp !== CAROL);
  const sameSecret = await version({ ver: 2, prev: v1, members: withoutCarol });
  assert.equal(applyVersion(dave, sameSecret, ALICE, NOW).result.problem, 'removed_without_new_secret');
  const v2 = await version({ ver: 2, prev: v1, members: withoutCarol, s: secret(2) });
  const step = applyVersion(dave, v2, ALICE, NOW);
  assert.ok(step.result.ok);
  assert.deepEqual(step.result.change.remove, [CAROL]);
  assert.equal(step.result.change.newSecret, true);
  assert.deepEqual(step.state.previousSecrets, [{ secret: secret(1), until: NOW + PREVIOUS_SECRET_MS }]);
  assert.deepEqual(expireGroup(step.state, NOW + PREVIOUS_SECRET_MS - 1).state.previousSecrets.length, 1);
  assert.deepEqual(expireGroup(step.state, NOW + PREVIOUS_SECRET_MS).state.previousSecrets, []);
  // Removed: Dave learns it from the version that removes him (and listens nowhere from then on, see the handles).
  const v3 = await version({ ver: 3, prev: v2, members: withoutCarol.filter((m) => m.fp !== DAVE), s: secret(3) });
  assert.equal(applyVersion(step.state, v3, BOB, NOW).result.removedMe, true);
});

test('a version that arrives before its predecessor waits, and applies when the predecessor arrives', async () => {
  const v1 = await version();
  const v2 = await version({ ver: 2, prev: v1, name: 'Two' });
  const v3 = await version({ ver: 3, prev: v2, name: 'Three' });
  const v4 = await version({ ver: 4, prev: v3, name: 'Four' });
  let dave = await daveWith(v1);
  let step = applyVersion(dave, v4, BOB, NOW);
  assert.deepEqual([step.result.problem, step.result.held], ['gap', true]);
  step = applyVersion(step.state, v3, ALICE, NOW);
  assert.equal(step.result.problem, 'gap');
  assert.equal(current(step.state).ver, 1, 'nothing applied yet');
  step = applyVersion(step.state, v2, ALICE, NOW);
  assert.deepEqual(step.result.applied, { ver: 2, hash: v2.hash, signer: ALICE });
  assert.deepEqual(step.released.map((r) => r.applied), [{ ver: 3, hash: v3.hash, signer: ALICE }, { ver: 4, hash: v4.hash, signer: BOB }]);
  dave = step.state;
  assert.equal(current(dave).name, 'Four');
  assert.deepEqual(dave.pending, []);
  // A waiting version is checked like any other once it can be: a non-admin's is refused then.
  const w2 = await version({ ver: 5, prev: v4, name: 'Five' });
  const w3 = await version({ ver: 6, prev: w2, name: 'Six, forged' });
  step = applyVersion(dave, w3, CAROL, NOW);
  assert.equal(step.result.problem, 'gap');
  step = applyVersion(step.state, w2, ALICE, NOW);
  assert.equal(step.result.ok, true);
  assert.equal(step.released[0].problem, 'not_admin');
  assert.equal(current(step.state).ver, 5);
  assert.deepEqual(step.state.pending, []);
});

test('versions waiting for a predecessor are bounded (the nearest kept) and given up after 7 days', async () => {
  const v1 = await version();
  const dave = await daveWith(v1);
  let state = dave;
  const waiting = [];
  for (let ver = 3; ver < 3 + MAX_PENDING + 1; ver += 1) {
    const v = await version({ ver, prev: secret(ver), name: `v${ver}` }); // predecessors nobody has
    waiting.push(v);
  }
  // The farthest first: each nearer one pushes out the farthest once the bound is reached.
  for (const v of [...waiting].reverse()) state = applyVersion(state, v, ALICE, NOW).state;
  assert.equal(state.pending.length, MAX_PENDING);
  assert.deepEqual(state.pending.map((p) => p.version.ver), waiting.slice(0, MAX_PENDING).map((v) => v.ver));
  // A farther one than all held is not kept.
  const far = await version({ ver: 50, prev: secret(50) });
  assert.deepEqual([applyVersion(state, far, ALICE, NOW).result.held], [false]);
  const { state: later, expired } = expireGroup(state, NOW + PENDING_MS);
  assert.deepEqual(later.pending, []);
  assert.equal(expired.length, MAX_PENDING);
});

/** Applies [version, signer] pairs in turn: {state, results} with each version's result keyed by its hash (released ones too). */
function applyAll(state, steps, now = NOW) {
  const results = new Map();
  for (const [v, signer] of steps) {
    const step = applyVersion(state, v, signer, now);
    state = step.state;
    results.set(v.hash, step.result);
    for (const r of step.released) results.set(r.applied?.hash ?? r.version?.hash ?? r.conflict.dropped[0].hash, r);
  }
  return { state, results };
}

const pick = (o, keys) => Object.fromEntries(keys.map((k) => [k, o[k]]));

const permutations = (xs) => (xs.length <= 1 ? [xs] : xs.flatMap((x, i) => permutations([...xs.slice(0, i), ...xs.slice(i + 1)]).map((rest) => [x, ...rest])));

/** Versions with `fields` and ts NOW, NOW + 1, …: `want` whose list hash is below `than`'s and `want` above (a grinding attacker's tries). */
async function grind(fields, than, want = 3) {
  const below = [];
  const above = [];
  for (let ts = NOW; below.length < want || above.length < want; ts += 1) {
    assert.ok(ts < NOW + 500, 'hashes fall on both sides');
    const v = await version({ ...fields, ts });
    (v.hash < than.hash ? below : above).push(v);
  }
  return { below: below.slice(0, want), above: above.slice(0, want) };
}

/** Version 1 by Alice and Bob (both admins since 1: Alice is senior by her smaller fingerprint); version 2, by Alice, makes Carol an admin. */
async function seniorityGroup() {
  const v1 = await version();
  const v2 = await version({ ver: 2, prev: v1, members: [member(ALICE, 'Alice', true), member(BOB, 'Bob', true), member(CAROL, 'Carol', 2), member(DAVE, 'Dave')] });
  const dave = applyVersion(await daveWith(v1), v2, ALICE, NOW);
  assert.ok(dave.result.ok);
  return { v1, v2, dave: dave.state };
}

test('two admins changing the group at once: the more senior admin\'s change wins for everyone, whatever the order and the hashes', async () => {
  const { v1, v2, dave: start } = await seniorityGroup();
  // Alice adds Eve; Carol (admin since 2, junior to Alice) renames the group, at several times, so that her
  // version's hash falls on both sides of Alice's: the hash decides nothing between two admins.
  const a3 = await version({ ver: 3, prev: v2, members: [...v2.members, member(EVE, 'Eve')] });
  const { below, above } = await grind({ ver: 3, prev: v2, members: v2.members, name: 'Carol\'s name' }, a3);
  for (const c3 of [...below, ...above]) {
    const finals = [];
    for (const order of [[[a3, ALICE], [c3, CAROL]], [[c3, CAROL], [a3, ALICE]]]) {
      const { state, results } = applyAll(start, order);
      const second = results.get(order[1][0].hash);
      assert.ok(second.ok);
      assert.deepEqual(second.conflict.kept, { ver: 3, hash: a3.hash, signer: ALICE });
      assert.deepEqual(second.conflict.dropped.map(({ ver, hash, signer }) => ({ ver, hash, signer })), [{ ver: 3, hash: c3.hash, signer: CAROL }]);
      assert.equal(second.conflict.equivocation, null);
      // The dropped change is named, so its admin can make it again on top of the winner.
      assert.deepEqual(second.conflict.dropped[0].change, changeBetween(v2, c3));
      assert.equal(second.applied ? second.applied.hash : null, order[1][0] === a3 ? a3.hash : null);
      finals.push(state);
    }
    assert.equal(current(finals[0]).hash, a3.hash);
    assert.deepEqual(finals[0].history.map((v) => v.hash), finals[1].history.map((v) => v.hash));
    assert.deepEqual(finals[0].dropped, [c3.hash]);
    assert.deepEqual(finals[1].dropped, [c3.hash]);
  }
  // Two admins of the same seniority (Alice and Bob, both since 1): the smaller fingerprint wins, whatever the hashes.
  const a2 = await version({ ver: 2, prev: v1, members: [...BASE_MEMBERS, member(EVE, 'Eve')] });
  const bobs = await grind({ ver: 2, prev: v1, name: 'Bob\'s name' }, a2, 2);
  for (const b2 of [...bobs.below, ...bobs.above]) {
    for (const order of [[[a2, ALICE], [b2, BOB]], [[b2, BOB], [a2, ALICE]]]) {
      const { state, results } = applyAll(await daveWith(v1), order);
      assert.equal(current(state).hash, a2.hash);
      assert.equal(results.get(order[1][0].hash).conflict.kept.signer, ALICE);
    }
  }
  // The loser's admin makes the change again on top of the winner: a version 4 everyone takes.
  const c3 = below[0];
  const held = applyAll(start, [[c3, CAROL], [a3, ALICE]]).state;
  const redo = proposeChange({ ...held, me: CAROL }, changeBetween(v2, c3), { ts: NOW + 3 });
  assert.ok(redo.ok);
  const v4 = (await readVersion(redo.text)).version;
  assert.equal(v4.prev, a3.hash);
  const step = applyVersion(held, v4, CAROL, NOW);
  assert.ok(step.result.ok);
  assert.deepEqual([current(step.state).name, current(step.state).members.map((m) => m.fp)], ['Carol\'s name', [ALICE, BOB, CAROL, DAVE, EVE]], 'both changes are in');
  // What was built on the loser is refused as superseded, and so is the loser when it comes again.
  const onLoser = await version({ ver: 4, prev: c3, members: v2.members, name: 'on the loser' });
  assert.equal(applyVersion(held, onLoser, CAROL, NOW).result.problem, 'superseded');
  assert.equal(applyVersion(held, c3, CAROL, NOW).result.problem, 'superseded');
});

test('an admin removed by a more senior one cannot come back by a competing version, however it grinds its hash', async () => {
  // Alice makes Bob an admin (since 2), then removes him (version 3, a new secret).
  const plain = [member(ALICE, 'Alice', true), member(BOB, 'Bob'), member(CAROL, 'Carol'), member(DAVE, 'Dave')];
  const v1 = await version({ members: plain });
  const withBob = [member(ALICE, 'Alice', true), member(BOB, 'Bob', 2), member(CAROL, 'Carol'), member(DAVE, 'Dave')];
  const v2 = await version({ ver: 2, prev: v1, members: withBob });
  const v3 = await version({ ver: 3, prev: v2, members: withBob.filter((m) => m.fp !== BOB), s: secret(3) });
  const { state: start } = joinGroup(v2, ALICE, { me: DAVE });
  // Bob, an admin in version 2, signs his own version 3 on it that keeps him, trying many times until its hash
  // is smaller than Alice's (and some larger): Alice's always wins, in either order.
  const { below, above } = await grind({ ver: 3, prev: v2, members: withBob, name: 'Bob stays' }, v3, 4);
  for (const forged of [...below, ...above]) {
    for (const order of [[[v3, ALICE], [forged, BOB]], [[forged, BOB], [v3, ALICE]]]) {
      const { state, results } = applyAll(start, order);
      assert.equal(current(state).hash, v3.hash);
      assert.ok(!current(state).members.some((m) => m.fp === BOB), 'Bob stays removed');
      assert.deepEqual(results.get(order[1][0].hash).conflict.kept, { ver: 3, hash: v3.hash, signer: ALICE });
    }
  }
  // Once anything is built on Alice's version, Bob's comes too late for ever: it is not even compared.
  const v4 = await version({ ver: 4, prev: v3, members: withBob.filter((m) => m.fp !== BOB), s: secret(3), name: 'Four' });
  const moved = applyAll(start, [[v3, ALICE], [v4, ALICE]]).state;
  for (const forged of below) {
    const step = applyVersion(moved, forged, BOB, NOW);
    assert.deepEqual([step.result.problem, step.result.equivocation], ['too_late', null]);
    assert.equal(step.state, moved, 'nothing changes');
  }
  // Nor can he remove or demote Alice in his version: she is senior to him.
  const coup = await version({ ver: 3, prev: v2, members: [member(ALICE, 'Alice'), member(BOB, 'Bob', 2), member(CAROL, 'Carol')], s: secret(4) });
  assert.equal(applyVersion(start, coup, BOB, NOW).result.problem, 'not_allowed');
  const ousted = await version({ ver: 3, prev: v2, members: [member(BOB, 'Bob', 2), member(CAROL, 'Carol'), member(DAVE, 'Dave')], s: secret(4) });
  assert.equal(applyVersion(start, ousted, BOB, NOW).result.problem, 'not_allowed');
  // Nor claim a seniority he does not have.
  const older = await version({ ver: 3, prev: v2, members: [member(ALICE, 'Alice', true), member(BOB, 'Bob', true), member(CAROL, 'Carol'), member(DAVE, 'Dave')] });
  assert.equal(applyVersion(start, older, BOB, NOW).result.problem, 'wrong_seniority');
});

test('who may change whom: an admin removes or demotes only members who are no admins, junior admins, or itself', async () => {
  // Alice and Bob admins since 1 (Alice senior: smaller fingerprint), Carol since 2, Dave a member.
  const { v2, dave } = await seniorityGroup();
  const [alice, bob, carol, daveM] = v2.members;
  const on2 = (members, s = secret(1), name = 'Family') => version({ ver: 3, prev: v2, members, s, name });
  const cases = [
    // [signer, members, secret, expected]
    ['Carol removes Alice', CAROL, [bob, carol, daveM], secret(3), 'not_allowed'],
    ['Carol demotes Bob', CAROL, [alice, member(BOB, 'Bob'), carol, daveM], secret(1), 'not_allowed'],
    ['Bob removes Alice (same seniority, larger fingerprint)', BOB, [bob, carol, daveM], secret(3), 'not_allowed'],
    ['Bob demotes Alice', BOB, [member(ALICE, 'Alice'), bob, carol, daveM], secret(1), 'not_allowed'],
    ['Carol removes Dave (no admin)', CAROL, [alice, bob, carol], secret(3), null],
    ['Carol steps down', CAROL, [alice, bob, member(CAROL, 'Carol'), daveM], secret(1), null],
    ['Carol leaves', CAROL, [alice, bob, daveM], secret(3), null],
    ['Carol makes Dave an admin (since 3) and renames Alice', CAROL, [member(ALICE, 'Mum', true), bob, carol, member(DAVE, 'Dave', 3)], secret(1), null],
    ['Carol adds Eve', CAROL, [alice, bob, carol, daveM, member(EVE, 'Eve')], secret(1), null],
    ['Bob demotes Carol', BOB, [alice, bob, member(CAROL, 'Carol'), daveM], secret(1), null],
    ['Alice removes Bob', ALICE, [alice, carol, daveM], secret(3), null],
    ['Carol makes Dave an admin with an older seniority', CAROL, [alice, bob, carol, member(DAVE, 'Dave', 2)], secret(1), 'wrong_seniority'],
    ['Carol makes herself older', CAROL, [alice, bob, member(CAROL, 'Carol', 1), daveM], secret(1), 'wrong_seniority'],
  ];
  for (const [what, signer, members, s, expected] of cases) {
    const { result } = applyVersion(dave, await on2(members, s), signer, NOW);
    assert.equal(result.ok ? null : result.problem, expected, what);
  }
  // The group name changes under any admin.
  assert.ok(applyVersion(dave, await on2(v2.members, secret(1), 'Carol\'s'), CAROL, NOW).result.ok);
  // Seniority is from the last time one became admin: Bob demoted and made admin again is junior to Carol.
  const v3 = await version({ ver: 3, prev: v2, members: [alice, member(BOB, 'Bob'), carol, daveM] });
  const v4 = await version({ ver: 4, prev: v3, members: [alice, member(BOB, 'Bob', 4), carol, daveM] });
  const again = applyAll(dave, [[v3, ALICE], [v4, ALICE]]);
  assert.equal(current(again.state).hash, v4.hash);
  const v5 = await version({ ver: 5, prev: v4, members: [alice, carol, daveM], s: secret(5) });
  assert.ok(applyVersion(again.state, v5, CAROL, NOW).result.ok, 'Carol (since 2) removes Bob (since 4)');
  // proposeChange keeps to the same rule, and a senior admin who sent gleave stays until it removes itself.
  const asCarol = { ...dave, me: CAROL };
  assert.equal(proposeChange(asCarol, { remove: [ALICE] }, { ts: NOW, secret: secret(3) }).problem, 'not_allowed');
  assert.equal(proposeChange(asCarol, { admin: { [BOB]: false } }, { ts: NOW }).problem, 'not_allowed');
  assert.ok(proposeChange(asCarol, { admin: { [CAROL]: false } }, { ts: NOW }).ok);
  const leaving = leaveReceived(leaveReceived(asCarol, ALICE, current(asCarol).ver).state, DAVE, current(asCarol).ver).state;
  const next = proposeChange(leaving, { name: 'Without Dave' }, { ts: NOW, secret: secret(3) });
  assert.ok(next.ok);
  assert.deepEqual(next.list.members.map((m) => m.fp), [ALICE, BOB, CAROL]);
  const applied = applyVersion(leaving, (await readVersion(next.text)).version, CAROL, NOW);
  assert.ok(applied.result.ok);
  assert.deepEqual(applied.state.leaving, [ALICE]);
  const byAlice = proposeChange({ ...leaveReceived(dave, CAROL, current(dave).ver).state, me: ALICE }, { name: 'x' }, { ts: NOW, secret: secret(3) });
  assert.deepEqual(byAlice.list.members.map((m) => m.fp), [ALICE, BOB, DAVE], 'a senior admin removes a junior leaver');
});

test('an admin who signs two different versions on the same one is flagged, and the smaller hash wins in either order', async () => {
  const v1 = await version();
  const x2 = await version({ ver: 2, prev: v1, name: 'x' });
  const y2 = await version({ ver: 2, prev: v1, name: 'y', s: secret(5) });
  const [winner, loser] = x2.hash < y2.hash ? [x2, y2] : [y2, x2];
  const finals = [];
  for (const [first, second] of [[x2, y2], [y2, x2]]) {
    const { state, results } = applyAll(await daveWith(v1), [[first, ALICE], [second, ALICE]]);
    const r = results.get(second.hash);
    assert.equal(r.conflict.equivocation, ALICE, '"Alice signed two different changes to the group"');
    assert.deepEqual([r.conflict.kept.hash, r.conflict.dropped.map((d) => d.hash)], [winner.hash, [loser.hash]]);
    finals.push(state);
  }
  assert.deepEqual(finals.map((s) => current(s).hash), [winner.hash, winner.hash]);
  // Seen only after the head moved on, the other one is too late, and still names the equivocation.
  const z3 = await version({ ver: 3, prev: winner, name: 'z' });
  const moved = applyAll(await daveWith(v1), [[winner, ALICE], [z3, BOB]]).state;
  assert.deepEqual(pick(applyVersion(moved, loser, ALICE, NOW).result, ['problem', 'equivocation']), { problem: 'too_late', equivocation: ALICE });
  // Not an equivocation when another admin signed the version it would replace.
  assert.equal(applyVersion(moved, loser, BOB, NOW).result.equivocation, null);
});


test('an admin\'s two versions under one number become an alert naming that admin, at the head and when too late', async () => {
  const v1 = await version();
  const x2 = await version({ ver: 2, prev: v1, name: 'x' });
  const y2 = await version({ ver: 2, prev: v1, name: 'y', s: secret(5) });
  const [winner, loser] = x2.hash < y2.hash ? [x2, y2] : [y2, x2];
  for (const [first, second] of [[winner, loser], [loser, winner]]) {
    const start = newGroup(applyVersion(await daveWith(v1), first, ALICE, NOW).state, emptyGroupMessages(), NOW);
    const { result } = applyVersion(start.list, second, ALICE, NOW);
    const group = withVersionOutcome(start, result, ALICE);
    assert.deepEqual(group.alerts.map((a) => [a.what, a.by]), [['equivocation', ALICE]]);
    assert.equal(group.lines.filter((l) => l.what === 'conflict').length, 0, 'not shown as two admins at once');
    assert.match(groupLineText(group, group.alerts[0], DAVE), /^Alice signed two different versions of the member list under the same number/);
  }
  // Too late (the head moved on): refused, and the equivocation named too.
  const z3 = await version({ ver: 3, prev: winner, name: 'z' });
  const moved = applyAll(await daveWith(v1), [[winner, ALICE], [z3, BOB]]).state;
  const late = withVersionOutcome(newGroup(moved, emptyGroupMessages(), NOW), applyVersion(moved, loser, ALICE, NOW).result, ALICE);
  assert.deepEqual(late.alerts.map((a) => a.what), ['change_refused', 'equivocation']);
  // Two admins at once is no equivocation: no such alert.
  const b2 = await version({ ver: 2, prev: v1, name: 'b' });
  const both = applyAll(await daveWith(v1), [[winner, ALICE]]).state;
  const two = withVersionOutcome(newGroup(both, emptyGroupMessages(), NOW), applyVersion(both, b2, BOB, NOW).result, BOB);
  assert.deepEqual(two.alerts, []);
  assert.deepEqual(two.lines.map((l) => l.what), ['conflict']);
});

test('a late fork by an admin senior to every version it drops replaces them: Alice\'s a2 over Bob\'s b2 and b3 in every order, for every member', async () => {
  const v1 = await version();
  const b2 = await version({ ver: 2, prev: v1, name: 'Bob\'s', s: secret(6) }); // Bob
  const b3 = await version({ ver: 3, prev: b2, members: [...BASE_MEMBERS, member(EVE, 'Eve')], s: secret(7) }); // Bob, on his own
  const a2 = await version({ ver: 2, prev: v1, name: 'Alice\'s', s: secret(2) }); // Alice, senior to Bob
  const b4 = await version({ ver: 4, prev: b3, name: 'Bob\'s 4' }); // Bob, still on his chain
  const signer = new Map([[b2.hash, BOB], [b3.hash, BOB], [a2.hash, ALICE]]);
  for (const me of [ALICE, BOB, CAROL, DAVE]) {
    const start = joinGroup(v1, ALICE, { me }).state;
    for (const order of permutations([b2, b3, a2])) {
      const { state, results } = applyAll(start, order.map((v) => [v, signer.get(v.hash)]));
      const names = `${me[0]}: ${order.map((v) => (v === a2 ? 'a2' : `b${v.ver}`)).join(', ')}`;
      assert.equal(current(state).hash, a2.hash, names);
      assert.deepEqual(state.history.map((v) => v.hash), [v1.hash, a2.hash], names);
      assert.ok(state.dropped.includes(b2.hash), names);
      if (order.indexOf(a2) === 2) {
        // Bob's 3 was applied before Alice's 2 arrived: hers drops both of Bob's, named for the words shown
        // ("Alice's change replaced later changes by Bob") and for Bob's client to make them again.
        const { conflict } = results.get(a2.hash);
        assert.deepEqual(conflict.kept, { ver: 2, hash: a2.hash, signer: ALICE }, names);
        assert.deepEqual(conflict.dropped.map((d) => [d.ver, d.hash, d.signer]), [[2, b2.hash, BOB], [3, b3.hash, BOB]], names);
        assert.deepEqual([conflict.dropped[0].change.name, conflict.dropped[1].change.add.map((m) => m.fp)], ['Bob\'s', [EVE]], names);
        assert.deepEqual([conflict.late, conflict.equivocation], [true, null], names);
        assert.deepEqual(state.dropped, [b2.hash, b3.hash], names);
        // What Bob builds on his chain afterwards is refused.
        assert.equal(applyVersion(state, b4, BOB, NOW).result.problem, 'superseded', names);
        // Messages may have gone to the handles of both secrets held meanwhile (at most two are kept).
        assert.deepEqual(state.previousSecrets.map((p) => p.secret), [secret(6), secret(7)], names);
      } else {
        assert.equal(results.get(b3.hash).problem, 'superseded', names);
      }
    }
  }
});

test('a late fork is too_late when a version it would drop was signed by an admin it does not outrank', async () => {
  const v1 = await version();
  const b2 = await version({ ver: 2, prev: v1, name: 'Bob\'s' });
  const b3 = await version({ ver: 3, prev: b2, members: [...BASE_MEMBERS, member(EVE, 'Eve')] });
  let chain = applyAll(await daveWith(v1), [[b2, BOB], [b3, BOB]]).state;
  let prev = b3;
  for (let ver = 4; ver <= 5; ver += 1) {
    prev = await version({ ver, prev, name: `v${ver}`, members: b3.members });
    chain = applyVersion(chain, prev, ALICE, NOW).state;
  }
  assert.equal(current(chain).ver, 5);
  // Alice's own versions 4 and 5 are on Bob's chain: nobody outranks itself, so her fork at 1 changes nothing.
  // Bob's second version 3 is too late (Alice signed 4 and 5) and an equivocation (he signed the 3 held).
  const a2 = await version({ ver: 2, prev: v1, name: 'Alice\'s', s: secret(2) });
  for (const [fork, by, equivocation] of [[a2, ALICE, null], [await version({ ver: 3, prev: b2, name: 'Bob again' }), BOB, BOB]]) {
    const step = applyVersion(chain, fork, by, NOW);
    assert.deepEqual(pick(step.result, ['problem', 'equivocation']), { problem: 'too_late', equivocation });
    assert.equal(step.state, chain);
  }
  // A forged fork is named for what it is, not as late.
  const forged = await version({ ver: 3, prev: b2, name: 'Carol\'s' });
  assert.equal(applyVersion(chain, forged, CAROL, NOW).result.problem, 'not_admin');

  // Alice and Bob admins since 1, Carol since 2. Held: Carol's 3 and 4, then Eve (made admin by Carol at 4)
  // signs 5. Bob outranks both (Eve ranked in version 4, where she is an admin since 4): his fork on 2 replaces
  // all three. With Alice's 6 on top, it does not: one version it would drop was signed by a senior admin.
  const { v2, dave } = await seniorityGroup();
  const c3 = await version({ ver: 3, prev: v2, members: v2.members, name: 'c3' });
  const withEve = [...v2.members, member(EVE, 'Eve', 4)];
  const c4 = await version({ ver: 4, prev: c3, members: withEve, name: 'c4' });
  const e5 = await version({ ver: 5, prev: c4, members: withEve, name: 'e5' });
  const a6 = await version({ ver: 6, prev: e5, members: withEve, name: 'a6' });
  const bob3 = await version({ ver: 3, prev: v2, members: v2.members, name: 'Bob 3' });
  const held = applyAll(dave, [[c3, CAROL], [c4, CAROL], [e5, EVE]]).state;
  assert.equal(current(held).hash, e5.hash);
  const won = applyVersion(held, bob3, BOB, NOW);
  assert.equal(current(won.state).hash, bob3.hash);
  assert.deepEqual(won.result.conflict.dropped.map((d) => d.signer), [CAROL, CAROL, EVE]);
  const withAlice = applyVersion(held, a6, ALICE, NOW).state;
  const late = applyVersion(withAlice, bob3, BOB, NOW);
  assert.deepEqual(pick(late.result, ['problem', 'equivocation']), { problem: 'too_late', equivocation: null });
  assert.equal(late.state, withAlice);
  // Carol cannot fork below her own versions either (nobody outranks itself), though she outranks Eve.
  assert.equal(applyVersion(held, await version({ ver: 3, prev: v2, members: v2.members, name: 'Carol again' }), CAROL, NOW).result.problem, 'too_late');
  assert.equal(applyVersion(held, await version({ ver: 4, prev: c3, members: withEve, name: 'Carol 4 again' }), CAROL, NOW).result.problem, 'too_late');
});

test('an admin removed by a more senior one never gets a fork accepted later, at any depth, however many it signs', async () => {
  // Alice, Bob and Carol admins since 1 (Alice > Bob > Carol by fingerprint). Carol renames (2), Alice removes
  // Bob (3, a new secret), Carol renames twice more (4, 5).
  const all = [member(ALICE, 'Alice', true), member(BOB, 'Bob', true), member(CAROL, 'Carol', true), member(DAVE, 'Dave')];
  const noBob = all.filter((m) => m.fp !== BOB);
  const v1 = await version({ members: all });
  const v2 = await version({ ver: 2, prev: v1, members: all, name: 'c2' });
  const v3 = await version({ ver: 3, prev: v2, members: noBob, name: 'c2', s: secret(3) });
  const v4 = await version({ ver: 4, prev: v3, members: noBob, name: 'c4', s: secret(3) });
  const v5 = await version({ ver: 5, prev: v4, members: noBob, name: 'c5', s: secret(3) });
  const chain = [[v1, ALICE], [v2, CAROL], [v3, ALICE], [v4, CAROL], [v5, CAROL]];
  const start = joinGroup(v1, ALICE, { me: DAVE }).state;
  // Bob's forks on every version he could build on (1 and 2, where he was an admin) and on those after (where he
  // is none), several each, keeping himself and removing Carol (junior to him).
  const forks = [];
  for (let at = 1; at <= 4; at += 1) {
    for (let i = 0; i < 3; i += 1) {
      forks.push(await version({ ver: at + 1, prev: chain[at - 1][0], members: i === 2 ? all.filter((m) => m.fp !== CAROL) : all, name: `Bob ${at}.${i}`, s: secret(10 + i) }));
    }
  }
  for (let head = 3; head <= 5; head += 1) {
    const held = applyAll(start, chain.slice(1, head)).state;
    assert.equal(current(held).hash, chain[head - 1][0].hash);
    for (const fork of forks) {
      const at = fork.ver - 1;
      if (at >= head) continue;
      const step = applyVersion(held, fork, BOB, NOW);
      const what = `head ${head}, fork on ${at}: ${fork.name}`;
      if (at >= 3) assert.equal(step.result.problem, 'not_admin', what);
      else if (at === head - 1) assert.deepEqual([step.result.applied, step.result.conflict.kept.hash], [null, v3.hash], what);
      else assert.deepEqual(pick(step.result, ['problem', 'equivocation']), { problem: 'too_late', equivocation: null }, what);
      assert.equal(current(step.state).hash, current(held).hash, what);
      assert.ok(!current(step.state).members.some((m) => m.fp === BOB), what);
    }
  }
  // Rank is taken where each signature is checked, and an admin's rank only falls: Bob steps down (2, his own
  // version), Carol makes him an admin again (3, since 3) and removes him (4). At version 1 Bob outranks
  // Carol, but his fork there would drop his own step-down, and nobody outranks itself.
  const bobMember = member(BOB, 'Bob');
  const w2 = await version({ ver: 2, prev: v1, members: [all[0], bobMember, all[2], all[3]] });
  const w3 = await version({ ver: 3, prev: w2, members: [all[0], member(BOB, 'Bob', 3), all[2], all[3]] });
  const w4 = await version({ ver: 4, prev: w3, members: noBob, s: secret(4) });
  const w = applyAll(start, [[w2, BOB], [w3, CAROL], [w4, CAROL]]).state;
  assert.equal(current(w).hash, w4.hash);
  for (const fork of forks.filter((f) => f.ver === 2)) assert.equal(applyVersion(w, fork, BOB, NOW).result.problem, 'too_late');
});

test('a late fork drops at most the versions kept; what was built on any of them is refused', async () => {
  // Bob signs versions 2 to 16 (the 16 kept); Alice's fork on version 1 replaces all 15 above it.
  const v1 = await version();
  let state = await daveWith(v1);
  const bobs = [];
  let prev = v1;
  for (let ver = 2; ver <= MAX_HISTORY; ver += 1) {
    prev = await version({ ver, prev, name: `b${ver}` });
    bobs.push(prev);
    state = applyVersion(state, prev, BOB, NOW).state;
  }
  assert.equal(state.history.length, MAX_HISTORY);
  const a2 = await version({ ver: 2, prev: v1, name: 'Alice\'s' });
  const step = applyVersion(state, a2, ALICE, NOW);
  assert.deepEqual(step.result.conflict.dropped.map((d) => d.hash), bobs.map((b) => b.hash));
  assert.deepEqual(step.state.history.map((v) => v.hash), [v1.hash, a2.hash]);
  for (const b of [bobs[0], bobs[bobs.length - 1]]) {
    const next = await version({ ver: b.ver + 1, prev: b, name: `on ${b.name}` });
    assert.equal(applyVersion(step.state, next, BOB, NOW).result.problem, 'superseded', b.name);
  }
  // One more version and version 1 is no longer kept: a fork on it cannot be checked.
  const b17 = await version({ ver: MAX_HISTORY + 1, prev, name: 'b17' });
  const longer = applyVersion(state, b17, BOB, NOW).state;
  assert.equal(applyVersion(longer, a2, ALICE, NOW).result.problem, 'too_old');
});

test('the split that remains: a senior admin built on a version that a middle admin\'s late fork beats', async () => {
  // Alice and Bob admins since 1 (Alice senior), Carol since 2. On version 2 Carol signs c3 and Bob signs b3
  // at once; Alice, holding c3, signs a4 on it. Members who hold a4 refuse b3 (it would drop Alice's a4); members
  // who let b3 beat c3 at the head refuse a4 as built on a loser. Which side a member ends on depends on the order.
  const { v2, dave } = await seniorityGroup();
  const c3 = await version({ ver: 3, prev: v2, members: v2.members, name: 'c3' });
  const b3 = await version({ ver: 3, prev: v2, members: v2.members, name: 'b3' });
  const a4 = await version({ ver: 4, prev: c3, members: v2.members, name: 'a4' });
  const signer = new Map([[c3.hash, CAROL], [b3.hash, BOB], [a4.hash, ALICE]]);
  const ends = new Map();
  for (const order of permutations([c3, b3, a4])) {
    const { state, results } = applyAll(dave, order.map((v) => [v, signer.get(v.hash)]));
    const names = order.map((v) => v.name).join(', ');
    const alices = order.indexOf(c3) < order.indexOf(b3) && order.indexOf(a4) < order.indexOf(b3);
    assert.equal(current(state).hash, alices ? a4.hash : b3.hash, names);
    assert.equal(results.get(alices ? b3.hash : a4.hash).problem, alices ? 'too_late' : 'superseded', names);
    ends.set(alices, state);
  }
  // Two sides: Bob's side shows Alice's side's messages as waiting for a version 4 it will not get; Alice's
  // side shows Bob's side's messages (naming version 3, another hash) as "members disagree".
  const [alicesSide, bobsSide] = [ends.get(true), ends.get(false)];
  const gtext = (state) => parseGroupEnvelope(buildGroupText({ gid: GID, ver: current(state).ver, list: current(state).hash, seq: 1, ts: NOW, text: 'hi' })).envelope;
  assert.deepEqual(checkGroupText(alicesSide, emptyGroupMessages(), { envelope: gtext(bobsSide), signer: BOB }).verdict.problems, ['members_disagree']);
  assert.equal(checkGroupText(bobsSide, emptyGroupMessages(), { envelope: gtext(alicesSide), signer: ALICE }).verdict.kind, 'wait');
  // Nothing later joins them: each side's next version builds on one the other side does not hold (it waits
  // for it in vain, or is refused as built on a loser).
  const a5 = await version({ ver: 5, prev: a4, members: v2.members, name: 'a5' });
  const b4 = await version({ ver: 4, prev: b3, members: v2.members, name: 'b4' });
  for (const [state, next, by] of [[bobsSide, a5, ALICE], [alicesSide, b4, BOB]]) {
    const step = applyVersion(state, next, by, NOW);
    assert.ok(['gap', 'superseded'].includes(step.result.problem), next.name);
    assert.equal(current(step.state).hash, current(state).hash, next.name);
  }
});

test('a winning change that arrives after the loser replaces it at the head; what was built on the winner waits for it', async () => {
  const v1 = await version();
  const x2 = await version({ ver: 2, prev: v1, name: 'x', s: secret(5) }); // Bob
  const y2 = await version({ ver: 2, prev: v1, name: 'y' }); // Alice, senior to Bob
  const x3 = await version({ ver: 3, prev: x2, name: 'x3' });
  const y3 = await version({ ver: 3, prev: y2, name: 'y3' });
  // Dave holds the loser; the winner's successor arrives first (waits), then the winner.
  let step = applyVersion(await daveWith(v1), y3, ALICE, NOW);
  assert.equal(step.result.problem, 'gap');
  step = applyVersion(step.state, x2, BOB, NOW);
  assert.equal(current(step.state).hash, x2.hash);
  step = applyVersion(step.state, y2, ALICE, NOW + 1000);
  assert.deepEqual(step.result.conflict.kept, { ver: 2, hash: y2.hash, signer: ALICE });
  assert.deepEqual(step.result.conflict.dropped.map((d) => d.hash), [x2.hash]);
  assert.deepEqual(step.released.map((r) => r.applied && r.applied.hash), [y3.hash]);
  assert.equal(current(step.state).hash, y3.hash);
  assert.deepEqual(step.state.history.map((v) => v.ver), [1, 2, 3]);
  // The secret held meanwhile is listened on for a while (messages may have been sent under it).
  assert.deepEqual(step.state.previousSecrets, [{ secret: secret(5), until: NOW + 1000 + PREVIOUS_SECRET_MS }]);
  // What Bob built on his version is refused when it arrives.
  assert.equal(applyVersion(step.state, x3, BOB, NOW).result.problem, 'superseded');
});

test('a competing version older than the history kept cannot be checked', async () => {
  const v1 = await version();
  let state = await daveWith(v1);
  let prev = v1;
  const chain = [v1];
  for (let ver = 2; ver <= MAX_HISTORY + 2; ver += 1) {
    prev = await version({ ver, prev, name: `v${ver}` });
    chain.push(prev);
    state = applyVersion(state, prev, ALICE, NOW).state;
  }
  assert.equal(state.history.length, MAX_HISTORY);
  assert.equal(state.history[0].ver, 3);
  const rival = await version({ ver: 3, prev: chain[1], name: 'rival' }); // builds on version 2, which is gone
  assert.equal(applyVersion(state, rival, ALICE, NOW).result.problem, 'too_old');
});

test('the only admin may not leave while others stay; with another admin (one who is not leaving), or alone, it may', async () => {
  const v1 = await version({ members: [member(ALICE, 'Alice', true), member(BOB, 'Bob'), member(CAROL, 'Carol')] });
  const alice = joinGroup(v1, ALICE, { me: ALICE }).state;
  assert.equal(leaveProblem(alice), 'last_admin');
  assert.equal(leaveProblem({ ...alice, me: BOB }), null, 'a member who is no admin');
  const two = joinGroup(await version({ members: [member(ALICE, 'Alice', true), member(BOB, 'Bob', true)] }), ALICE, { me: ALICE }).state;
  assert.equal(leaveProblem(two), null);
  assert.equal(leaveProblem({ ...two, leaving: [BOB] }), 'last_admin', 'the other admin is leaving too');
  const alone = joinGroup(await version({ members: [member(ALICE, 'Alice', true)] }), ALICE, { me: ALICE }).state;
  assert.equal(leaveProblem(alone), null, 'nobody is left to be stuck');
});

test('an admin proposes changes: a removal without a new secret is refused, leavers go, bounds hold', async () => {
  const v1 = await version();
  const alice = joinGroup(v1, ALICE, { me: ALICE }).state;
  const carolState = joinGroup(v1, ALICE, { me: CAROL }).state;
  assert.equal(proposeChange(carolState, { name: 'mine' }, { ts: NOW }).problem, 'not_admin');
  assert.equal(proposeChange(alice, { remove: [CAROL] }, { ts: NOW }).problem, 'needs_new_secret');
  assert.equal(proposeChange(alice, { remove: [CAROL] }, { ts: NOW, secret: secret(1) }).problem, 'needs_new_secret');
  assert.equal(proposeChange(alice, { add: [member(BOB, 'Bob again')] }, { ts: NOW }).problem, 'no_change');
  const removal = proposeChange(alice, { remove: [CAROL] }, { ts: NOW, secret: secret(2) });
  assert.ok(removal.ok);
  assert.deepEqual(removal.list.members.map((m) => m.fp), [ALICE, BOB, DAVE]);
  assert.equal(removal.list.prev, v1.hash);
  // Dave left (gleave): the next change removes him, and so needs a new secret.
  const { state: left, ok } = leaveReceived(alice, DAVE, current(alice).ver);
  assert.ok(ok);
  assert.equal(leaveReceived(alice, EVE, current(alice).ver).problem, 'not_member');
  // Dave removed at version 2 and added again at 3: the gleave he sent while holding version 1, replayed by the
  // server now, is stale; one sent from his present membership counts.
  const withoutDave = BASE_MEMBERS.filter((m) => m.fp !== DAVE);
  const v2 = await version({ ver: 2, prev: v1, members: withoutDave, s: secret(2) });
  const v3 = await version({ ver: 3, prev: v2, members: BASE_MEMBERS, s: secret(2) });
  const readded = applyVersion(applyVersion(alice, v2, ALICE, NOW).state, v3, ALICE, NOW).state;
  assert.equal(current(readded).ver, 3);
  assert.equal(leaveReceived(readded, DAVE, 1).problem, 'stale');
  assert.equal(leaveReceived(readded, DAVE, 3).ok, true);
  assert.equal(proposeChange(left, { name: 'New name' }, { ts: NOW }).problem, 'needs_new_secret');
  const next = proposeChange(left, { name: 'New name', admin: { [CAROL]: true } }, { ts: NOW, secret: secret(4) });
  assert.ok(next.ok);
  assert.deepEqual(next.list.members, [member(ALICE, 'Alice', true), member(BOB, 'Bob', true), member(CAROL, 'Carol', 2)], 'a new admin is junior to those before');
  const applied = applyVersion(left, (await readVersion(next.text)).version, ALICE, NOW).state;
  assert.deepEqual(applied.leaving, [], 'a leaver removed is no longer leaving');
  // Bounds: a 65th member, a name too long.
  const fp = (i) => i.toString(16).toUpperCase().padStart(40, '0');
  const add = Array.from({ length: MAX_MEMBERS - 3 }, (_, i) => member(fp(i + 1), `m${i}`));
  assert.ok(proposeChange(alice, { add: add.slice(0, MAX_MEMBERS - 4) }, { ts: NOW }).ok, '64 members');
  assert.equal(proposeChange(alice, { add }, { ts: NOW }).detail, 'too_many_members');
  assert.equal(proposeChange(alice, { name: 'n'.repeat(65) }, { ts: NOW }).detail, 'name');
});

// --- group handles ---

test('member handle = HMAC-SHA256(secret, "secchat-group-v1\\n" + fp + "\\n" + day), base64url, 43 characters', async () => {
  const key = toBase64Url(Uint8Array.from({ length: 32 }, (_, i) => i));
  const fp = '0123456789ABCDEF0123456789ABCDEF01234567';
  const handle = await deriveMemberHandle(key, fp, '2026-01-01');
  assert.equal(handle, 'J7Ye7jaFQNwU4Wy1-IGfeWztZWRSxdBh9vXtUbSRJ3s'); // the fixed vector (docs/PROTOCOL.md §6 "Groups")
  const node = createHmac('sha256', Buffer.from(Uint8Array.from({ length: 32 }, (_, i) => i))).update(`${GROUP_HANDLE_LABEL}${fp}\n2026-01-01`).digest('base64url');
  assert.equal(handle, node);
  assert.ok(isHandle(handle));
  // Not a pair's handle of the same secret and day, nor another member's.
  assert.notEqual(handle, await deriveHandle(key, '2026-01-01'));
  assert.notEqual(handle, await deriveMemberHandle(key, ALICE, '2026-01-01'));
  await assert.rejects(deriveMemberHandle('short', fp, '2026-01-01'));
  await assert.rejects(deriveMemberHandle(key, fp.toLowerCase(), '2026-01-01'));
});

test('a member sends to the others\' handles of today and listens on its own for three days, old secrets for 7 days', async () => {
  const v1 = await version();
  const dave = await daveWith(v1);
  const now = Date.UTC(2026, 0, 1, 23, 59);
  const { day, send, listen } = await groupHandles(dave, now);
  assert.equal(day, '2026-01-01');
  assert.deepEqual([...send.keys()], [ALICE, BOB, CAROL], 'everyone but us');
  assert.equal(send.get(CAROL), await deriveMemberHandle(secret(1), CAROL, '2026-01-01'));
  const own = (s, d) => deriveMemberHandle(s, DAVE, d);
  assert.deepEqual(new Set(listen.keys()), new Set([await own(secret(1), '2025-12-31'), await own(secret(1), '2026-01-01'), await own(secret(1), '2026-01-02')]));
  assert.deepEqual(new Set(listen.values()), new Set([GID]));
  // Carol is removed with a new secret: Dave listens on both secrets' handles for 7 days, sends under the new one only.
  const v2 = await version({ ver: 2, prev: v1, members: BASE_MEMBERS.filter((m) => m.fp !== CAROL), s: secret(2) });
  const after = applyVersion(dave, v2, ALICE, now).state;
  const changed = await groupHandles(after, now);
  assert.deepEqual([...changed.send.keys()], [ALICE, BOB]);
  assert.equal(changed.send.get(BOB), await deriveMemberHandle(secret(2), BOB, '2026-01-01'));
  assert.equal(changed.listen.size, 6);
  assert.ok(changed.listen.has(await own(secret(1), '2026-01-01')) && changed.listen.has(await own(secret(2), '2026-01-01')));
  const week = await groupHandles(after, now + PREVIOUS_SECRET_MS);
  assert.equal(week.listen.size, 3);
  assert.ok(!week.listen.has(await own(secret(1), '2026-01-08')));
  // What to UNLISTEN when the old secret's week is over (rendezvous.js listenPlan).
  const plan = listenPlan((await groupHandles(after, now + PREVIOUS_SECRET_MS - 1)).listen.keys(), week.listen.keys());
  assert.deepEqual(plan, { listen: [], unlisten: await Promise.all(['2026-01-07', '2026-01-08', '2026-01-09'].map((d) => own(secret(1), d))) });
  assert.ok(HANDLES_PER_GROUP >= changed.listen.size);
  // An admin hands the next version to those who hold the previous one through its handles.
  assert.deepEqual([...(await versionHandles(v1, ALICE, '2026-01-01')).values()], await Promise.all([BOB, CAROL, DAVE].map((fp) => deriveMemberHandle(secret(1), fp, '2026-01-01'))));
  // Removed: nothing to listen on, nobody to send to.
  const v3 = await version({ ver: 3, prev: v2, members: [member(ALICE, 'Alice', true), member(BOB, 'Bob', true)], s: secret(3) });
  const removed = await groupHandles(applyVersion(after, v3, ALICE, now).state, now);
  assert.deepEqual([removed.send.size, removed.listen.size], [0, 0]);
});

// --- group envelopes ---

/**
 * Real keys, as the crypto worker would read them: {armored, fingerprint, keyIds, signingKeyIds, privateKey,
 * publicKey}. OpenPGP.js's default key signs with its primary key only (its subkey encrypts).
 */
async function person(name) {
  const { privateKey, publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name }], format: 'object' });
  return {
    name, privateKey, publicKey, armored: publicKey.armor(), fingerprint: publicKey.getFingerprint().toUpperCase(),
    keyIds: publicKey.getKeyIDs().map((id) => id.toHex()), signingKeyIds: [publicKey.getKeyID().toHex()],
  };
}
/** What the crypto worker's readFriendKey says of a person's key IDs. */
const reading = (p) => ({ keyIds: p.keyIds, signingKeyIds: p.signingKeyIds });
const people = Promise.all(['Alice', 'Bob', 'Carol', 'Dave', 'Eve'].map(person));

test('gtext, greceipt, gleave and gkeys are built and read back; out of bounds they are malformed', async () => {
  const [alice, bob] = await people;
  const list = secret(7);
  const gtext = buildGroupText({ gid: GID, ver: 3, list, seq: 7, ts: NOW, text: 'hello all' });
  assert.deepEqual(parseGroupEnvelope(gtext), { ok: true, envelope: { kind: 'gtext', gid: GID, ts: NOW, ver: 3, list, seq: 7, text: 'hello all' } });
  assert.deepEqual(parseGroupEnvelope(buildGroupReceipt({ gid: GID, ts: NOW, acks: [7, 8, 7] })).envelope, { kind: 'greceipt', gid: GID, ts: NOW, acks: [7, 8] });
  assert.deepEqual(parseGroupEnvelope(buildGroupLeave({ gid: GID, ver: 3, ts: NOW })).envelope, { kind: 'gleave', gid: GID, ver: 3, ts: NOW });
  const [gkeys] = buildGroupKeys({ gid: GID, ver: 1, ts: NOW, keys: [alice.armored, bob.armored] });
  assert.deepEqual(parseGroupEnvelope(gkeys).envelope.keys, [alice.armored, bob.armored]);
  assert.deepEqual(buildGroupKeys({ gid: GID, ver: 1, ts: NOW, keys: Array(MAX_GROUP_KEYS * 2 + 1).fill(alice.armored) }).map((t) => JSON.parse(t).keys.length), [8, 8, 1]);
  assert.equal(parseGroupEnvelope(buildGroupList({ gid: GID, ver: 1, ts: NOW, name: 'G', secret: secret(1), members: BASE_MEMBERS })).envelope.kind, 'group');
  // Not a group envelope at all: envelope.js reads it.
  for (const text of ['{"v":1,"to":"x","seq":1}', '{"v":1,"kind":"receipt"}', 'not json', 'null']) assert.equal(parseGroupEnvelope(text).problem, 'not_group', text);
  assert.equal(parseGroupEnvelope(JSON.stringify({ ...JSON.parse(gtext), v: 2 })).problem, 'version');
  const tooMany = Array.from({ length: MAX_GROUP_ACKS + 1 }, (_, i) => i + 1);
  assert.equal(parseGroupEnvelope(buildGroupReceipt({ gid: GID, ts: NOW, acks: tooMany.slice(0, -1) })).ok, true, '256 acks');
  const overSize = armorPublicKey(Buffer.alloc(17000, 0x99));
  const hostile = hostileRsaKey({ modulusBits: 8192, exponentBits: 17, certifications: 1 });
  const secretKey = armorPublicKey(Buffer.from(alice.privateKey.write()));
  const bad = [
    [{ kind: 'greceipt', acks: tooMany }, 'too_many_acks'],
    [{ kind: 'greceipt', acks: [] }, 'acks'],
    [{ kind: 'greceipt', acks: [0] }, 'acks'],
    [{ kind: 'greceipt', acks: ['1'] }, 'acks'],
    [{ kind: 'gkeys', ver: 1, keys: Array(MAX_GROUP_KEYS + 1).fill(alice.armored) }, 'too_many_keys'],
    [{ kind: 'gkeys', ver: 1, keys: [] }, 'keys'],
    [{ kind: 'gkeys', ver: 1, keys: ['hello'] }, 'key_not_armored'],
    [{ kind: 'gkeys', ver: 1, keys: [5] }, 'key_not_text'],
    [{ kind: 'gkeys', ver: 1, keys: [overSize] }, 'key_too_large'],
    [{ kind: 'gkeys', ver: 1, keys: [alice.armored, hostile.armored] }, 'key_unsupported_key'], // the key policy, before OpenPGP.js
    [{ kind: 'gkeys', ver: 1, keys: [secretKey] }, 'key_secret'],
    [{ kind: 'gkeys', ver: 0, keys: [alice.armored] }, 'ver'],
    [{ kind: 'gtext', ver: 1, list, seq: 0, text: 'x' }, 'seq'],
    [{ kind: 'gtext', ver: 1, list: 'short', seq: 1, text: 'x' }, 'list'],
    [{ kind: 'gtext', ver: 1, list, seq: 1, text: 5 }, 'text'],
    [{ kind: 'gleave', gid: 'x' }, 'gid'],
    [{ kind: 'gleave', ts: 'now' }, 'ts'],
  ];
  for (const [fields, detail] of bad) {
    assert.deepEqual(parseGroupEnvelope(JSON.stringify({ v: 1, gid: GID, ts: NOW, ...fields })), { ok: false, problem: 'malformed', detail }, detail);
  }
});

test('two armorings of one key are the same key; another key, or the same one with a packet added, is not', async () => {
  const [alice, bob] = await people;
  const body = armorBody(alice.armored);
  assert.ok(body && body.length > 100);
  const rewrapped = ['-----BEGIN PGP PUBLIC KEY BLOCK-----', 'Comment: relayed', 'Version: GnuPG', '', ...body.match(/.{1,64}/g), '-----END PGP PUBLIC KEY BLOCK-----', ''].join('\r\n');
  assert.ok(sameKey(alice.armored, rewrapped));
  assert.ok(!sameKey(alice.armored, bob.armored));
  assert.ok(!sameKey(alice.armored, withUnsignedUserId(alice.armored, 'Mum')));
  for (const junk of ['', 'x', `${alice.armored}trailing`, alice.armored.replace('PUBLIC KEY', 'PRIVATE KEY'), alice.armored.replace(/\n\n/, '\nno header\n\n')]) {
    assert.equal(armorBody(junk), null);
  }
  assert.ok(!sameKey('x', 'x'));
});

/** A group of the five with real fingerprints, as held by `me`, and everyone's keys held from gkeys. */
async function realGroup(me, { removeCarol = false } = {}) {
  const [alice, bob, carol, dave, eve] = await people;
  const members = [member(alice.fingerprint, 'Alice', true), member(bob.fingerprint, 'Bob', true), member(carol.fingerprint, 'Carol'), member(dave.fingerprint, 'Dave')];
  const v1 = await version({ members });
  let { state } = joinGroup(v1, alice.fingerprint, { me: me.fingerprint });
  let v2 = null;
  if (removeCarol) {
    v2 = await version({ ver: 2, prev: v1, members: members.filter((m) => m.fp !== carol.fingerprint), s: secret(2) });
    state = applyVersion(state, v2, alice.fingerprint, NOW).state;
  }
  let messages = withOwnKey(emptyGroupMessages(), me.fingerprint, me.armored, reading(me));
  for (const p of [alice, bob, carol, dave]) {
    if (p === me) continue;
    messages = { ...messages, keys: { ...messages.keys, [p.fingerprint]: { armored: p.armored, ...reading(p), source: 'gkeys', changed: false } } };
  }
  return { state, messages, v1, v2, alice, bob, carol, dave, eve };
}

/** The key IDs a message sealed to `to` (people) names, as OpenPGP.js reads them off the message. */
async function recipientsOf(to, signer) {
  const sealed = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'x' }), encryptionKeys: to.map((p) => p.publicKey), signingKeys: signer.privateKey });
  return (await openpgp.readMessage({ armoredMessage: sealed })).getEncryptionKeyIDs().map((id) => id.toHex());
}

test('a message encrypted also to a removed member\'s key is flagged, naming whose key it is', async () => {
  const [, , , dave] = await people;
  const g = await realGroup(dave, { removeCarol: true });
  const envelope = parseGroupEnvelope(buildGroupText({ gid: GID, ver: 2, list: g.v2.hash, seq: 1, ts: NOW, text: 'hi' })).envelope;
  const honest = await recipientsOf([g.alice, g.bob, g.dave], g.alice);
  let { verdict } = checkGroupText(g.state, g.messages, { envelope, signer: g.alice.fingerprint, recipients: honest });
  assert.deepEqual([verdict.verified, verdict.kind, verdict.problems], [true, 'first', []]);
  const leaky = await recipientsOf([g.alice, g.bob, g.dave, g.carol], g.alice);
  ({ verdict } = checkGroupText(g.state, g.messages, { envelope, signer: g.alice.fingerprint, recipients: leaky }));
  assert.equal(verdict.verified, false);
  assert.deepEqual(verdict.problems, ['extra_recipient']);
  assert.deepEqual(verdict.outsiders.map((o) => o.fp), [g.carol.fingerprint]);
  // The pure function over key-ID sets behind it.
  const memberIds = [g.alice, g.bob, g.dave].flatMap((p) => p.keyIds);
  assert.deepEqual(strangerRecipients(honest, memberIds), []);
  assert.deepEqual(strangerRecipients(leaky, memberIds), [leaky.find((id) => g.carol.keyIds.includes(id))]);
  assert.deepEqual(strangerRecipients([WILDCARD_KEY_ID], memberIds), [WILDCARD_KEY_ID], 'an anonymous recipient could be anyone');
  assert.deepEqual(strangerRecipients(['ABCDEF0123456789'], ['abcdef0123456789']), [], 'hex in either case');
  // Named in version 1, where Carol was a member, the same recipients are fine (a message sent before the change).
  const old = parseGroupEnvelope(buildGroupText({ gid: GID, ver: 1, list: g.v1.hash, seq: 1, ts: NOW, text: 'hi' })).envelope;
  assert.deepEqual(checkGroupText(g.state, g.messages, { envelope: old, signer: g.alice.fingerprint, recipients: leaky }).verdict.problems, []);
});

test('a recipient nobody can name: flagged, unless a member\'s key is missing (then noted); a hidden recipient is flagged', async () => {
  const [, , , dave] = await people;
  const g = await realGroup(dave);
  const envelope = parseGroupEnvelope(buildGroupText({ gid: GID, ver: 1, list: g.v1.hash, seq: 1, ts: NOW, text: 'hi' })).envelope;
  const all = await recipientsOf([g.alice, g.bob, g.carol, g.dave], g.alice);
  const unknown = [...all, '0123456789abcdef'];
  assert.deepEqual(checkGroupText(g.state, g.messages, { envelope, signer: g.alice.fingerprint, recipients: unknown }).verdict.problems, ['extra_recipient']);
  const withoutCarolsKey = { ...g.messages, keys: Object.fromEntries(Object.entries(g.messages.keys).filter(([fp]) => fp !== g.carol.fingerprint)) };
  const { verdict } = checkGroupText(g.state, withoutCarolsKey, { envelope, signer: g.alice.fingerprint, recipients: all });
  assert.deepEqual([verdict.verified, verdict.problems, verdict.notes], [true, [], ['unknown_recipient']]);
  assert.deepEqual(checkRecipients(current(g.state), withoutCarolsKey.keys, all).missingKeys, [g.carol.fingerprint]);
  assert.deepEqual(checkGroupText(g.state, withoutCarolsKey, { envelope, signer: g.alice.fingerprint, recipients: [...all, WILDCARD_KEY_ID] }).verdict.problems, ['extra_recipient']);
});

test('a message naming a list hash that differs from ours is flagged "members disagree"; other refusals', async () => {
  const [, , , dave] = await people;
  const g = await realGroup(dave, { removeCarol: true });
  const text = (fields) => parseGroupEnvelope(buildGroupText({ gid: GID, ver: 2, list: g.v2.hash, seq: 1, ts: NOW, text: 'hi', ...fields })).envelope;
  const recipients = await recipientsOf([g.alice, g.bob, g.dave], g.alice);
  const check = (envelope, signer = g.alice.fingerprint, messages = g.messages) => checkGroupText(g.state, messages, { envelope, signer, recipients });
  // Alice holds a version 2 in which Carol is still there (or Eve was added): same number, another hash.
  let { verdict, messages } = check(text({ list: secret(9) }));
  assert.deepEqual([verdict.verified, verdict.problems], [false, ['members_disagree']]);
  assert.equal(messages, g.messages, 'a refused message does not move the seqs');
  assert.deepEqual(check(text({ gid: toBase64Url(new Uint8Array(16).fill(2)) })).verdict.problems, ['wrong_group']);
  assert.deepEqual(check(text({}), g.eve.fingerprint).verdict.problems, ['not_member']);
  assert.deepEqual(check(text({}), g.carol.fingerprint).verdict.problems, ['not_member'], 'Carol is not in version 2');
  assert.deepEqual(check(text({}), g.dave.fingerprint).verdict.problems, ['own_message']);
  // Carol, removed, signs a message naming version 1 (where she was a member): it cannot have reached our handles
  // (she cannot derive them), so someone passed it on.
  const fromCarol = parseGroupEnvelope(buildGroupText({ gid: GID, ver: 1, list: g.v1.hash, seq: 9, ts: NOW, text: 'still here' })).envelope;
  const toV1 = await recipientsOf([g.alice, g.bob, g.carol, g.dave], g.carol);
  assert.deepEqual(checkGroupText(g.state, g.messages, { envelope: fromCarol, signer: g.carol.fingerprint, recipients: toV1 }).verdict.problems, ['sender_removed']);
  // A version not held yet: the message waits. One older than what we hold (we joined later): unverifiable.
  ({ verdict } = check(text({ ver: 3, list: secret(8) })));
  assert.deepEqual([verdict.kind, verdict.verified, verdict.problems], ['wait', false, []]);
  const joinedLate = joinGroup(g.v2, g.alice.fingerprint, { me: g.dave.fingerprint }).state;
  ({ verdict } = checkGroupText(joinedLate, g.messages, { envelope: fromCarol, signer: g.alice.fingerprint, recipients: toV1 }));
  assert.deepEqual(verdict.problems, ['unknown_version']);
});

test('seq per sender and group: first, in order, gap, late, duplicate (receipted again), replay with other content', async () => {
  const [, , , dave] = await people;
  const g = await realGroup(dave);
  const recipients = await recipientsOf([g.alice, g.bob, g.carol, g.dave], g.alice);
  let messages = g.messages;
  const receive = (seq, signer = g.alice.fingerprint, textValue = `m${seq}`, held = null) => {
    const envelope = parseGroupEnvelope(buildGroupText({ gid: GID, ver: 1, list: g.v1.hash, seq, ts: NOW + seq, text: textValue })).envelope;
    const out = checkGroupText(g.state, messages, { envelope, signer, recipients, held });
    messages = out.messages;
    return out.verdict;
  };
  // Alice has written before we joined: her first message to us is seq 41, and that is no gap.
  let v = receive(41);
  assert.deepEqual([v.verified, v.kind, v.missing, v.receipt], [true, 'first', 0, true]);
  assert.deepEqual([receive(42).kind, receive(42).kind], ['in_order', 'duplicate']);
  v = receive(45);
  assert.deepEqual([v.kind, v.missing], ['gap', 2]);
  v = receive(43);
  assert.deepEqual([v.kind, v.verified], ['late', true]);
  v = receive(40);
  assert.deepEqual([v.kind, v.verified], ['late', true], 'sent just before her 41 and delivered after it (mailbox vs live)');
  // The same seq and content again (a resend, a mailbox copy): quiet, receipted again.
  v = receive(43, g.alice.fingerprint, 'm43', { ts: NOW + 43, text: 'm43' });
  assert.deepEqual([v.kind, v.verified, v.receipt], ['duplicate', true, true]);
  // The same seq with other content while the page holds the first: a replay.
  v = receive(43, g.alice.fingerprint, 'changed', { ts: NOW + 43, text: 'm43' });
  assert.deepEqual([v.verified, v.problems, v.receipt], [false, ['replay'], false]);
  // Seqs are per sender: Bob's 1 is his first, whatever Alice's are.
  assert.equal(receive(1, g.bob.fingerprint).kind, 'first');
  assert.deepEqual(Object.keys(messages.received).sort(), [g.alice.fingerprint, g.bob.fingerprint].sort());
  // Our own counter.
  const first = takeSendSeq(g.messages);
  assert.deepEqual([first.seq, takeSendSeq(first.messages).seq], [1, 2]);
});

test('keys from an admin: only for fingerprints in that version, never over a pinned contact\'s key or one held', async () => {
  const [, , , dave] = await people;
  const g = await realGroup(dave);
  const fresh = withOwnKey(emptyGroupMessages(), g.dave.fingerprint, g.dave.armored, reading(g.dave));
  const read = (p) => ({ fingerprint: p.fingerprint, ...reading(p) });
  const [gkeys] = buildGroupKeys({ gid: GID, ver: 1, ts: NOW, keys: [g.alice.armored, g.bob.armored, g.eve.armored, g.dave.armored, g.carol.armored] });
  const envelope = parseGroupEnvelope(gkeys).envelope;
  // Bob is a contact with the same key (armored differently); Carol is a contact whose pinned key differs from
  // the one the admin sends (a user ID added by whoever relayed it: same fingerprint, other packets).
  const carolRelayed = withUnsignedUserId(g.carol.armored, 'Mum');
  const bobRewrapped = g.bob.armored.replace('-----\n\n', '-----\nComment: x\n\n');
  const contacts = contactKeys([
    { status: 'friends', trust: 'verified', fingerprint: g.bob.fingerprint, publicArmored: bobRewrapped },
    { status: 'friends', trust: 'unverified', fingerprint: g.carol.fingerprint, publicArmored: g.carol.armored },
    { status: 'friends', trust: 'changed', fingerprint: g.eve.fingerprint, publicArmored: g.eve.armored }, // an unconfirmed change: not a pin
    { status: 'ended', trust: 'verified', fingerprint: g.alice.fingerprint, publicArmored: g.alice.armored },
  ], new Map([g.bob, g.carol, g.eve, g.alice].map((p) => [p.fingerprint, reading(p)])));
  assert.deepEqual([...contacts.keys()], [g.bob.fingerprint, g.carol.fingerprint]);
  const withCarol = { ...envelope, keys: [...envelope.keys.slice(0, 4), carolRelayed] };
  const { messages, result } = takeGroupKeys(g.state, fresh, {
    envelope: withCarol, signer: g.alice.fingerprint, read: [g.alice, g.bob, g.eve, g.dave].map(read).concat([read(g.carol)]), contacts,
  });
  assert.ok(result.ok);
  assert.deepEqual(result.outcomes.map((o) => o.outcome), ['taken', 'taken', 'not_in_list', 'own', 'key_changed']);
  assert.equal(messages.keys[g.bob.fingerprint].source, 'contact');
  assert.equal(messages.keys[g.carol.fingerprint].armored, g.carol.armored, 'the pinned key is kept');
  assert.equal(messages.keys[g.eve.fingerprint], undefined);
  assert.equal(messages.keys[g.dave.fingerprint].source, 'own');
  assert.deepEqual(memberKeyStatus(g.state, messages), new Map([[g.alice.fingerprint, 'ok'], [g.bob.fingerprint, 'ok'], [g.carol.fingerprint, 'changed']]));
  // A second, different key for a member whose key came from an admin: the first is kept, the member marked.
  const [again] = buildGroupKeys({ gid: GID, ver: 1, ts: NOW, keys: [withUnsignedUserId(g.alice.armored, 'Other')] });
  const second = takeGroupKeys(g.state, messages, { envelope: parseGroupEnvelope(again).envelope, signer: g.bob.fingerprint, read: [read(g.alice)] });
  assert.deepEqual(second.result.outcomes.map((o) => o.outcome), ['key_changed']);
  assert.equal(second.messages.keys[g.alice.fingerprint].armored, g.alice.armored);
  assert.equal(second.messages.keys[g.alice.fingerprint].changed, true);
  const aliceOnly = { ...envelope, keys: [g.alice.armored] };
  assert.deepEqual(takeGroupKeys(g.state, messages, { envelope: aliceOnly, signer: g.bob.fingerprint, read: [read(g.alice)] }).result.outcomes.map((o) => o.outcome), ['same']);
  // A key for Alice that can also sign with one of our own key IDs (or a contact's): refused, nothing taken.
  const sharing = (ids) => ({ fingerprint: g.alice.fingerprint, keyIds: [...g.alice.keyIds, ...ids], signingKeyIds: [...g.alice.signingKeyIds, ...ids] });
  const sneaky = takeGroupKeys(g.state, fresh, { envelope: aliceOnly, signer: g.bob.fingerprint, read: [sharing([g.dave.signingKeyIds[0]])] });
  assert.deepEqual(sneaky.result.outcomes.map((o) => o.outcome), ['shared_key_id']);
  assert.equal(sneaky.messages.keys[g.alice.fingerprint], undefined);
  const viaContact = takeGroupKeys(g.state, fresh, { envelope: aliceOnly, signer: g.bob.fingerprint, read: [sharing([g.bob.signingKeyIds[0]])], contacts });
  assert.deepEqual(viaContact.result.outcomes.map((o) => o.outcome), ['shared_key_id']);
  // One that merely carries those key IDs (bound without their back-signatures) cannot sign with them: taken,
  // and it takes nothing from whose IDs they are (groupcrypto.unit.test.mjs tries it with real crafted keys).
  const carrying = { fingerprint: g.alice.fingerprint, keyIds: [...g.alice.keyIds, g.dave.keyIds[0], g.bob.keyIds[0]], signingKeyIds: g.alice.signingKeyIds };
  const carried = takeGroupKeys(g.state, fresh, { envelope: aliceOnly, signer: g.bob.fingerprint, read: [carrying], contacts });
  assert.deepEqual(carried.result.outcomes.map((o) => o.outcome), ['taken']);
  assert.deepEqual(carried.messages.keys[g.alice.fingerprint].signingKeyIds, g.alice.signingKeyIds);
  // Read without its signing key IDs, every ID a key carries counts as one it may sign with: refused.
  const unread = takeGroupKeys(g.state, fresh, { envelope: aliceOnly, signer: g.bob.fingerprint, read: [{ ...carrying, signingKeyIds: undefined }] });
  assert.deepEqual(unread.result.outcomes.map((o) => o.outcome), ['shared_key_id']);
  // A key the crypto worker refused; the signer is no admin; the version is not held yet, or no longer.
  assert.deepEqual(takeGroupKeys(g.state, fresh, { envelope: aliceOnly, signer: g.alice.fingerprint, read: [{ error: 'expired' }] }).result.outcomes, [{ fingerprint: null, outcome: 'refused' }]);
  assert.equal(takeGroupKeys(g.state, fresh, { envelope, signer: g.carol.fingerprint, read: [] }).result.problem, 'not_admin');
  assert.equal(takeGroupKeys(g.state, fresh, { envelope: { ...envelope, ver: 2 }, signer: g.alice.fingerprint, read: [] }).result.problem, 'wait');
  const joinedAt2 = (await realGroup(dave, { removeCarol: true })).v2;
  const late = joinGroup(joinedAt2, g.alice.fingerprint, { me: g.dave.fingerprint }).state;
  assert.equal(takeGroupKeys(late, fresh, { envelope, signer: g.alice.fingerprint, read: [] }).result.problem, 'unknown_version');
  // Contacts fill in members without a key, and replace an admin's key that differs from the pinned one.
  const filled = keysFromContacts(g.state, { ...fresh, keys: { ...fresh.keys, [g.carol.fingerprint]: { armored: carolRelayed, ...reading(g.carol), source: 'gkeys', changed: false } } }, contacts);
  assert.deepEqual([filled.keys[g.bob.fingerprint].source, filled.keys[g.bob.fingerprint].changed], ['contact', false]);
  assert.deepEqual([filled.keys[g.carol.fingerprint].armored, filled.keys[g.carol.fingerprint].changed], [g.carol.armored, true]);
});

test('sending: every member\'s key (ours too), the others\' handles, and who cannot be written to', async () => {
  const [, , , dave] = await people;
  const g = await realGroup(dave);
  const handles = (await groupHandles(g.state, NOW)).send;
  const noCarol = { ...g.messages, keys: Object.fromEntries(Object.entries(g.messages.keys).filter(([fp]) => fp !== g.carol.fingerprint)) };
  const plan = sendPlan(g.state, noCarol, handles);
  assert.deepEqual(plan.to, [g.alice.fingerprint, g.bob.fingerprint]);
  assert.deepEqual(plan.missing, [g.carol.fingerprint]);
  assert.deepEqual(plan.keys, [g.alice.armored, g.bob.armored, g.dave.armored]);
  assert.deepEqual(plan.handles, [handles.get(g.alice.fingerprint), handles.get(g.bob.fingerprint)]);
  assert.deepEqual([plan.ver, plan.list], [1, g.v1.hash]);
  // Keys and seqs of someone gone from every version kept are dropped.
  const stale = { ...g.messages, received: { [g.eve.fingerprint]: { through: 3, extra: [] }, [g.alice.fingerprint]: { through: 1, extra: [] } } };
  assert.deepEqual(Object.keys(pruneMessages(g.state, { ...stale, keys: { ...stale.keys, [g.eve.fingerprint]: g.messages.keys[g.alice.fingerprint] } }).received), [g.alice.fingerprint]);
  assert.equal(pruneMessages(g.state, g.messages), g.messages);
});

test('messages for a version not held yet wait, bounded, and are released when it arrives or given up', async () => {
  const v1 = await version();
  const v2 = await version({ ver: 2, prev: v1, name: 'Two' });
  let waiting = [];
  let evicted = [];
  for (let i = 0; i <= MAX_WAITING; i += 1) ({ waiting, evicted } = holdForVersion(waiting, { ver: 2, n: i }, NOW));
  assert.equal(waiting.length, MAX_WAITING);
  assert.deepEqual(evicted, [{ ver: 2, n: 0 }]);
  ({ waiting } = holdForVersion(waiting, { ver: 3, n: 'three' }, NOW));
  const dave = await daveWith(v1);
  let out = releaseWaiting(waiting, dave, NOW);
  assert.deepEqual([out.ready.length, out.expired.length, out.waiting.length], [0, 0, MAX_WAITING]);
  out = releaseWaiting(waiting, applyVersion(dave, v2, ALICE, NOW).state, NOW);
  assert.equal(out.ready.length, MAX_WAITING - 1);
  assert.deepEqual(out.waiting.map((w) => w.item.n), ['three']);
  assert.deepEqual(releaseWaiting(out.waiting, dave, NOW + WAITING_MS).expired, [{ ver: 3, n: 'three' }]);
});

// --- delivery counts ---

test('delivery counts: how many members have each message, from their receipts only', () => {
  let state = emptyDeliveries();
  state = deliveries(state, { type: 'sent', seq: 1, to: [ALICE, BOB, CAROL] });
  state = deliveries(state, { type: 'sent', seq: 2, to: [ALICE, BOB, CAROL] });
  assert.deepEqual(deliveryOf(state, 1), { have: 0, of: 3, complete: false, missing: [ALICE, BOB, CAROL], unreached: [] });
  state = deliveries(state, { type: 'receipt', from: ALICE, acks: [1, 2] });
  state = deliveries(state, { type: 'receipt', from: BOB, acks: [1] });
  const before = state;
  assert.equal(deliveries(state, { type: 'receipt', from: BOB, acks: [1] }), before, 'a receipt again counts once');
  assert.equal(deliveries(state, { type: 'receipt', from: EVE, acks: [1, 2] }), before, 'not sent to Eve: her receipt counts for nothing');
  assert.equal(deliveries(state, { type: 'receipt', from: ALICE, acks: [99] }), before, 'a seq not followed');
  assert.deepEqual(deliveryOf(state, 1), { have: 2, of: 3, complete: false, missing: [CAROL], unreached: [] });
  assert.deepEqual(deliveryOf(state, 2), { have: 1, of: 3, complete: false, missing: [BOB, CAROL], unreached: [] });
  state = deliveries(state, { type: 'receipt', from: CAROL, acks: [1] });
  assert.equal(deliveryOf(state, 1).complete, true);
  // Sent again under a later version in which Carol is gone and Dave came: who had it and is still a recipient counts.
  state = deliveries(state, { type: 'sent', seq: 2, to: [ALICE, BOB, DAVE] });
  assert.deepEqual(deliveryOf(state, 2), { have: 1, of: 3, complete: false, missing: [BOB, DAVE], unreached: [] });
  state = deliveries(state, { type: 'forget', seq: 1 });
  assert.equal(deliveryOf(state, 1), null);
  // Bounded: the oldest messages are forgotten first.
  for (let seq = 10; seq < 10 + MAX_TRACKED + 5; seq += 1) state = deliveries(state, { type: 'sent', seq, to: [ALICE] });
  assert.equal(state.messages.length, MAX_TRACKED);
  assert.equal(deliveryOf(state, 2), null);
  assert.equal(deliveryOf(state, 10 + MAX_TRACKED + 4).of, 1);
});

test('delivery: a copy the server reported undelivered is shown per member until its receipt comes or the message goes again', () => {
  let state = deliveries(emptyDeliveries(), { type: 'sent', seq: 1, to: [BOB, CAROL, DAVE] });
  state = deliveries(state, { type: 'receipt', from: BOB, acks: [1] });
  state = deliveries(state, { type: 'undelivered', seq: 1, to: CAROL });
  assert.deepEqual(deliveryOf(state, 1), { have: 1, of: 3, complete: false, missing: [CAROL, DAVE], unreached: [CAROL] });
  const before = state;
  assert.equal(deliveries(state, { type: 'undelivered', seq: 1, to: CAROL }), before, 'reported twice counts once');
  assert.equal(deliveries(state, { type: 'undelivered', seq: 1, to: BOB }), before, 'Bob has it: his receipt wins');
  assert.equal(deliveries(state, { type: 'undelivered', seq: 1, to: EVE }), before, 'not sent to Eve');
  assert.equal(deliveries(state, { type: 'undelivered', seq: 9, to: CAROL }), before, 'a seq not followed');
  state = deliveries(state, { type: 'undelivered', seq: 1, to: DAVE });
  assert.deepEqual(deliveryOf(state, 1).unreached, [CAROL, DAVE]);
  // Carol's receipt comes after all (a copy from an earlier send reached her): she has it.
  state = deliveries(state, { type: 'receipt', from: CAROL, acks: [1] });
  assert.deepEqual([deliveryOf(state, 1).have, deliveryOf(state, 1).unreached], [2, [DAVE]]);
  // Sent again: a new attempt, reported anew.
  state = deliveries(state, { type: 'sent', seq: 1, to: [BOB, CAROL, DAVE] });
  assert.deepEqual(deliveryOf(state, 1).unreached, []);
});

test('gremoved: taken only from an admin of our current version, for the next version; bounded like the others', async () => {
  const v1 = await version();
  const dave = await daveWith(v1);
  const text = buildGroupRemoved({ gid: GID, ts: NOW, ver: 2 });
  const parsed = parseGroupEnvelope(text);
  assert.ok(parsed.ok);
  assert.deepEqual(removalNotice(dave, { envelope: parsed.envelope, signer: ALICE }), { ok: true });
  assert.equal(removalNotice(dave, { envelope: parsed.envelope, signer: CAROL }).problem, 'not_admin', 'Carol is no admin');
  assert.equal(removalNotice(dave, { envelope: { ...parsed.envelope, ver: 3 }, signer: ALICE }).problem, 'wrong_version');
  assert.equal(removalNotice(dave, { envelope: { ...parsed.envelope, gid: 'x' }, signer: ALICE }).problem, 'wrong_group');
  assert.equal(parseGroupEnvelope(JSON.stringify({ v: 1, kind: 'gremoved', gid: GID, ts: NOW })).problem, 'malformed');
});

test('group handles follow the contacts\' window: yesterday\'s only until the first fetch, the neighbouring day only near midnight', async () => {
  const dave = await daveWith(await version());
  const noon = Date.UTC(2026, 0, 1, 12);
  const own = (d) => deriveMemberHandle(secret(1), DAVE, d);
  assert.deepEqual([...(await groupHandles(dave, noon)).listen.keys()], [await own('2025-12-31'), await own('2026-01-01')], 'catching up by default');
  assert.deepEqual([...(await groupHandles(dave, noon, undefined, { catchUp: false })).listen.keys()], [await own('2026-01-01')], 'today alone all day');
  const late = await groupHandles(dave, Date.UTC(2026, 0, 1, 23, 30), undefined, { catchUp: false });
  assert.deepEqual([...late.listen.keys()], [await own('2026-01-01'), await own('2026-01-02')], 'tomorrow too in the last hour');
});

// --- a member's key replaced (`was`) ---

const CAROL2 = 'C2'.padEnd(40, '2');

test('a member\'s new key (`was`) is read only in a later version, naming a key gone from it, once', async () => {
  const withWas = (members, ver = 2) => parseGroupList(JSON.stringify({
    v: 1, kind: 'group', gid: GID, ver, ...(ver > 1 ? { prev: secret(9) } : {}), ts: NOW, name: 'F', secret: secret(1), members,
  }));
  const alice = { fp: ALICE, name: 'Alice', admin: true, since: 1 };
  const ok = withWas([alice, { fp: CAROL2, name: 'Carol', was: CAROL }]);
  assert.ok(ok.ok);
  assert.deepEqual(ok.list.members[1], { fp: CAROL2, name: 'Carol', admin: false, was: CAROL });
  assert.equal(withWas([alice, { fp: CAROL2, name: 'Carol', was: CAROL }], 1).detail, 'member_was', 'nothing to replace in version 1');
  assert.equal(withWas([alice, { fp: CAROL2, name: 'Carol', was: CAROL2 }]).detail, 'member_was', 'itself');
  assert.equal(withWas([alice, { fp: CAROL2, name: 'Carol', was: 'not a fingerprint' }]).detail, 'member_was');
  assert.equal(withWas([alice, { fp: CAROL2, name: 'Carol', was: ALICE }]).detail, 'member_was', 'a key that stays');
  assert.equal(withWas([alice, { fp: CAROL2, name: 'C', was: CAROL }, { fp: DAVE, name: 'D', was: CAROL }]).detail, 'member_was', 'one key replaced twice');
  // Written back as read: the text a version is built from carries it.
  assert.equal(JSON.parse(buildGroupList(ok.list)).members[1].was, CAROL);
});

test('a key replaced is shown as that member\'s key changed, not as a removal and an addition; a `was` naming no member, or a member who stays, is refused', async () => {
  const v1 = await version();
  const dave = await daveWith(v1);
  const carol2 = { fp: CAROL2, name: 'Carol', admin: false, was: CAROL };
  const replacedMembers = [...BASE_MEMBERS.filter((m) => m.fp !== CAROL), carol2];
  const v2 = await version({ ver: 2, prev: v1, members: replacedMembers, s: secret(2) });
  const { state, result } = applyVersion(dave, v2, ALICE, NOW);
  assert.ok(result.ok && result.applied);
  assert.deepEqual(result.change.replaced, [{ fp: CAROL2, was: CAROL, name: 'Carol', admin: false }]);
  assert.deepEqual(result.change.add, [], 'not an addition');
  assert.deepEqual(result.change.remove, [], 'not a removal');
  // The old key goes like any removal: a new secret, or the version is refused.
  const sameSecret = await version({ ver: 2, prev: v1, members: replacedMembers, s: secret(1) });
  assert.equal(applyVersion(dave, sameSecret, ALICE, NOW).result.problem, 'removed_without_new_secret');
  // `was` naming someone who was not a member: refused (it would dress an addition up as a key change).
  const stranger = await version({ ver: 2, prev: v1, members: [...BASE_MEMBERS, { fp: CAROL2, name: 'Eve', admin: false, was: EVE }], s: secret(2) });
  assert.equal(applyVersion(dave, stranger, ALICE, NOW).result.problem, 'bad_was');
  // `was` on a member who was in the list already: refused.
  const v2b = (await version({ ver: 2, prev: v1, members: [...BASE_MEMBERS.filter((m) => m.fp !== CAROL && m.fp !== DAVE), { ...member(DAVE, 'Dave'), was: CAROL }], s: secret(2) }));
  assert.equal(applyVersion(await daveWith(v1), v2b, ALICE, NOW).result.problem, 'bad_was');
  // Replacing an admin's key is removing that admin: only itself or a more senior admin may (Bob may not replace Alice's).
  const aliceReplaced = await version({ ver: 2, prev: v1, members: [{ fp: 'A2'.padEnd(40, '2'), name: 'Alice', admin: true, since: 2, was: ALICE }, ...BASE_MEMBERS.slice(1)], s: secret(2) });
  assert.equal(applyVersion(dave, aliceReplaced, BOB, NOW).result.problem, 'not_allowed');

  // Every member shows it: a line naming the member, the key marked changed; gone once the member is.
  let group = newGroup(dave, emptyGroupMessages(), NOW);
  group = withVersionOutcome({ ...group, list: state }, result, ALICE);
  assert.deepEqual(group.keyChanges, { [CAROL2]: CAROL });
  const line = group.lines.find((l) => l.what === 'key_replaced');
  assert.equal(line.flagged, true);
  assert.match(groupLineText(group, line, DAVE), /^Carol has a new key: Alice replaced their old one \(fingerprint ending CCCCCCCC\).*Compare fingerprints with Carol/);
  assert.match(groupLineText(group, group.lines.find((l) => l.what === 'changed'), DAVE), /^Alice gave Carol a new key\.$/);
  const v3 = await version({ ver: 3, prev: v2, members: BASE_MEMBERS.filter((m) => m.fp !== CAROL), s: secret(3) });
  const after = applyVersion(state, v3, ALICE, NOW);
  assert.deepEqual(withVersionOutcome({ ...group, list: after.state }, after.result, ALICE).keyChanges, {});
});

test('an admin proposes a key change: `was` must be a member removed by the same change; the next version does not repeat it', async () => {
  const v1 = await version();
  const alice = joinGroup(v1, ALICE, { me: ALICE }).state;
  const add = [{ fp: CAROL2, name: 'Carol', was: CAROL }];
  assert.equal(proposeChange(alice, { add }, { ts: NOW, secret: secret(2) }).problem, 'bad_was', 'the old key must go in the same change');
  assert.equal(proposeChange(alice, { add: [{ fp: CAROL2, name: 'Carol', was: EVE }], remove: [EVE] }, { ts: NOW, secret: secret(2) }).problem, 'bad_was');
  assert.equal(proposeChange(alice, { add, remove: [CAROL] }, { ts: NOW }).problem, 'needs_new_secret');
  const made = proposeChange(alice, { add, remove: [CAROL] }, { ts: NOW, secret: secret(2) });
  assert.ok(made.ok, JSON.stringify(made));
  assert.deepEqual(made.list.members.at(-1), { fp: CAROL2, name: 'Carol', admin: false, was: CAROL });
  const applied = applyVersion(alice, (await readVersion(made.text)).version, ALICE, NOW);
  assert.deepEqual(applied.result.change.replaced, [{ fp: CAROL2, was: CAROL, name: 'Carol', admin: false }]);
  const next = proposeChange(applied.state, { name: 'Later' }, { ts: NOW });
  assert.ok(next.ok);
  assert.equal(JSON.parse(next.text).members.some((m) => 'was' in m), false, '`was` belongs to the version that made the change');
});

// --- a change that lost, made again ---

test('the losing admin\'s change is made again on the winner only where it still makes sense', async () => {
  const { v2, dave: start } = await seniorityGroup();
  const FRANK = 'F'.repeat(40);
  // Carol (admin since 2) signs c3 on v2 while Alice signs a3 on v2; Carol's page holds c3, then gets a3, which wins.
  const lost = async (c3Members, a3Members, { c3Secret = secret(1), a3Secret = secret(1), c3Name = 'Family', a3Name = 'Family' } = {}) => {
    const c3 = await version({ ver: 3, prev: v2, members: c3Members, s: c3Secret, name: c3Name });
    const a3 = await version({ ver: 3, prev: v2, members: a3Members, s: a3Secret, name: a3Name, ts: NOW + 1 });
    const { state, results } = applyAll({ ...start, me: CAROL }, [[c3, CAROL], [a3, ALICE]]);
    const dropped = results.get(a3.hash).conflict.dropped;
    assert.deepEqual(dropped.map((d) => d.signer), [CAROL]);
    return { state, change: dropped[0].change };
  };
  // Carol added Eve, Alice added Frank: Eve is added again, on top of Alice's version (Frank stays).
  const addEve = await lost([...v2.members, member(EVE, 'Eve')], [...v2.members, member(FRANK, 'Frank')]);
  const redo = redoChange(addEve.state, addEve.change);
  assert.deepEqual(redo, { ok: true, change: { add: [member(EVE, 'Eve')], remove: [], admin: {}, rename: {} }, removes: false });
  const made = proposeChange(addEve.state, redo.change, { ts: NOW + 2 });
  assert.deepEqual(made.list.members.map((m) => m.fp), [ALICE, BOB, CAROL, DAVE, FRANK, EVE]);
  // Alice added Eve too: nothing left to do.
  assert.deepEqual(redoChange((await lost([...v2.members, member(EVE, 'Eve')], [...v2.members, member(EVE, 'Eve')])).state, addEve.change), { ok: false, problem: 'done' });
  // Carol removed Dave: removed again (a new secret needed) while Dave is in; not when Alice removed him as well.
  const noDave = v2.members.filter((m) => m.fp !== DAVE);
  const removeDave = await lost(noDave, v2.members, { c3Secret: secret(3), a3Name: 'Renamed' });
  assert.deepEqual(redoChange(removeDave.state, removeDave.change), { ok: true, change: { add: [], remove: [DAVE], admin: {}, rename: {} }, removes: true });
  const both = await lost(noDave, noDave, { c3Secret: secret(3), a3Secret: secret(4) });
  assert.deepEqual(redoChange(both.state, both.change), { ok: false, problem: 'done' });
  // A rename and a flag: only what still differs.
  const flag = await lost([...v2.members.slice(0, 3), member(DAVE, 'Dave', 3)], v2.members, { c3Name: 'Carol\'s', a3Name: 'Alice\'s' });
  assert.deepEqual(redoChange(flag.state, flag.change).change, { name: 'Carol\'s', add: [], remove: [], admin: { [DAVE]: true }, rename: {} });
  // Alice's winning version took Carol's admin rights: Carol can make nothing again.
  const demoted = await lost([...v2.members, member(EVE, 'Eve')], [...v2.members.slice(0, 2), member(CAROL, 'Carol'), member(DAVE, 'Dave')]);
  assert.deepEqual(redoChange(demoted.state, demoted.change), { ok: false, problem: 'not_admin' });
  // A new key (`was`) is given again while the old key is listed and the new one is not.
  const CAROL_D = 'D2'.padEnd(40, '2');
  const rekey = await lost([...v2.members.slice(0, 3), { fp: CAROL_D, name: 'Dave', admin: false, was: DAVE }], v2.members, { c3Secret: secret(3), a3Name: 'Renamed' });
  const again = redoChange(rekey.state, rekey.change);
  assert.deepEqual(again.change.add, [{ fp: CAROL_D, name: 'Dave', admin: false, was: DAVE }]);
  assert.deepEqual(again.change.remove, [DAVE]);
  assert.ok(proposeChange(rekey.state, again.change, { ts: NOW, secret: secret(5) }).ok);
  // Both lines say what happened, naming the admin whose change was kept.
  const group = newGroup(rekey.state, emptyGroupMessages(), NOW);
  assert.equal(groupLineText(group, { what: 'redone', by: ALICE }, CAROL), 'Your change was redone after Alice\'s: two admins changed the group at once and theirs was kept, so yours was made again on top of it.');
  assert.match(groupLineText(group, { what: 'not_redone', by: ALICE, problem: 'done' }, CAROL), /Alice's change was kept; yours was not made again: the group already is as your change would make it\.$/);
  assert.match(groupLineText(group, { what: 'not_redone', by: ALICE, problem: 'not_admin' }, CAROL), /you are no longer an admin\.$/);
});
