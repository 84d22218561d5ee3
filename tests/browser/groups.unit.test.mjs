// The pure core of groups (PROTOCOL §6 "Groups") under Node: the signed member list (bounds, the list hash,
// who may change it, versions out of order, two admins at once, removals and secrets), the group handles
// (a fixed vector, checked against Node's own HMAC), the gtext/greceipt/gleave/gkeys envelopes and their
// bounds, the checks of a received message (members disagree, a recipient outside the group, seq rules),
// keys from admins against pinned contacts, and the delivery counts.
import assert from 'node:assert/strict';
import { createHash, createHmac } from 'node:crypto';
import { test } from 'node:test';
import * as openpgp from 'openpgp';
import {
  MAX_HISTORY, MAX_MEMBERS, MAX_PENDING, PENDING_MS, PREVIOUS_SECRET_MS, applyVersion, buildGroupList, changeBetween,
  createGroupList, current, expireGroup, joinGroup, leaveReceived, listHash, parseGroupList, proposeChange, readVersion,
} from '../../public/js/grouplist.js';
import { GROUP_HANDLE_LABEL, HANDLES_PER_GROUP, deriveMemberHandle, groupHandles, versionHandles } from '../../public/js/grouphandles.js';
import { deriveHandle, isHandle, listenPlan, toBase64Url } from '../../public/js/rendezvous.js';

const ALICE = 'A'.repeat(40);
const BOB = 'B'.repeat(40);
const CAROL = 'C'.repeat(40);
const DAVE = 'D'.repeat(40);
const EVE = 'E'.repeat(40);
const GID = toBase64Url(new Uint8Array(16).fill(1));
const secret = (n) => toBase64Url(new Uint8Array(32).fill(n));
const NOW = Date.UTC(2026, 0, 1, 12);
const DAY = 24 * 60 * 60 * 1000;

const member = (fp, name, admin = false) => ({ fp, name, admin });
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
  // Unknown fields are ignored; a member's admin flag may be absent (not an admin).
  const extra = JSON.stringify({ ...JSON.parse(text), future: 1, members: [{ fp: ALICE, name: 'A', admin: true, x: 1 }, { fp: BOB, name: 'B' }] });
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
  const many = (n) => Array.from({ length: n }, (_, i) => ({ fp: fp(i + 1), name: `m${i}`, admin: i === 0 }));
  assert.ok(parseGroupList(JSON.stringify({ ...good, members: many(MAX_MEMBERS) })).ok, '64 members');
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

test('two admins changing the group at once: the smaller list hash wins for everyone, whatever the order', async () => {
  const v1 = await version();
  const a2 = await version({ ver: 2, prev: v1, members: [...BASE_MEMBERS, member(EVE, 'Eve')], ts: NOW + 1 }); // Alice adds Eve
  const b2 = await version({ ver: 2, prev: v1, name: 'Bob\'s name', ts: NOW + 2 }); // Bob renames
  const [winner, loser] = a2.hash < b2.hash ? [a2, b2] : [b2, a2];
  const signerOf = (v) => (v === a2 ? ALICE : BOB);
  const start = await daveWith(v1);
  const orders = [[a2, b2], [b2, a2]];
  const finals = [];
  for (const [first, second] of orders) {
    let step = applyVersion(start, first, signerOf(first), NOW);
    assert.ok(step.result.ok);
    step = applyVersion(step.state, second, signerOf(second), NOW);
    assert.ok(step.result.ok);
    assert.deepEqual(step.result.conflict.kept, { ver: 2, hash: winner.hash, signer: signerOf(winner) });
    assert.deepEqual(step.result.conflict.dropped.map(({ ver, hash, signer }) => ({ ver, hash, signer })), [{ ver: 2, hash: loser.hash, signer: signerOf(loser) }]);
    // The dropped change is named, so its admin can make it again on top of the winner.
    assert.deepEqual(step.result.conflict.dropped[0].change, changeBetween(v1, loser));
    assert.equal(step.result.applied ? step.result.applied.hash : current(step.state).hash, winner.hash);
    finals.push(step.state);
  }
  assert.equal(current(finals[0]).hash, winner.hash);
  assert.equal(current(finals[1]).hash, winner.hash);
  assert.deepEqual(finals[0].history.map((v) => v.hash), finals[1].history.map((v) => v.hash));
  // The loser's admin makes the change again on top of the winner: a version 3 everyone takes.
  const loserAdmin = signerOf(loser);
  const asAdmin = { ...finals[0], me: loserAdmin };
  const redo = proposeChange(asAdmin, changeBetween(v1, loser), { ts: NOW + 3 });
  assert.ok(redo.ok);
  const v3 = (await readVersion(redo.text)).version;
  assert.equal(v3.prev, winner.hash);
  const step = applyVersion(finals[1], v3, loserAdmin, NOW);
  assert.ok(step.result.ok);
  assert.deepEqual(changeBetween(v1, current(step.state)).add.length + (current(step.state).name !== v1.name ? 1 : 0), 2, 'both changes are in');
  // What was built on the loser is refused as superseded, whether the loser was held for a while or never.
  const onLoser = await version({ ver: 3, prev: loser, name: 'on the loser' });
  for (const state of finals) {
    assert.equal(applyVersion(state, onLoser, ALICE, NOW).result.problem, 'superseded');
    assert.equal(applyVersion(state, loser, signerOf(loser), NOW).result.problem, 'superseded');
  }
});

test('a winning change that arrives late replaces the loser and what was built on it; its descendant waits for it', async () => {
  const v1 = await version();
  // Two candidates for version 2 and, on each, a version 3.
  const y2 = await version({ ver: 2, prev: v1, name: 'y', ts: 2 });
  let x2 = await version({ ver: 2, prev: v1, name: 'x', ts: 1, s: secret(5) });
  for (let ts = 3; x2.hash < y2.hash; ts += 1) x2 = await version({ ver: 2, prev: v1, name: 'x', ts, s: secret(5) }); // x2 must lose
  const x3 = await version({ ver: 3, prev: x2, name: 'x3' });
  const y3 = await version({ ver: 3, prev: y2, name: 'y3' });
  // Dave holds the loser and its successor; the winner's successor arrives first (waits), then the winner.
  let step = applyVersion(await daveWith(v1), x2, ALICE, NOW);
  step = applyVersion(step.state, x3, ALICE, NOW);
  assert.equal(current(step.state).hash, x3.hash);
  step = applyVersion(step.state, y3, BOB, NOW);
  assert.equal(step.result.problem, 'gap');
  step = applyVersion(step.state, y2, BOB, NOW + 1000);
  assert.deepEqual(step.result.conflict.kept, { ver: 2, hash: y2.hash, signer: BOB });
  assert.deepEqual(step.result.conflict.dropped.map((d) => d.hash), [x2.hash, x3.hash]);
  assert.deepEqual(step.released.map((r) => r.applied && r.applied.hash), [y3.hash]);
  assert.equal(current(step.state).hash, y3.hash);
  assert.deepEqual(step.state.history.map((v) => v.ver), [1, 2, 3]);
  // The secrets held meanwhile are listened on for a while (messages may have been sent under them).
  assert.deepEqual(step.state.previousSecrets, [{ secret: secret(5), until: NOW + 1000 + PREVIOUS_SECRET_MS }]);
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
  const { state: left, ok } = leaveReceived(alice, DAVE);
  assert.ok(ok);
  assert.equal(leaveReceived(alice, EVE).problem, 'not_member');
  assert.equal(proposeChange(left, { name: 'New name' }, { ts: NOW }).problem, 'needs_new_secret');
  const next = proposeChange(left, { name: 'New name', admin: { [CAROL]: true } }, { ts: NOW, secret: secret(4) });
  assert.ok(next.ok);
  assert.deepEqual(next.list.members, [member(ALICE, 'Alice', true), member(BOB, 'Bob', true), member(CAROL, 'Carol', true)]);
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
