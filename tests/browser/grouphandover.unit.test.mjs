// Handing a group to a new member until it confirms (grouphandover.js) under Node: the waits between tries grow
// and the tries are bounded, a new connection hands every open one again, a confirmation must name the version
// the member was added in or a later one, a handover ends when its member leaves the list or we are no admin,
// `gjoined` is read and bounded, and the contact book keeps the open handovers (read back checked).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { groupRecord, readGroups } from '../../public/js/groupbook.js';
import {
  HANDOVER_BACKOFF_MS, MAX_HANDOVER_TRIES, checkedHandovers, handoverConfirmed, handoverStarted, handoversDue, nextHandover,
} from '../../public/js/grouphandover.js';
import { buildGroupList, joinGroup, readVersion } from '../../public/js/grouplist.js';
import { buildGroupJoined, emptyGroupMessages, parseGroupEnvelope } from '../../public/js/groupmessages.js';
import { newGroup } from '../../public/js/groups.js';
import { toBase64Url } from '../../public/js/rendezvous.js';

const ALICE = 'A'.repeat(40);
const BOB = 'B'.repeat(40);
const DAVE = 'D'.repeat(40);
const GID = toBase64Url(new Uint8Array(16).fill(1));
const SECRET = toBase64Url(new Uint8Array(32).fill(2));
const NOW = Date.UTC(2026, 0, 1, 12);

async function aliceHolds(members) {
  const read = await readVersion(buildGroupList({ gid: GID, ver: 1, ts: NOW, name: 'Family', secret: SECRET, members }));
  return joinGroup(read.version, ALICE, { me: ALICE }).state;
}
const withDave = [{ fp: ALICE, name: 'Alice', admin: true, since: 1 }, { fp: BOB, name: 'Bob', admin: false }, { fp: DAVE, name: 'Dave', admin: false }];

test('a new member is handed the group again, with growing waits, until it confirms; given up after a bounded number of tries', async () => {
  const list = await aliceHolds(withDave);
  let handovers = handoverStarted([], DAVE, 1, NOW);
  assert.deepEqual(handovers, [{ fp: DAVE, ver: 1, tries: 1, next: NOW + HANDOVER_BACKOFF_MS[0] }]);
  assert.equal(nextHandover(handovers), NOW + HANDOVER_BACKOFF_MS[0]);
  // Not due yet: nothing changes.
  const early = handoversDue(handovers, list, NOW + 1000);
  assert.deepEqual([early.due, early.givenUp], [[], []]);
  assert.equal(early.handovers, handovers);
  // Each try waits longer than the one before.
  let at = NOW;
  const waits = [];
  for (let tries = 1; tries < MAX_HANDOVER_TRIES; tries += 1) {
    at = nextHandover(handovers);
    const step = handoversDue(handovers, list, at);
    assert.deepEqual(step.due, [DAVE]);
    handovers = step.handovers;
    waits.push(nextHandover(handovers) - at);
  }
  assert.deepEqual(waits, [...waits].sort((a, b) => a - b));
  assert.equal(handovers[0].tries, MAX_HANDOVER_TRIES);
  // Handed MAX_HANDOVER_TRIES times: given up once the last wait is over, not before.
  assert.deepEqual(handoversDue(handovers, list, nextHandover(handovers) - 1).due, []);
  const last = handoversDue(handovers, list, nextHandover(handovers));
  assert.deepEqual([last.due, last.givenUp, last.handovers], [[], [DAVE], []]);
});

test('a new connection hands every open handover again at once, each counted as a try', async () => {
  const list = await aliceHolds(withDave);
  const handovers = handoverStarted(handoverStarted([], DAVE, 1, NOW), BOB, 1, NOW);
  const step = handoversDue(handovers, list, NOW + 10, { all: true });
  assert.deepEqual(step.due, [DAVE, BOB]);
  assert.deepEqual(step.handovers.map((h) => h.tries), [2, 2]);
});

test('a confirmation names the version the member was added in or a later one; other members\' do nothing', async () => {
  const handovers = handoverStarted([], DAVE, 3, NOW);
  assert.equal(handoverConfirmed(handovers, DAVE, 2), handovers, 'an older version: an earlier membership');
  assert.equal(handoverConfirmed(handovers, BOB, 3), handovers);
  assert.deepEqual(handoverConfirmed(handovers, DAVE, 3), []);
  assert.deepEqual(handoverConfirmed(handovers, DAVE, 4), []);
  assert.equal(handoverConfirmed(handovers, DAVE, 'x'), handovers);
});

test('a handover ends quietly when its member is no longer in the list, or we are no admin to hand it', async () => {
  const handovers = handoverStarted([], DAVE, 1, NOW);
  const without = await aliceHolds(withDave.filter((m) => m.fp !== DAVE));
  assert.deepEqual(handoversDue(handovers, without, NOW + 10 ** 9), { handovers: [], due: [], givenUp: [] });
  const notAdmin = { ...(await aliceHolds(withDave)), me: BOB };
  assert.deepEqual(handoversDue(handovers, notAdmin, NOW + 10 ** 9), { handovers: [], due: [], givenUp: [] });
});

test('gjoined is built and read back; without a version it is malformed', () => {
  const text = buildGroupJoined({ gid: GID, ver: 2, ts: NOW });
  assert.deepEqual(parseGroupEnvelope(text), { ok: true, envelope: { kind: 'gjoined', gid: GID, ts: NOW, ver: 2 } });
  const bad = JSON.stringify({ ...JSON.parse(text), ver: 0 });
  assert.deepEqual(parseGroupEnvelope(bad), { ok: false, problem: 'malformed', detail: 'ver' });
});

test('the contact book keeps open handovers; read back checked and bounded', async () => {
  const list = await aliceHolds(withDave);
  const group = { ...newGroup(list, emptyGroupMessages(), NOW), handovers: handoverStarted([], DAVE, 1, NOW) };
  const record = JSON.parse(JSON.stringify(groupRecord(group)));
  const { groups } = await readGroups([record], ALICE, NOW);
  assert.deepEqual(groups[0].handovers, group.handovers);
  // A record from before handovers were kept reads as none open.
  const older = { ...record };
  delete older.handovers;
  assert.deepEqual((await readGroups([older], ALICE, NOW)).groups[0].handovers, []);
  for (const bad of [{ handovers: 'x' }, { handovers: [{ fp: DAVE, ver: 0, tries: 1, next: NOW }] }, { handovers: [{ fp: DAVE, ver: 1, tries: MAX_HANDOVER_TRIES + 1, next: NOW }] },
    { handovers: [{ fp: DAVE, ver: 1, tries: 1, next: NOW }, { fp: DAVE, ver: 1, tries: 1, next: NOW }] }, { handovers: Array.from({ length: 65 }, () => ({})) }]) {
    assert.equal((await readGroups([{ ...record, ...bad }], ALICE, NOW)).problem, 'bad_group', JSON.stringify(bad).slice(0, 80));
  }
  assert.equal(checkedHandovers([{ fp: 'x', ver: 1, tries: 1, next: 0 }]), null);
});
