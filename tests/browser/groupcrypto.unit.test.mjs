// The crypto worker's group operations under Node with real OpenPGP.js keys, driven through the worker module's
// own message protocol (cryptoworker.js, with `self` stubbed) and the page's side (groupopen.js): one message
// sealed to several keys opens for each of them, names its one signer among the members' keys and lists its
// recipients' key IDs; a message signed by a non-member, by two members, unsigned, or not decryptable is
// refused. Keys crafted to carry another member's key packets are read as what they can sign with, so they can
// neither take that member's messages nor silence the member, in whichever order the keys arrive; a key that
// really can sign with another member's key ID is refused. Opening a message reads at most one key, and a
// replayed message none.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as openpgp from '../../public/vendor/openpgp.min.mjs';
import { buildGroupList, joinGroup, readVersion } from '../../public/js/grouplist.js';
import {
  buildGroupKeys, emptyGroupMessages, memberKeyStatus, messageSigner, parseGroupEnvelope, takeGroupKeys, withOwnKey,
} from '../../public/js/groupmessages.js';
import { openGroupMessage } from '../../public/js/groupopen.js';
import { keyIdsOf, sealToMany } from '../../public/js/keys.js';
import { toBase64Url } from '../../public/js/rendezvous.js';

// --- the worker module, in this thread ---

const replies = new Map();
let nextId = 1;
globalThis.self = {
  postMessage(message) {
    if (message.ready) return;
    replies.get(message.id)(message);
    replies.delete(message.id);
  },
};
const worker = await import('../../public/js/cryptoworker.js');

function run(op, args) {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    replies.set(id, (m) => (m.ok ? resolve(m.result) : reject(Object.assign(new Error(m.error.message), { code: m.error.code }))));
    globalThis.self.onmessage({ data: { id, op, args } });
  });
}

/** cryptoclient.js's methods, straight to the worker module; `verifyCalls` records what each second step is given. */
const verifyCalls = [];
const pgp = {
  readFriendKey: (armored) => run('readFriendKey', { armored }),
  sealMany: (envelopeText, armoredKeys) => run('sealMany', { envelopeText, armoredKeys }),
  openGroup: (payload) => run('openGroup', { payload }),
  verifyGroup: (payload, sessionKeys, { fingerprint, armored }) => {
    verifyCalls.push({ fingerprint, armored });
    return run('verifyGroup', { payload, sessionKeys, fingerprint, armored });
  },
};

/** The worker opens what comes next as `reader`. */
const readAs = (reader) => run('init', { privateBinary: reader.privateKey.write() });

// --- people and keys ---

async function person(name, { signingSubkey = false } = {}) {
  const { privateKey } = await openpgp.generateKey({
    type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name }], format: 'object',
    ...(signingSubkey ? { subkeys: [{}, { sign: true }] } : {}),
  });
  const publicKey = privateKey.toPublic();
  return { name, privateKey, publicKey, armored: publicKey.armor(), fingerprint: publicKey.getFingerprint().toUpperCase() };
}

// Carol signs with a signing subkey (bound with its back-signature), so a forger has one to copy.
const [alice, bob, mallory, dave] = await Promise.all(['Alice', 'Bob', 'Mallory', 'Dave'].map((n) => person(n)));
const carol = await person('Carol', { signingSubkey: true });
const carolSigning = carol.publicKey.subkeys.find((s) => s.bindingSignatures[0].embeddedSignature);
assert.ok(carolSigning, 'Carol has a signing subkey with a back-signature');

const { PublicSubkeyPacket, SignaturePacket, enums } = openpgp;
const signFlags = [enums.keyFlags.signData];
const encryptFlags = [enums.keyFlags.encryptCommunication | enums.keyFlags.encryptStorage];

/** A subkey binding signature by `owner`'s primary for `subkey`, with `flags` and `embedded` as given. */
async function binding(owner, subkey, { flags, embedded = null }) {
  const sig = new SignaturePacket();
  sig.signatureType = enums.signature.subkeyBinding;
  sig.publicKeyAlgorithm = owner.privateKey.keyPacket.algorithm;
  sig.hashAlgorithm = enums.hash.sha256;
  sig.keyFlags = flags;
  sig.embeddedSignature = embedded;
  sig.created = new Date();
  await sig.sign(owner.privateKey.keyPacket, { key: owner.privateKey.keyPacket, bind: subkey }, new Date(), false, openpgp.config);
  return sig;
}

/** A primary-key binding (back-)signature over (owner's primary, subkey) made with `signer`'s secret key packet. */
async function backSignature(owner, subkey, signerPacket) {
  const sig = new SignaturePacket();
  sig.signatureType = enums.signature.keyBinding;
  sig.publicKeyAlgorithm = signerPacket.algorithm;
  sig.hashAlgorithm = enums.hash.sha256;
  sig.created = new Date();
  await sig.sign(signerPacket, { key: owner.privateKey.keyPacket, bind: subkey }, new Date(), false, openpgp.config);
  return sig;
}

/** `owner`'s public key with each of `extra` ({packet, flags, embedded}) bound to its primary as a subkey. */
async function withSubkeys(owner, extra) {
  const packets = owner.publicKey.toPacketList();
  for (const { packet, flags, embedded } of extra) {
    const subkey = new PublicSubkeyPacket();
    subkey.read(packet.write());
    packets.push(subkey);
    packets.push(await binding(owner, subkey, { flags, embedded: embedded ? await embedded(subkey) : null }));
  }
  return new openpgp.PublicKey(packets).armor();
}

/**
 * Mallory's key, carrying every key packet of Carol's: her primary as a signing subkey with a back-signature
 * Mallory made herself, her signing subkey with the back-signature Carol made for her own key copied in, and
 * her encryption subkey as an encryption subkey (which needs none). Mallory can sign none of them.
 */
const forged = await withSubkeys(mallory, [
  { packet: carol.publicKey.keyPacket, flags: signFlags, embedded: (subkey) => backSignature(mallory, subkey, mallory.privateKey.keyPacket) },
  { packet: carolSigning.keyPacket, flags: signFlags, embedded: async () => carolSigning.bindingSignatures[0].embeddedSignature },
  ...carol.publicKey.subkeys.filter((s) => s !== carolSigning).map((s) => ({ packet: s.keyPacket, flags: encryptFlags })),
]);
const carolIds = keyIdsOf(carol.publicKey);

// --- a group: Alice (admin), Bob (reading), Carol, Mallory, Dave ---

const GID = toBase64Url(new Uint8Array(16).fill(1));
const NOW = Date.UTC(2026, 0, 1, 12);
const member = (p, admin = false) => ({ fp: p.fingerprint, name: p.name, ...(admin ? { admin: true, since: 1 } : {}) });
const v1 = (await readVersion(buildGroupList({
  gid: GID, ver: 1, ts: NOW, name: 'Family', secret: toBase64Url(new Uint8Array(32).fill(2)),
  members: [member(alice, true), member(bob), member(carol), member(mallory), member(dave)],
}))).version;
const list = joinGroup(v1, alice.fingerprint, { me: bob.fingerprint }).state;
const bobsKeys = withOwnKey(emptyGroupMessages(), bob.fingerprint, bob.armored, await pgp.readFriendKey(bob.armored));

/** `messages` after a `gkeys` from Alice with `armored`, each read by the crypto worker. */
async function gkeys(messages, armored) {
  const [text] = buildGroupKeys({ gid: GID, ver: 1, ts: NOW, keys: armored });
  const read = [];
  for (const a of armored) read.push(await pgp.readFriendKey(a).catch((e) => ({ error: e.code })));
  return takeGroupKeys(list, messages, { envelope: parseGroupEnvelope(text).envelope, signer: alice.fingerprint, read });
}

const sealed = (from, text, to = [bob]) => sealToMany({ envelopeText: text, keys: to.map((p) => p.publicKey), privateKey: from.privateKey });

test('sealed once to three keys: each member opens it, the signer and the recipients are named', async () => {
  const members = [alice, bob, carol];
  let messages = withOwnKey(emptyGroupMessages(), alice.fingerprint, alice.armored, await pgp.readFriendKey(alice.armored));
  for (const p of [bob, carol]) messages = { ...messages, keys: { ...messages.keys, [p.fingerprint]: { armored: p.armored, ...(await pgp.readFriendKey(p.armored)), source: 'gkeys', changed: false } } };
  const payload = await sealed(alice, '{"kind":"gtext"}', members);
  for (const reader of members) {
    await readAs(reader);
    const opened = await openGroupMessage(pgp, payload, messages.keys);
    assert.equal(opened.ok, true, JSON.stringify(opened));
    assert.equal(opened.text, '{"kind":"gtext"}');
    assert.equal(opened.signer, alice.fingerprint);
    const expected = (await Promise.all(members.map(async (p) => (await p.publicKey.getEncryptionKey()).getKeyID().toHex()))).sort();
    assert.deepEqual([...opened.recipients].sort(), expected, 'one session-key packet per member, for its encryption subkey');
  }
  await readAs(dave);
  const outsider = await openGroupMessage(pgp, payload, messages.keys);
  assert.deepEqual([outsider.ok, outsider.problem], [false, 'undecryptable']);
});

test('signed by someone who is not a member, or by two members, or unsigned: refused with the recipients still listed', async () => {
  const { messages } = await gkeys(bobsKeys, [alice.armored, carol.armored]);
  await readAs(bob);
  const byDave = await openGroupMessage(pgp, await sealed(dave, 'x'), messages.keys);
  assert.deepEqual([byDave.problem, byDave.recipients.length], ['no_member_signature', 1]);
  const byTwo = await openpgp.encrypt({
    message: await openpgp.createMessage({ text: 'x' }), encryptionKeys: bob.publicKey, signingKeys: [alice.privateKey, carol.privateKey],
  });
  assert.equal((await openGroupMessage(pgp, byTwo, messages.keys)).problem, 'no_member_signature');
  const unsigned = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'x' }), encryptionKeys: bob.publicKey });
  assert.equal((await openGroupMessage(pgp, unsigned, messages.keys)).problem, 'no_member_signature');
  // The second step checks the signature against the key it is given, whoever the first step took it for.
  const byAlice = await sealed(alice, 'x');
  const { sessionKeys } = await pgp.openGroup(byAlice);
  assert.deepEqual(await pgp.verifyGroup(byAlice, sessionKeys, carol).then((r) => [r.ok, r.problem]), [false, 'bad_signature']);
  assert.deepEqual(await pgp.verifyGroup(byAlice, sessionKeys, { fingerprint: carol.fingerprint, armored: alice.armored }).then((r) => [r.ok, r.problem]),
    [false, 'no_member_signature'], 'a key held under another member\'s fingerprint names nobody');
});

test('a key carrying another member\'s key packets without their back-signatures can sign with none of them', async () => {
  const read = await pgp.readFriendKey(forged);
  assert.equal(read.fingerprint, mallory.fingerprint);
  for (const id of carolIds) assert.ok(read.keyIds.includes(id), 'the forged key carries each of Carol\'s key IDs');
  assert.deepEqual(read.signingKeyIds, [mallory.publicKey.getKeyID().toHex()], 'and can sign with its own primary key only');
  const genuine = await pgp.readFriendKey(carol.armored);
  assert.deepEqual([...genuine.signingKeyIds].sort(), [carol.publicKey.getKeyID().toHex(), carolSigning.getKeyID().toHex()].sort());
});

test('a forged key carrying a member\'s key packets that arrives first does not silence that member, and never speaks for them', async () => {
  await readAs(bob);
  for (const order of [[[forged], [carol.armored, alice.armored]], [[carol.armored, alice.armored], [forged]]]) {
    let messages = bobsKeys;
    const outcomes = [];
    for (const batch of order) {
      const step = await gkeys(messages, batch);
      messages = step.messages;
      outcomes.push(...step.result.outcomes.map((o) => [o.fingerprint, o.outcome]));
    }
    assert.deepEqual(outcomes.sort(), [[alice.fingerprint, 'taken'], [carol.fingerprint, 'taken'], [mallory.fingerprint, 'taken']].sort());
    assert.equal(memberKeyStatus(list, messages).get(carol.fingerprint), 'ok');
    // Carol's message (signed with her signing subkey, whose key ID Mallory's key also carries) is hers.
    const fromCarol = await openGroupMessage(pgp, await sealed(carol, 'from Carol'), messages.keys);
    assert.deepEqual([fromCarol.ok, fromCarol.signer, fromCarol.text], [true, carol.fingerprint, 'from Carol']);
    // One signed with Carol's primary key is hers too.
    const byPrimary = await openpgp.encrypt({
      message: await openpgp.createMessage({ text: 'primary' }), encryptionKeys: bob.publicKey, signingKeys: carol.privateKey,
      signingKeyIDs: carol.privateKey.getKeyID(),
    });
    assert.equal((await openGroupMessage(pgp, byPrimary, messages.keys)).signer, carol.fingerprint);
    // Mallory's own message is Mallory's; nothing she signs is taken for Carol's.
    const fromMallory = await openGroupMessage(pgp, await sealed(mallory, 'from Mallory'), messages.keys);
    assert.deepEqual([fromMallory.ok, fromMallory.signer], [true, mallory.fingerprint]);
    const carolEncryption = (await carol.publicKey.getEncryptionKey()).getKeyID().toHex();
    for (const id of carolIds) {
      assert.equal(messageSigner(messages.keys, [id])?.fingerprint ?? null, id === carolEncryption ? null : carol.fingerprint,
        'Carol\'s signing key IDs name Carol; her encryption subkey signs nothing');
    }
  }
});

test('a key that really can sign with a key ID another held key signs with is refused, and that ID names nobody', async () => {
  // Zed binds Yolanda's primary key as his signing subkey with a back-signature made by Yolanda's own secret key:
  // both keys can sign with that ID (a person using one signing key under two primaries), so it is ambiguous.
  const [yolanda, zed] = await Promise.all(['Yolanda', 'Zed'].map((n) => person(n)));
  const zedShared = await withSubkeys(zed, [
    { packet: yolanda.publicKey.keyPacket, flags: signFlags, embedded: (subkey) => backSignature(zed, subkey, yolanda.privateKey.keyPacket) },
  ]);
  const zedRead = await pgp.readFriendKey(zedShared);
  assert.ok(zedRead.signingKeyIds.includes(yolanda.publicKey.getKeyID().toHex()), 'Zed\'s key can sign with Yolanda\'s key ID');
  const v = (await readVersion(buildGroupList({
    gid: GID, ver: 1, ts: NOW, name: 'Y', secret: toBase64Url(new Uint8Array(32).fill(3)),
    members: [member(alice, true), member(bob), member(yolanda), member(zed)],
  }))).version;
  const yList = joinGroup(v, alice.fingerprint, { me: bob.fingerprint }).state;
  const take = async (messages, armored) => {
    const [text] = buildGroupKeys({ gid: GID, ver: 1, ts: NOW, keys: [armored] });
    return takeGroupKeys(yList, messages, { envelope: parseGroupEnvelope(text).envelope, signer: alice.fingerprint, read: [await pgp.readFriendKey(armored)] });
  };
  for (const [first, second, refused] of [[yolanda.armored, zedShared, zed], [zedShared, yolanda.armored, yolanda]]) {
    const one = await take(bobsKeys, first);
    const two = await take(one.messages, second);
    assert.deepEqual(two.result.outcomes.map((o) => [o.fingerprint, o.outcome]), [[refused.fingerprint, 'shared_key_id']]);
    assert.equal(two.messages.keys[refused.fingerprint], undefined);
  }
  // Held both anyway (e.g. one pinned as a contact): a signature with the shared ID names nobody.
  const both = { ...bobsKeys.keys };
  for (const [p, armored] of [[yolanda, yolanda.armored], [zed, zedShared]]) both[p.fingerprint] = { armored, ...(await pgp.readFriendKey(armored)), source: 'gkeys', changed: false };
  await readAs(bob);
  assert.equal((await openGroupMessage(pgp, await sealed(yolanda, 'y'), both)).problem, 'no_member_signature');
});

test('opening a message reads only its signer\'s key, once: a replay reads none, and a group\'s members stay cached', async () => {
  // 150 members' keys held (more than the worker's cache), as a group's history of versions may hold.
  const many = await Promise.all(Array.from({ length: 150 }, (_, i) => person(`M${i}`)));
  let keys = { ...bobsKeys.keys };
  for (const p of many) keys = { ...keys, [p.fingerprint]: { armored: p.armored, ...(await pgp.readFriendKey(p.armored)), source: 'gkeys', changed: false } };
  await readAs(bob);
  const payload = await sealed(many[7], 'hello');
  verifyCalls.length = 0;
  const before = worker.keyReadCount();
  const first = await openGroupMessage(pgp, payload, keys);
  assert.deepEqual([first.ok, first.signer], [true, many[7].fingerprint]);
  assert.equal(worker.keyReadCount() - before, 1, 'one key read: the signer\'s');
  assert.deepEqual(verifyCalls, [{ fingerprint: many[7].fingerprint, armored: many[7].armored }], 'only the signer\'s key is given to the worker');
  for (let i = 0; i < 20; i += 1) assert.equal((await openGroupMessage(pgp, payload, keys)).signer, many[7].fingerprint);
  assert.equal(worker.keyReadCount() - before, 1, 'twenty replays: no key read again');
  // A message from another member reads that member's key, once.
  assert.equal((await openGroupMessage(pgp, await sealed(many[8], 'hi'), keys)).signer, many[8].fingerprint);
  assert.equal(worker.keyReadCount() - before, 2);
  // Sealing to a group of 64 reads its keys once; their messages then read none, however they are interleaved.
  const group = many.slice(0, 64);
  await pgp.sealMany('{"kind":"gtext"}', group.map((p) => p.armored));
  const afterSeal = worker.keyReadCount();
  for (const p of [...group, ...group.slice().reverse()]) assert.equal((await openGroupMessage(pgp, await sealed(p, 'x'), keys)).signer, p.fingerprint);
  assert.equal(worker.keyReadCount(), afterSeal, 'a group\'s 64 members stay in the worker\'s cache');
  assert.ok(worker.FRIEND_KEY_CACHE >= 2 * 64);
});
