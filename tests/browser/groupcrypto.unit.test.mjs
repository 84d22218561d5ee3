// The crypto worker's group operations (keys.js) under Node with real OpenPGP.js keys: one message sealed to
// several keys opens for each of them, names its one signer among the members' keys and lists its
// recipients' key IDs; a message signed by a non-member, by two members, unsigned, or not decryptable is refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as openpgp from '../../public/vendor/openpgp.min.mjs';
import { keyIdsOf, openGroupPayload, readFriendKey, sealToMany } from '../../public/js/keys.js';

async function person(name) {
  const { privateKey } = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name }], format: 'object' });
  return { privateKey, publicKey: privateKey.toPublic(), fingerprint: privateKey.getFingerprint().toUpperCase() };
}

const [alice, bob, carol, eve] = await Promise.all(['Alice', 'Bob', 'Carol', 'Eve'].map(person));
const members = [alice, bob, carol].map((p) => ({ fingerprint: p.fingerprint, key: p.publicKey }));

test('sealed once to three keys: each member opens it, the signer and the recipients are named', async () => {
  const payload = await sealToMany({ envelopeText: '{"kind":"gtext"}', keys: members.map((m) => m.key), privateKey: alice.privateKey });
  for (const reader of [alice, bob, carol]) {
    const opened = await openGroupPayload({ payload, privateKey: reader.privateKey, members });
    assert.equal(opened.ok, true, JSON.stringify(opened));
    assert.equal(opened.text, '{"kind":"gtext"}');
    assert.equal(opened.signer, alice.fingerprint);
    const expected = [alice, bob, carol].map((p) => keyIdsOf(p.publicKey)[1]).sort();
    assert.deepEqual([...opened.recipients].sort(), expected, 'one session-key packet per member, for its encryption subkey');
  }
  const outsider = await openGroupPayload({ payload, privateKey: eve.privateKey, members });
  assert.equal(outsider.ok, false);
  assert.equal(outsider.problem, 'undecryptable');
});

test('signed by someone who is not a member, or by two members: refused with the recipients still listed', async () => {
  const byEve = await sealToMany({ envelopeText: 'x', keys: [bob.publicKey], privateKey: eve.privateKey });
  const opened = await openGroupPayload({ payload: byEve, privateKey: bob.privateKey, members });
  assert.equal(opened.problem, 'no_member_signature');
  assert.equal(opened.recipients.length, 1);
  const byTwo = await openpgp.encrypt({
    message: await openpgp.createMessage({ text: 'x' }), encryptionKeys: bob.publicKey, signingKeys: [alice.privateKey, carol.privateKey],
  });
  assert.equal((await openGroupPayload({ payload: byTwo, privateKey: bob.privateKey, members })).problem, 'no_member_signature');
  const unsigned = await openpgp.encrypt({ message: await openpgp.createMessage({ text: 'x' }), encryptionKeys: bob.publicKey });
  assert.equal((await openGroupPayload({ payload: unsigned, privateKey: bob.privateKey, members })).problem, 'no_member_signature');
});

test('a member whose key also carries another member\'s key packet cannot have that member\'s messages taken for its own', async () => {
  // Mallory binds Carol's primary key packet to her own key as an encryption subkey: no back-signature is
  // needed, so the key is accepted, and it carries Carol's key ID.
  const { PublicSubkeyPacket, SignaturePacket, enums } = openpgp;
  const mallory = await person('Mallory');
  const subkey = new PublicSubkeyPacket();
  subkey.read(carol.publicKey.keyPacket.write());
  const binding = new SignaturePacket();
  binding.signatureType = enums.signature.subkeyBinding;
  binding.publicKeyAlgorithm = mallory.privateKey.keyPacket.algorithm;
  binding.hashAlgorithm = enums.hash.sha256;
  binding.keyFlags = [enums.keyFlags.encryptCommunication | enums.keyFlags.encryptStorage];
  binding.issuerKeyID = mallory.privateKey.getKeyID();
  binding.issuerFingerprint = mallory.privateKey.keyPacket.getFingerprintBytes();
  binding.created = new Date();
  await binding.sign(mallory.privateKey.keyPacket, { key: mallory.privateKey.keyPacket, bind: subkey }, new Date(), false, openpgp.config);
  const packets = mallory.publicKey.toPacketList();
  packets.push(subkey);
  packets.push(binding);
  const crafted = await readFriendKey(new openpgp.PublicKey(packets).armor());
  assert.ok(keyIdsOf(crafted.key).includes(carol.publicKey.getKeyID().toHex()), 'the crafted key carries Carol\'s key ID');
  const payload = await sealToMany({ envelopeText: 'from Carol', keys: [bob.publicKey], privateKey: carol.privateKey });
  const entry = (p, key = p.publicKey) => ({ fingerprint: p.fingerprint, key });
  for (const order of [[entry(carol), entry(mallory, crafted.key)], [entry(mallory, crafted.key), entry(carol)]]) {
    const opened = await openGroupPayload({ payload, privateKey: bob.privateKey, members: [entry(alice), ...order] });
    assert.equal(opened.ok, false, 'never shown as Mallory\'s');
    assert.equal(opened.problem, 'no_member_signature');
  }
  // Without the crafted key, Carol's message is hers.
  const honest = await openGroupPayload({ payload, privateKey: bob.privateKey, members });
  assert.equal(honest.signer, carol.fingerprint);
});
