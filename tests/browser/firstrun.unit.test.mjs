// Under Node, the pure parts of a newcomer's first minute: names (a key's name is attacker-chosen text),
// nicknames, the invite link's one-time secret and the proof a request carries (HMAC through Web Crypto), and
// the transitions that use them. Every step checks that the state it was given is unchanged (helpers/model.mjs).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import * as openpgp from 'openpgp';
import { inviteLink, parseInvite } from '../../public/js/invite.js';
import {
  inviteProof, isInviteProof, isInviteSecret, matchInviteProof, newInviteSecret, toBase64url,
} from '../../public/js/inviteproof.js';
import { readFriendKey } from '../../public/js/keys.js';
import { INVITE_SECRETS_KEPT, hasLiveFriendships } from '../../public/js/model.js';
import {
  KEY_NAME_MAX, MAX_MARKS_PER_BASE, NICKNAME_MAX, cleanName, friendLabel, friendsNamedLike, keyName, labelText, nameClashes,
  nameSkeleton, nicknameProblem, readsAsId,
} from '../../public/js/names.js';
import { inviteStatus } from '../../public/js/requests.js';
import { systemLineText } from '../../public/js/text.js';
import { assessKey } from '../../public/js/trust.js';
import { withUnsignedUserId } from './helpers/hostilekey.mjs';
import {
  BOB, BOB_KEY, CAROL, CAROL_KEY, DAN, DAN_KEY, OWN_FP, befriend, effectsOf, frame, keyChecked, keyOf, online, step, steps, systemLines,
} from './helpers/model.mjs';

const FPR = '0123456789ABCDEF0123456789ABCDEF01234567';
const SECRET = toBase64url(new Uint8Array(16).map((_, i) => i + 1));

test('a name on a key loses controls, bidi overrides, zero-width characters and trust marks, and is bounded', () => {
  assert.equal(cleanName('Alice', KEY_NAME_MAX), 'Alice');
  // A right-to-left override would show "evil\u202Egnp.exe" reversed; zero-width joiners hide characters.
  assert.equal(cleanName('ev\u202Eil\u200B\u200D na\u2066me\u2069', KEY_NAME_MAX), 'evil name');
  assert.equal(cleanName('two\nlines\r\u2028and\ttabs\u0007', KEY_NAME_MAX), 'two lines and tabs');
  assert.equal(cleanName('Bob ✔ verified ✅ ☑ ⚠️', KEY_NAME_MAX), 'Bob verified');
  assert.equal(cleanName('   ', KEY_NAME_MAX), '');
  assert.equal(cleanName(null, KEY_NAME_MAX), '');
  const long = cleanName('x'.repeat(500), KEY_NAME_MAX);
  assert.equal([...long].length, KEY_NAME_MAX);
  assert.ok(long.endsWith('…'));
  // Astral characters count as one each and are never cut in half.
  const emoji = cleanName('😀'.repeat(100), 10);
  assert.equal([...emoji].length, 10);
  assert.doesNotMatch(emoji, /[\uD800-\uDFFF](?![\uDC00-\uDFFF])/u);
  // The default name of keys made without one says nothing about who holds it.
  assert.equal(keyName('SecChat user'), '');
  assert.equal(keyName('Alice <alice@example.org>'), 'Alice <alice@example.org>');
});

test('a friend is called by the nickname the user gave, else the name on the key (marked), else the ID', () => {
  const friend = { id: BOB, userId: 'Bob\u202E', nickname: '' };
  assert.deepEqual(friendLabel(friend), { text: 'Bob', kind: 'key' });
  assert.equal(labelText(friendLabel(friend)), 'Bob (name on their key)');
  assert.deepEqual(friendLabel({ ...friend, nickname: 'Bobby' }), { text: 'Bobby', kind: 'nickname' });
  assert.deepEqual(friendLabel({ ...friend, userId: 'SecChat user' }), { text: BOB, kind: 'id' });
});

test('a key name that reads like another friend\'s nickname or key name is a clash; a nickname cannot be given twice', () => {
  let state = befriend(online(), BOB, BOB_KEY);
  state = befriend(state, CAROL, keyOf('BOB', 'C')); // Carol's key claims Bob's name, in other case
  assert.deepEqual(nameClashes(state, CAROL), [BOB]);
  assert.deepEqual(nameClashes(state, BOB), [CAROL]);
  // The user calls Bob "Dad": a key named "dad" now clashes with the nickname.
  state = step(state, { type: 'nicknameSet', id: BOB, nickname: 'Dad' }).state;
  const dan = keyOf('dad', 'E');
  state = befriend(state, 'D0D0D0', dan);
  assert.deepEqual(nameClashes(state, 'D0D0D0'), [BOB]);
  assert.deepEqual(nicknameProblem(state, CAROL, ' DAD '), { problem: 'taken', nickname: 'DAD', other: BOB });
  assert.deepEqual(nicknameProblem(state, BOB, 'Dad'), { problem: null, nickname: 'Dad' });
  assert.deepEqual(nicknameProblem(state, CAROL, 'x'.repeat(100)).nickname.length, NICKNAME_MAX);
});

test('a nickname is cleaned and bounded by the transition itself, and clears with an empty one', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  const named = step(state, { type: 'nicknameSet', id: BOB, nickname: '  Bo\u202Eb ✔ \n' });
  assert.equal(named.state.friends.get(BOB).nickname, 'Bob');
  assert.equal(step(named.state, { type: 'nicknameSet', id: BOB, nickname: '' }).state.friends.get(BOB).nickname, '');
  assert.equal(step(state, { type: 'nicknameSet', id: CAROL, nickname: 'nobody' }).state.friends.has(CAROL), false);
});

test('invite links carry a one-time secret; a malformed one is dropped, the fingerprint still counts', () => {
  const link = inviteLink({ origin: 'https://chat.example', pathname: '/' }, 'K7Q2ZD', FPR, SECRET);
  assert.equal(link, `https://chat.example/#id=K7Q2ZD&fp=${FPR}&k=${SECRET}`);
  assert.deepEqual(parseInvite(new URL(link).hash), { id: 'K7Q2ZD', fingerprint: FPR, secret: SECRET });
  assert.deepEqual(parseInvite(`#id=K7Q2ZD&fp=${FPR}&k=short`), { id: 'K7Q2ZD', fingerprint: FPR, secret: null });
  assert.deepEqual(parseInvite(`#id=K7Q2ZD&fp=${FPR}&k=${SECRET.slice(0, 21)}+`), { id: 'K7Q2ZD', fingerprint: FPR, secret: null });
  const fresh = newInviteSecret();
  assert.ok(isInviteSecret(fresh));
  assert.notEqual(fresh, newInviteSecret());
});

test('the invite proof is HMAC-SHA256 over the context and both fingerprints, as PROTOCOL.md says', async () => {
  const requester = 'B'.repeat(40);
  const proof = await inviteProof(SECRET, requester, FPR);
  // The same computation with Node's own HMAC: the wire format is what the document says, not just self-consistent.
  const expected = createHmac('sha256', Buffer.from(SECRET, 'base64url'))
    .update(`secchat-invite-v1\n${requester}\n${FPR}`).digest('base64url');
  assert.equal(proof, expected);
  assert.equal(proof.length, 43);
  assert.ok(isInviteProof(proof));
  const other = newInviteSecret();
  assert.equal(await matchInviteProof(proof, [other, SECRET], requester, FPR), SECRET);
  // Another key (a server swapped it), other roles, another inviter, a wrong or malformed proof: no match.
  assert.equal(await matchInviteProof(proof, [SECRET], 'C'.repeat(40), FPR), null);
  assert.equal(await matchInviteProof(proof, [SECRET], FPR, requester), null);
  assert.equal(await matchInviteProof(proof, [other], requester, FPR), null);
  assert.equal(await matchInviteProof(`${proof.slice(0, -1)}A`, [SECRET], requester, FPR), null);
  assert.equal(await matchInviteProof('not base64url!', [SECRET], requester, FPR), null);
  assert.equal(await matchInviteProof('x'.repeat(65), [SECRET], requester, FPR), null);
  assert.equal(await matchInviteProof(undefined, [SECRET], requester, FPR), null);
});

test('our link gets a secret once the key is ready; a request proving it is marked, and accepting it verifies the key and uses the secret up', () => {
  const ready = step(online(), { type: 'identityReady', fingerprint: OWN_FP });
  // online() made the identity ready already, so a secret was asked for there; ask again on a state without one.
  assert.deepEqual(effectsOf(ready, 'inviteSecretNeeded'), [{ type: 'inviteSecretNeeded' }]);
  let { state } = step(ready.state, { type: 'inviteSecretCreated', secret: SECRET });
  assert.deepEqual(state.inviteSecrets, [SECRET]);
  assert.deepEqual(effectsOf(step(state, { type: 'identityReady', fingerprint: OWN_FP }), 'inviteSecretNeeded'), []);
  assert.deepEqual(step(state, { type: 'inviteSecretCreated', secret: 'bad' }).state.inviteSecrets, [SECRET]);

  // The request carries a proof: the key check is asked to match it against our secrets.
  const arrived = step(state, frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored, invite: 'P'.repeat(43) }));
  const [check] = effectsOf(arrived, 'checkKey');
  assert.deepEqual(check, {
    type: 'checkKey', purpose: 'request', from: BOB, publicArmored: BOB_KEY.publicArmored, epoch: 0,
    invite: 'P'.repeat(43), inviteSecrets: [SECRET], ownFingerprint: OWN_FP,
  });
  const card = step(arrived.state, keyChecked(check, BOB_KEY, { viaInvite: SECRET }));
  assert.equal(card.state.incomingRequests.get(BOB).viaInvite, SECRET);

  const accepted = step(card.state, { type: 'requestAccepted', id: BOB, key: BOB_KEY, viaInvite: SECRET });
  const bob = accepted.state.friends.get(BOB);
  assert.equal(bob.trust, 'verified');
  assert.equal(bob.trustSource, 'invite_proof');
  assert.deepEqual(accepted.state.inviteSecrets, [], 'a link secret is used once');
  assert.deepEqual(effectsOf(accepted, 'inviteSecretNeeded'), [{ type: 'inviteSecretNeeded' }]);
  const started = accepted.state.friends.get(BOB).messages.find((m) => m.what === 'started');
  assert.equal(started.viaInvite, true);
  assert.match(systemLineText(started, BOB).text, /through your invite link/);

  // The same proof again (a second person with the same link, or a replay): the secret is gone, nothing is marked.
  ({ state } = step(accepted.state, { type: 'inviteSecretCreated', secret: newInviteSecret() }));
  const again = step(state, frame({ type: 'FRIEND_REQUEST', from: CAROL, public_key: CAROL_KEY.publicArmored, invite: 'P'.repeat(43) }));
  const [check2] = effectsOf(again, 'checkKey');
  const card2 = step(again.state, keyChecked(check2, CAROL_KEY, { viaInvite: SECRET }));
  assert.equal(card2.state.incomingRequests.get(CAROL).viaInvite, null);
  const carol = step(card2.state, { type: 'requestAccepted', id: CAROL, key: CAROL_KEY, viaInvite: SECRET }).state.friends.get(CAROL);
  assert.equal(carol.trust, 'unverified');
});

test('a request without a proof, a malformed one, or with no secret of ours outstanding is checked as any other', () => {
  let { state } = step(online(), { type: 'inviteSecretCreated', secret: SECRET });
  for (const invite of [undefined, '', 'has space', 'x'.repeat(65), 42]) {
    const [check] = effectsOf(step(state, frame({ type: 'FRIEND_REQUEST', from: BOB, public_key: BOB_KEY.publicArmored, invite })), 'checkKey');
    assert.deepEqual(check, { type: 'checkKey', purpose: 'request', from: BOB, publicArmored: BOB_KEY.publicArmored, epoch: 0 });
  }
  // An alarm wins over a proof: a key the invite link we opened does not name stays "key changed".
  ({ state } = step(state, { type: 'inviteOpened', id: BOB, fingerprint: 'F'.repeat(40), secret: null }));
  const bob = step(state, { type: 'requestAccepted', id: BOB, key: BOB_KEY, viaInvite: SECRET }).state.friends.get(BOB);
  assert.equal(bob.trust, 'changed');
});

test('secrets are kept at most INVITE_SECRETS_KEPT, newest last; an opened link\'s secret is kept for its ID', () => {
  let state = online();
  const made = [];
  for (let i = 0; i < INVITE_SECRETS_KEPT + 3; i += 1) {
    const secret = newInviteSecret();
    made.push(secret);
    ({ state } = step(state, { type: 'inviteSecretCreated', secret }));
  }
  assert.deepEqual(state.inviteSecrets, made.slice(-INVITE_SECRETS_KEPT));
  const opened = step(state, { type: 'inviteOpened', id: BOB, fingerprint: FPR, secret: SECRET });
  assert.equal(opened.state.inviteKeys.get(BOB), SECRET);
  assert.equal(opened.state.expectations.get(BOB), FPR);
  assert.equal(step(state, { type: 'inviteOpened', id: BOB, fingerprint: FPR, secret: null }).state.inviteKeys.has(BOB), false);
});

test('system lines tell why before what: "accepted your request" comes before "friendship started"', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  assert.deepEqual(systemLines(state, BOB), ['accepted', 'started']);
  const texts = state.friends.get(BOB).messages.map((line) => systemLineText(line, 'Bob').text);
  assert.match(texts[0], /^Bob accepted your friend request/);
  assert.match(texts[1], /^Friendship started/);
});

test('the page warns before closing only while a friendship is live', () => {
  assert.equal(hasLiveFriendships(online()), false);
  const state = befriend(online(), BOB, BOB_KEY);
  assert.equal(hasLiveFriendships(state), true);
  const { state: ended } = steps(state, frame({ type: 'FRIEND_REMOVE', from: BOB }));
  assert.equal(hasLiveFriendships(ended), false);
});

// --- what a fresh-eyes attack review of the above found ------------------------------------------------------

test('the name on a key is the user ID its owner self-certified: an unsigned one put in front by a relay is not read', async () => {
  const { publicKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'Bob Smith' }], format: 'armored' });
  const relayed = withUnsignedUserId(publicKey, 'Mum');
  const parsed = await openpgp.readKey({ armoredKey: relayed });
  // The attack as OpenPGP.js sees it: the same fingerprint, "Mum" first among the user IDs.
  assert.deepEqual(parsed.getUserIDs(), ['Mum', 'Bob Smith']);
  const genuine = await readFriendKey(publicKey);
  const read = await readFriendKey(relayed);
  assert.equal(read.fingerprint, genuine.fingerprint);
  assert.equal(read.userId, 'Bob Smith');
});

/** A state with friend Bob (key name "Bob"), and `name` on the key of a stranger befriended as E0E0E0. */
function withStrangerNamed(name) {
  const state = befriend(befriend(online(), BOB, BOB_KEY), 'E0E0E0', keyOf(name, 'E'));
  return { state, clashes: nameClashes(state, 'E0E0E0') };
}

test('look-alike names clash: invisible fillers, mark stacks, look-alike letters, other widths, a friend\'s ID', () => {
  const vectors = {
    'Hangul filler U+3164': 'Bo\u3164b',
    'Hangul choseong filler U+115F': '\u115FBob',
    'Hangul jungseong filler U+1160': 'B\u1160ob',
    'half-width Hangul filler U+FFA0': 'Bob\uFFA0',
    'Braille blank U+2800': '\u2800Bob\u2800',
    'combining grapheme joiner U+034F': 'Bo\u034Fb',
    'tag characters': 'Bob\u{E0041}\u{E0042}',
    'a stack of combining marks': `B${'\u0308'.repeat(40)}ob`,
    'Cyrillic В and о': '\u0412\u043Eb',
    'Greek capitals': '\u0392\u039F\u0392',
    'full-width letters': '\uFF22\uFF4F\uFF42',
    'mathematical bold letters': '\u{1D401}\u{1D428}\u{1D41B}',
    'digit zero for o': 'B0b',
    'other case and spaces': ' b O b ',
    'a light check mark U+1F5F8': 'Bob \u{1F5F8}',
  };
  for (const [what, name] of Object.entries(vectors)) {
    assert.equal(nameSkeleton(name), nameSkeleton('Bob'), `${what}: ${JSON.stringify(name)} reads as "Bob"`);
    assert.deepEqual(withStrangerNamed(name).clashes, [BOB], `${what}: the clash is flagged`);
  }
  // Different names stay different.
  assert.notEqual(nameSkeleton('Bob'), nameSkeleton('Rob'));
  assert.deepEqual(withStrangerNamed('Bobby').clashes, []);
  // A key named with a friend's ID (in any case, within other words) clashes with that friend.
  assert.deepEqual(withStrangerNamed(`Mum ${BOB}`).clashes, [BOB]);
  assert.deepEqual(withStrangerNamed(`mum ${BOB.toLowerCase()}`).clashes, [BOB]);
  // A nickname given to Bob counts, and a nickname reading like another one is refused.
  const { state } = withStrangerNamed('Dad');
  const dad = step(state, { type: 'nicknameSet', id: BOB, nickname: 'Dad' }).state;
  assert.deepEqual(nameClashes(dad, 'E0E0E0'), [BOB]);
  assert.deepEqual(nicknameProblem(dad, 'E0E0E0', 'D\u0430d').problem, 'taken'); // Cyrillic а
  // Request cards use the same check, before the key is anyone's friend.
  assert.deepEqual(friendsNamedLike(state, keyName('\u0412\u043Eb'), CAROL), [BOB]);
  assert.deepEqual(friendsNamedLike(state, keyName('Carol'), CAROL), []);
});

test('what a name shows: no invisible fillers, at most MAX_MARKS_PER_BASE marks on a character, no check-mark look-alikes, never an ID', () => {
  assert.equal(cleanName('Bo\u3164b\u115F\u1160\uFFA0\u2800', KEY_NAME_MAX), 'Bob');
  assert.equal(keyName('\u3164\u3164\u2800'), '', 'a name of fillers alone is no name: the ID is shown');
  const stacked = cleanName(`B${'\u0308'.repeat(40)}ob`, KEY_NAME_MAX);
  assert.equal(stacked, `B${'\u0308'.repeat(MAX_MARKS_PER_BASE)}ob`);
  assert.equal(cleanName('\u0308\u0308Bob', KEY_NAME_MAX), 'Bob', 'marks on nothing are dropped');
  // Ordinary writing keeps its marks: a Devanagari syllable, Vietnamese.
  assert.equal(cleanName('\u0915\u093C\u093F\u0901', KEY_NAME_MAX), '\u0915\u093C\u093F\u0901');
  assert.equal(cleanName('Nguy\u1EC5n', KEY_NAME_MAX), 'Nguy\u1EC5n');
  for (const mark of ['\u{1F5F8}', '\u{1F5F9}', '\u221A', '\u2713', '\u2705', '\u2611', '\u2612', '\u237B', '\u{10102}', '\u2709']) {
    assert.equal(cleanName(`Bob ${mark} verified`, KEY_NAME_MAX), 'Bob verified', `U+${mark.codePointAt(0).toString(16)} is stripped`);
  }
  // A name that reads as an ID would pass for one beside the real ID: not shown.
  for (const name of ['K7Q2ZD', 'K7Q 2ZD', 'K7Q-2ZO', '\u039A7Q2ZD']) {
    assert.equal(readsAsId(name), true, name);
    assert.equal(keyName(name), '', name);
    assert.deepEqual(friendLabel({ id: BOB, userId: name, nickname: '' }), { text: BOB, kind: 'id' });
  }
  for (const name of ['Alexis', 'Bob', 'K7Q2ZDX', 'Mum K7Q2ZD']) assert.equal(readsAsId(name), false, name);
});

test('"name reused" compares names as shown: an invisible character or a look-alike letter does not make a new name', () => {
  const state = befriend(online(), BOB, BOB_KEY);
  for (const name of ['Bob', 'Bo\u200Bb', 'Bo\u3164b', '\u0412\u043Eb', 'BOB']) {
    assert.equal(assessKey(state, 'E0E0E0', 'E'.repeat(40), name), 'name_reused', JSON.stringify(name));
  }
  assert.equal(assessKey(state, 'E0E0E0', 'E'.repeat(40), 'Eve'), 'new');
  // The default name, and a name that reads as an ID, say nothing.
  const nameless = befriend(online(), BOB, keyOf('SecChat user', 'B'));
  assert.equal(assessKey(nameless, 'E0E0E0', 'E'.repeat(40), 'SecChat user'), 'new');
});

test('each hand-out of the link (copy, share, QR code) takes its own secret; each proves one request; at most INVITE_SECRETS_KEPT are kept', async () => {
  let { state } = step(online(), { type: 'inviteSecretCreated', secret: SECRET });
  const taken = [];
  for (let i = 0; i < 2; i += 1) {
    const shown = state.inviteSecrets.at(-1);
    taken.push(shown);
    ({ state } = step(state, { type: 'inviteLinkTaken', secret: shown, fresh: newInviteSecret() }));
    assert.notEqual(state.inviteSecrets.at(-1), shown, 'the link shown moves on to a new secret');
  }
  assert.notEqual(taken[0], taken[1]);
  assert.deepEqual(state.inviteSecrets.slice(0, 2), taken);
  // Taking a secret that is not the one shown (a copy event after the copy button) changes nothing.
  assert.equal(step(state, { type: 'inviteLinkTaken', secret: taken[0], fresh: newInviteSecret() }).state, state);

  // Bob used the first link, Carol the second: each request proves its own secret, each acceptance verifies one.
  const proofs = [
    [BOB, BOB_KEY, await inviteProof(taken[0], BOB_KEY.fingerprint, OWN_FP)],
    [CAROL, CAROL_KEY, await inviteProof(taken[1], CAROL_KEY.fingerprint, OWN_FP)],
  ];
  for (const [id, key, proof] of proofs) {
    const arrived = step(state, frame({ type: 'FRIEND_REQUEST', from: id, public_key: key.publicArmored, invite: proof }));
    const [check] = effectsOf(arrived, 'checkKey');
    const viaInvite = await matchInviteProof(proof, check.inviteSecrets, key.fingerprint, check.ownFingerprint);
    ({ state } = step(arrived.state, keyChecked(check, key, { viaInvite })));
  }
  assert.equal(inviteStatus(state, state.incomingRequests.get(BOB)), 'proved');
  assert.equal(inviteStatus(state, state.incomingRequests.get(CAROL)), 'proved');
  const shownBefore = state.inviteSecrets.at(-1);
  for (const [id, key] of proofs) {
    const accepted = step(state, { type: 'requestAccepted', id, key, viaInvite: state.incomingRequests.get(id).viaInvite });
    assert.equal(accepted.state.friends.get(id).trust, 'verified');
    assert.deepEqual(effectsOf(accepted, 'inviteSecretNeeded'), [], 'the link shown was not the one used');
    ({ state } = accepted);
  }
  assert.deepEqual(state.inviteSecrets, [shownBefore]);

  // Many hand-outs: the oldest ones are forgotten, the link shown is always a fresh one.
  for (let i = 0; i < INVITE_SECRETS_KEPT + 2; i += 1) {
    ({ state } = step(state, { type: 'inviteLinkTaken', secret: state.inviteSecrets.at(-1), fresh: newInviteSecret() }));
  }
  assert.equal(state.inviteSecrets.length, INVITE_SECRETS_KEPT);
  // The link shown used by a request (someone read it off the screen): the link gets a new one.
  const shown = state.inviteSecrets.at(-1);
  const arrived = step(state, frame({ type: 'FRIEND_REQUEST', from: DAN, public_key: DAN_KEY.publicArmored, invite: 'P'.repeat(43) }));
  const card = step(arrived.state, keyChecked(effectsOf(arrived, 'checkKey')[0], DAN_KEY, { viaInvite: shown }));
  const accepted = step(card.state, { type: 'requestAccepted', id: DAN, key: DAN_KEY, viaInvite: shown });
  assert.deepEqual(effectsOf(accepted, 'inviteSecretNeeded'), [{ type: 'inviteSecretNeeded' }]);
});

test('two pending requests proving the same secret: the link reached two people, so both are marked and neither is verified', () => {
  let { state } = step(online(), { type: 'inviteSecretCreated', secret: SECRET });
  const request = (s, id, key) => {
    const arrived = step(s, frame({ type: 'FRIEND_REQUEST', from: id, public_key: key.publicArmored, invite: 'P'.repeat(43) }));
    return step(arrived.state, keyChecked(effectsOf(arrived, 'checkKey')[0], key, { viaInvite: SECRET }));
  };
  ({ state } = request(state, BOB, BOB_KEY));
  assert.equal(inviteStatus(state, state.incomingRequests.get(BOB)), 'proved');
  const second = request(state, CAROL, CAROL_KEY);
  ({ state } = second);
  assert.equal(inviteStatus(state, state.incomingRequests.get(BOB)), 'shared');
  assert.equal(inviteStatus(state, state.incomingRequests.get(CAROL)), 'shared');
  assert.deepEqual(state.inviteSecrets, [], 'the secret is used up');
  assert.deepEqual(effectsOf(second, 'inviteSecretNeeded'), [{ type: 'inviteSecretNeeded' }], 'it was the link shown');
  // A third proof of it counts for nothing; accepting either of the two verifies nothing.
  ({ state } = request(state, DAN, DAN_KEY));
  assert.equal(inviteStatus(state, state.incomingRequests.get(DAN)), 'none');
  for (const [id, key] of [[BOB, BOB_KEY], [CAROL, CAROL_KEY]]) {
    ({ state } = step(state, { type: 'requestAccepted', id, key, viaInvite: SECRET }));
    assert.equal(state.friends.get(id).trust, 'unverified');
  }
  // A proof of a secret forgotten since (pushed out by newer ones) is 'used'.
  ({ state } = step(online(), { type: 'inviteSecretCreated', secret: SECRET }));
  ({ state } = request(state, BOB, BOB_KEY));
  for (let i = 0; i < INVITE_SECRETS_KEPT; i += 1) ({ state } = step(state, { type: 'inviteSecretCreated', secret: newInviteSecret() }));
  assert.equal(inviteStatus(state, state.incomingRequests.get(BOB)), 'used');
});
