// Groups in the contact book under Node: a group's record read back gives the same member list, seqs, keys,
// deliveries and unconfirmed messages; groups taken off the list and who handed a group are kept, and decide
// which invitations are refused; every malformed field refuses the record (and so the book), and the
// bounds hold (groups, unconfirmed messages), whoever made the file.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as openpgp from '../../public/vendor/openpgp.min.mjs';
import { MAX_GROUP_UNCONFIRMED, groupRecord, readForgotten, readGroups } from '../../public/js/groupbook.js';
import { deliveries } from '../../public/js/groupdelivery.js';
import { buildGroupList, current, joinGroup, readVersion } from '../../public/js/grouplist.js';
import { emptyGroupMessages } from '../../public/js/groupmessages.js';
import {
  MAX_FORGOTTEN_GROUPS, MAX_GROUPS_PER_CONTACT, forgottenWith, groupForgotten, joinProblem, newGroup, withGroupLine,
} from '../../public/js/groups.js';
import { MAX_GROUPS, toBase64Url } from '../../public/js/rendezvous.js';

const ALICE = 'A'.repeat(40);
const BOB = 'B'.repeat(40);
const GID = toBase64Url(new Uint8Array(16).fill(1));
const SECRET = toBase64Url(new Uint8Array(32).fill(2));
const NOW = Date.UTC(2026, 0, 1, 12);
const members = [{ fp: ALICE, name: 'Alice', admin: true, since: 1 }, { fp: BOB, name: 'Bob', admin: false }];

async function bobsGroup(gid = GID) {
  const read = await readVersion(buildGroupList({ gid, ver: 1, ts: NOW, name: 'Family', secret: SECRET, members }));
  const { state } = joinGroup(read.version, ALICE, { me: BOB });
  let group = newGroup(state, { ...emptyGroupMessages(), sendSeq: 2, received: { [ALICE]: { through: 3, extra: [], missing: [], floor: 0 } } }, NOW);
  group = withGroupLine(group, { direction: 'out', from: BOB, seq: 1, ts: NOW, text: 'confirmed', state: 'sent' });
  group = withGroupLine(group, { direction: 'out', from: BOB, seq: 2, ts: NOW + 1, text: 'not yet', state: 'sent' });
  group = { ...group, deliveries: deliveries(deliveries(deliveries(group.deliveries, { type: 'sent', seq: 1, to: [ALICE] }), { type: 'receipt', from: ALICE, acks: [1] }), { type: 'sent', seq: 2, to: [ALICE] }) };
  return group;
}

const roundTrip = async (records, me = BOB) => readGroups(JSON.parse(JSON.stringify(records)), me, NOW);

test('a group read back from its record: the same list, seqs and deliveries; the unconfirmed message back in the outbox', async () => {
  const group = await bobsGroup();
  const { groups } = await roundTrip([groupRecord(group)]);
  assert.equal(groups.length, 1);
  const [back] = groups;
  assert.deepEqual(current(back.list).members, members);
  assert.equal(current(back.list).hash, current(group.list).hash);
  assert.equal(back.messages.sendSeq, 2);
  assert.equal(back.messages.received[ALICE].through, 3);
  assert.deepEqual(back.deliveries, group.deliveries);
  assert.deepEqual(back.lines.filter((l) => l.direction === 'out').map((l) => [l.seq, l.text, l.state]), [[2, 'not yet', 'sent']]);
  assert.equal(back.status, 'member');
  assert.deepEqual(await readGroups(undefined, BOB, NOW), { groups: [] }, 'a book from before groups');
});

test('the record keeps the keys of the current members only, so a group with turnover still reads back', async () => {
  const group = await bobsGroup();
  const former = 'F'.repeat(40);
  const withFormer = { ...group, messages: { ...group.messages, keys: { ...group.messages.keys, [former]: { armored: 'x', keyIds: [], source: 'gkeys', changed: false } } } };
  assert.equal(groupRecord(withFormer).keys[former], undefined);
});

test('a record whose member list does not hold us is a group we were removed from', async () => {
  const { groups } = await roundTrip([groupRecord(await bobsGroup())], 'C'.repeat(40));
  assert.equal(groups[0].status, 'removed');
});

test('any malformed field refuses the record; the bounds hold', async () => {
  const record = groupRecord(await bobsGroup());
  const bad = [
    { gid: 'short' }, { text: record.text.replace('"ver":1', '"ver":0') }, { text: `${record.text}\n` }, { signer: 'x' },
    { status: 'admin' }, { sendSeq: -1 }, { previousSecrets: [{ secret: 'x', until: 1 }] }, { leaving: ['x'] },
    { received: { x: {} } }, { keys: { [ALICE]: { armored: 'not a key', keyIds: [], changed: false } } },
    { sent: [{ seq: 9, to: [ALICE], have: [] }] }, { unconfirmed: [{ seq: 3, ts: NOW, text: 'beyond sendSeq' }] },
    { unconfirmed: Array(MAX_GROUP_UNCONFIRMED + 1).fill({ seq: 1, ts: NOW, text: 'x' }) },
    { gid: toBase64Url(new Uint8Array(16).fill(3)) }, // the text's gid is another
  ];
  for (const change of bad) assert.equal((await roundTrip([{ ...record, ...change }])).problem, 'bad_group', JSON.stringify(change).slice(0, 80));
  assert.equal((await roundTrip([record, record])).problem, 'duplicate_group');
  assert.equal((await roundTrip(Array(MAX_GROUPS + 1).fill(record))).problem, 'too_many_groups');
  assert.equal((await readGroups('x', BOB, NOW)).problem, 'bad_group');
});

test('a member\'s key from an admin reads back with its key IDs and signing key IDs; signing IDs must be the key\'s', async () => {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Alice' }], format: 'object' });
  const keyIds = publicKey.getKeyIDs().map((id) => id.toHex());
  const signingKeyIds = [keyIds[0]];
  const group = await bobsGroup();
  const held = { ...group, messages: { ...group.messages, keys: { [ALICE]: { armored: publicKey.armor(), keyIds, signingKeyIds, source: 'gkeys', changed: false } } } };
  const record = groupRecord(held);
  const [back] = (await roundTrip([record])).groups;
  assert.deepEqual(back.messages.keys[ALICE], held.messages.keys[ALICE]);
  // A record without signing key IDs counts every key ID as one the key may sign with.
  const { signingKeyIds: _, ...without } = record.keys[ALICE];
  const [strict] = (await roundTrip([{ ...record, keys: { [ALICE]: without } }])).groups;
  assert.deepEqual(strict.messages.keys[ALICE].signingKeyIds, keyIds);
  for (const ids of [['0123456789abcdef'], 'x', [keyIds[0].toUpperCase()]]) {
    assert.equal((await roundTrip([{ ...record, keys: { [ALICE]: { ...record.keys[ALICE], signingKeyIds: ids } } }])).problem, 'bad_group', String(ids));
  }
});

test('members whose key an admin replaced read back as such (current members only); a malformed mark refuses the record', async () => {
  const group = await bobsGroup();
  const old = 'F'.repeat(40);
  const record = groupRecord({ ...group, keyChanges: { [ALICE]: old } });
  assert.deepEqual(record.keyChanges, { [ALICE]: old });
  const [back] = (await roundTrip([record])).groups;
  assert.deepEqual(back.keyChanges, { [ALICE]: old });
  const [none] = (await roundTrip([{ ...record, keyChanges: undefined }])).groups;
  assert.deepEqual(none.keyChanges, {}, 'a book from before key changes');
  const [current_] = (await roundTrip([{ ...record, keyChanges: { ['E'.repeat(40)]: old } }])).groups;
  assert.deepEqual(current_.keyChanges, {}, 'a mark for someone not in the list is dropped');
  for (const keyChanges of ['x', [old], { [ALICE]: 'x' }, { x: old }, { [ALICE]: ALICE }]) {
    assert.equal((await roundTrip([{ ...record, keyChanges }])).problem, 'bad_group', JSON.stringify(keyChanges));
  }
});

test('groups taken off the list are remembered (256 at most, one entry per gid) and read back checked; who handed a group is kept', async () => {
  const gid = (i) => toBase64Url(new Uint8Array(16).fill(i % 250).map((b, j) => (j === 0 ? i >> 8 : b)));
  let forgotten = [];
  for (let i = 0; i < MAX_FORGOTTEN_GROUPS + 10; i += 1) forgotten = forgottenWith(forgotten, gid(i), 3);
  assert.equal(forgotten.length, MAX_FORGOTTEN_GROUPS);
  assert.equal(forgotten[0].gid, gid(10), 'the oldest go first');
  forgotten = forgottenWith(forgotten, gid(10), 7);
  assert.equal(forgotten.filter((f) => f.gid === gid(10)).length, 1);
  assert.deepEqual(forgotten.at(-1), { gid: gid(10), ver: 7 });
  assert.deepEqual(readForgotten(JSON.parse(JSON.stringify(forgotten))), { forgotten });
  assert.deepEqual(readForgotten(undefined), { forgotten: [] }, 'a book from before');
  for (const bad of ['x', [{ gid: 'short', ver: 1 }], [{ gid: GID, ver: 0 }], [{ gid: GID, ver: 1 }, { gid: GID, ver: 2 }], Array(MAX_FORGOTTEN_GROUPS + 1).fill(0).map((_, i) => ({ gid: gid(i), ver: 1 }))]) {
    assert.equal(readForgotten(bad).problem, 'bad_group', JSON.stringify(bad).slice(0, 60));
  }
  const group = { ...(await bobsGroup()), handedBy: ALICE };
  const [back] = (await roundTrip([groupRecord(group)])).groups;
  assert.equal(back.handedBy, ALICE);
  assert.equal((await roundTrip([{ ...groupRecord(group), handedBy: 'x' }])).problem, 'bad_group');
  const [ours] = (await roundTrip([{ ...groupRecord(group), handedBy: undefined }])).groups;
  assert.equal(ours.handedBy, '');
});

test('an invitation is refused for a group forgotten at that version or a later one, and beyond 8 groups from one contact', async () => {
  const group = await bobsGroup();
  const state = (groups, forgottenGroups = []) => ({ groups: new Map(groups.map((g) => [g.gid, g])), forgottenGroups });
  const v = (ver, gid = GID) => ({ gid, ver });
  const forgotten = forgottenWith([], GID, 4);
  assert.equal(joinProblem(state([], forgotten), v(1), ALICE, MAX_GROUPS), 'forgotten', 'a replay of an older version');
  assert.equal(joinProblem(state([], forgotten), v(4), ALICE, MAX_GROUPS), 'forgotten', 'a replay of the version held then');
  assert.equal(joinProblem(state([], forgotten), v(5), ALICE, MAX_GROUPS), null, 'an admin adding us back makes a newer version');
  const other = toBase64Url(new Uint8Array(16).fill(7));
  assert.equal(joinProblem(state([], forgotten), v(1, other), ALICE, MAX_GROUPS), null);
  // Eight groups handed by Alice: a ninth from her is refused, one from someone else is not; ours do not count.
  const gids = Array.from({ length: MAX_GROUPS_PER_CONTACT }, (_, i) => toBase64Url(new Uint8Array(16).fill(20 + i)));
  const fromAlice = gids.map((g) => ({ ...group, gid: g, handedBy: ALICE }));
  assert.equal(joinProblem(state(fromAlice), v(1, other), ALICE, MAX_GROUPS), 'contact_full');
  assert.equal(joinProblem(state(fromAlice), v(1, other), BOB, MAX_GROUPS), null);
  assert.equal(joinProblem(state(fromAlice.slice(1)), v(1, other), ALICE, MAX_GROUPS), null);
  assert.equal(joinProblem(state([...fromAlice.slice(1), { ...group, gid: other, handedBy: '' }]), v(1, toBase64Url(new Uint8Array(16).fill(99))), ALICE, MAX_GROUPS), null);
  assert.equal(joinProblem(state(fromAlice), v(1, other), BOB, MAX_GROUPS_PER_CONTACT), 'groups_full');
  // The user takes a group off the list: it is remembered with the version held then.
  const next = { state: { groups: new Map([[GID, group]]), forgottenGroups: [] } };
  groupForgotten(next, { gid: GID });
  assert.deepEqual(next.state.forgottenGroups, [{ gid: GID, ver: 1 }]);
  assert.equal(next.state.groups.size, 0);
});
