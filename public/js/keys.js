// Everything OpenPGP: making and unlocking the user's key pair, reading friends' keys, and sealing /
// opening the §6 payloads. Nothing here touches the DOM or the network. Every key, the user's own included,
// passes keypolicy.js before OpenPGP.js reads it. The page uses this module for the user's own key (key
// screen); friends' keys and payloads are handled by the same functions inside the crypto worker.
import * as openpgp from '../vendor/openpgp.min.mjs';
import { MAX_PUBLIC_KEY_BYTES, byteCount, checkArmoredSize, checkKeyPackets } from './keypolicy.js';

/** Largest plaintext OpenPGP.js may inflate from one payload: a compressed bomb stops here. */
export const MAX_DECOMPRESSED_BYTES = 1 << 20;

const PRIVATE_BLOCK = /-----BEGIN PGP PRIVATE KEY BLOCK-----[\s\S]*?-----END PGP PRIVATE KEY BLOCK-----/;
const PUBLIC_BLOCK = /-----BEGIN PGP PUBLIC KEY BLOCK-----[\s\S]*?-----END PGP PUBLIC KEY BLOCK-----/;

/** A key problem the user can act on; `code` is stable for tests, `message` is shown as is. */
export class KeyError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'KeyError';
    this.code = code;
  }
}

/** Upper-case hex fingerprint of a key's primary key, the form §6 puts in `to`. */
export function fingerprintOf(key) {
  return key.getFingerprint().toUpperCase();
}

/**
 * The text of the key's primary user ID (e.g. "Alice <a@example.org>") among those its owner self-certified,
 * or '' when none is: chosen by the key's owner, never by whoever relays the key. A key is a list of packets
 * anyone can add to, and a user ID packet needs no signature to be read, so a relay (a lying server) can put
 * "Mum" in front of a real key's own user ID without changing its fingerprint: only a valid self-certification
 * says the owner chose a name. It verifies the key's self-certifications (no more than keypolicy.js lets a key
 * carry), so for friends' keys it runs where they are read: in the crypto worker, within a job's time budget.
 */
export async function userIdOf(key) {
  try {
    const { user } = await key.getPrimaryUser();
    return user.userID ? user.userID.userID : '';
  } catch {
    return '';
  }
}

/** The user ID a key gets when its owner left the name empty: shared by many keys, so it says nothing. */
export const DEFAULT_KEY_NAME = 'SecChat user';

/** New v4 Ed25519/Cv25519 pair, readable by GnuPG 2.2. The private key comes out passphrase-protected. */
export async function generateKeyPair({ name, passphrase }) {
  if (!passphrase) throw new KeyError('no_passphrase', 'Choose a passphrase: it protects your private key.');
  const { privateKey, publicKey } = await openpgp.generateKey({
    type: 'ecc',
    curve: 'curve25519Legacy',
    // OpenPGP.js refuses a v4 key without a user ID; the name is optional for the user, so fill one in.
    userIDs: [{ name: name && name.trim() ? name.trim() : DEFAULT_KEY_NAME }],
    passphrase,
    format: 'armored',
  });
  return { privateArmored: privateKey, publicArmored: publicKey };
}

/**
 * Unlocks the user's key pair and checks everything that would make chatting fail later.
 * `privateSource` / `publicSource`: armored text or the bytes of a binary export (public is optional:
 * it is derived from the private key when missing). Returns the identity used by the rest of the app;
 * throws KeyError with a message that says what is wrong.
 */
export async function unlockKeyPair({ privateSource, publicSource, passphrase }) {
  const encryptedKey = await readPrivate(privateSource);
  if (encryptedKey.keyPacket.version !== 4) {
    throw new KeyError('v6_key', 'This is a version 6 key. SecChat uses v4 keys so that GnuPG 2.2 and other clients can read them.');
  }
  const privateKey = await decryptPrivate(encryptedKey, passphrase);
  const publicKey = publicSource && !isEmpty(publicSource) ? await readPublic(publicSource) : privateKey.toPublic();
  if (publicKey.getFingerprint() !== privateKey.getFingerprint()) {
    throw new KeyError('mismatched_pair',
      `The public key (${fingerprintOf(publicKey)}) does not belong to this private key (${fingerprintOf(privateKey)}).`);
  }
  await checkUsable(privateKey, 'Your key');
  await checkCapability(() => privateKey.getSigningKey(), 'cannot_sign', 'Your key has no usable signing key, so your messages could not be signed.');
  await checkCapability(() => publicKey.getEncryptionKey(), 'cannot_encrypt', 'Your key has no usable encryption subkey, so friends could not write to you.');
  const publicArmored = publicKey.armor();
  const size = checkArmoredSize(publicArmored);
  if (!size.ok) {
    throw new KeyError('key_too_large',
      `Your public key is ${byteCount(size.bytes)}; SecChat sends keys of at most ${byteCount(MAX_PUBLIC_KEY_BYTES)}. Export it without other people's signatures (gpg --export-options export-minimal --armor --export YOU) and paste that as the public key.`);
  }
  return {
    publicArmored,
    // Stored only on "remember": always the passphrase-protected form.
    protectedArmored: await protectedArmor(encryptedKey, passphrase),
    fingerprint: fingerprintOf(privateKey),
    userId: await userIdOf(privateKey),
    // The unlocked key, for the crypto worker (which needs it again whenever it is restarted). Memory only.
    privateBinary: privateKey.write(),
  };
}

/**
 * A friend's key from a FRIEND_REQUEST / FRIEND_ACCEPT, checked to be usable for encrypting and verifying.
 * Size and algorithms are checked (keypolicy.js) before OpenPGP.js parses a single signature.
 */
export async function readFriendKey(armored) {
  const notAKey = () => new KeyError('not_a_key', 'The friend sent something that is not a readable OpenPGP public key.');
  if (typeof armored !== 'string') throw notAKey();
  const size = checkArmoredSize(armored);
  if (!size.ok) {
    throw new KeyError('key_too_large',
      `This key is ${byteCount(size.bytes)}; SecChat accepts keys of at most ${byteCount(MAX_PUBLIC_KEY_BYTES)}.`);
  }
  let bytes;
  try {
    bytes = (await openpgp.unarmor(armored)).data;
  } catch {
    throw notAKey();
  }
  enforcePolicy(bytes, 'This key');
  let key;
  try {
    key = await openpgp.readKey({ binaryKey: bytes });
  } catch {
    throw notAKey();
  }
  if (key.isPrivate()) throw new KeyError('not_a_key', 'The friend sent a private key instead of a public key.');
  await checkUsable(key, 'Their key');
  await checkCapability(() => key.getEncryptionKey(), 'cannot_encrypt', 'Their key has no usable encryption subkey.');
  return { key, fingerprint: fingerprintOf(key), userId: await userIdOf(key) };
}

/** Encrypts the envelope text to the friend's key and signs it with ours (§6). */
export async function sealPayload({ envelopeText, friendKey, privateKey }) {
  return openpgp.encrypt({
    message: await openpgp.createMessage({ text: envelopeText }),
    encryptionKeys: friendKey,
    signingKeys: privateKey,
  });
}

/**
 * Opens a payload from a friend. Returns {ok:true, text} when it decrypts and carries a valid signature by
 * the friend's pinned key and nothing else; otherwise {ok:false, problem, text?}: `bad_signature` still
 * returns the decrypted text (for a deliberate "show anyway"), `undecryptable` has none.
 */
export async function openPayload({ payload, privateKey, friendKey }) {
  const read = () => openpgp.readMessage({ armoredMessage: payload });
  const config = { maxDecompressedMessageSize: MAX_DECOMPRESSED_BYTES };
  try {
    const { data, signatures } = await openpgp.decrypt({
      message: await read(),
      decryptionKeys: privateKey,
      verificationKeys: friendKey,
      // OpenPGP.js 6.3.2 throws unless at least ONE signature verifies with friendKey; others may fail or be
      // by unknown keys. So every signature's issuer must also be the pinned key (below).
      expectSigned: true,
      config,
    });
    const friendKeyIds = new Set(friendKey.getKeyIDs().map((id) => id.toHex()));
    if (signatures.length === 0 || !signatures.every((s) => friendKeyIds.has(s.keyID.toHex()))) {
      return { ok: false, problem: 'bad_signature', text: data };
    }
    return { ok: true, text: data };
  } catch (verifiedError) {
    try {
      const { data } = await openpgp.decrypt({ message: await read(), decryptionKeys: privateKey, config });
      return { ok: false, problem: 'bad_signature', text: data, detail: verifiedError.message };
    } catch (error) {
      return { ok: false, problem: 'undecryptable', detail: error.message };
    }
  }
}

/**
 * Which member each key ID names: a Map of key ID → fingerprint, leaving out every ID that two members' keys
 * both carry. A key may carry any packet as a subkey, another member's primary key included (bound by its own
 * primary, no back-signature needed for an encryption subkey); OpenPGP.js verifies with the first key holding
 * the signature's ID, so such an ID names nobody: a signature made with it is no member's.
 */
export function signingKeyOwners(members) {
  const owners = new Map();
  const shared = new Set();
  for (const { fingerprint, keyIds } of members) {
    for (const id of keyIds) {
      if (owners.has(id) && owners.get(id) !== fingerprint) shared.add(id);
      owners.set(id, fingerprint);
    }
  }
  for (const id of shared) owners.delete(id);
  return owners;
}

/** The key IDs of a key and its subkeys, as 16 lower-case hex digits (OpenPGP.js KeyID.toHex()). */
export function keyIdsOf(key) {
  return key.getKeyIDs().map((id) => id.toHex());
}

/**
 * Encrypts the envelope text once to every key of `keys` (one session-key packet each) and signs it with ours:
 * a group message (PROTOCOL §6 "Groups", §11).
 */
export async function sealToMany({ envelopeText, keys, privateKey }) {
  return openpgp.encrypt({
    message: await openpgp.createMessage({ text: envelopeText }),
    encryptionKeys: keys,
    signingKeys: privateKey,
  });
}

/**
 * Opens a group payload. `members` ([{fingerprint, key}]) are the keys of the group's members as we hold them.
 * Returns {ok:true, text, signer, recipients} when it decrypts and carries signatures by exactly one member's
 * key, all valid; else {ok:false, problem ('undecryptable' | 'no_member_signature' | 'bad_signature'),
 * recipients?}. `recipients` are the key IDs its session-key packets name (getEncryptionKeyIDs), so the
 * caller can tell whether it was also encrypted to someone outside the group.
 */
export async function openGroupPayload({ payload, privateKey, members }) {
  const config = { maxDecompressedMessageSize: MAX_DECOMPRESSED_BYTES };
  let message;
  try {
    message = await openpgp.readMessage({ armoredMessage: payload });
  } catch (error) {
    return { ok: false, problem: 'undecryptable', detail: error.message };
  }
  const recipients = message.getEncryptionKeyIDs().map((id) => id.toHex());
  let data;
  let signatures;
  try {
    ({ data, signatures } = await openpgp.decrypt({
      message, decryptionKeys: privateKey, verificationKeys: members.map((m) => m.key), expectSigned: false, config,
    }));
  } catch (error) {
    return { ok: false, problem: 'undecryptable', detail: error.message, recipients };
  }
  const owners = signingKeyOwners(members.map((m) => ({ fingerprint: m.fingerprint, keyIds: keyIdsOf(m.key) })));
  const signers = new Set(signatures.map((s) => owners.get(s.keyID.toHex()) || null));
  if (signatures.length === 0 || signers.has(null) || signers.size !== 1) {
    return { ok: false, problem: 'no_member_signature', recipients };
  }
  try {
    for (const s of signatures) await s.verified;
  } catch {
    return { ok: false, problem: 'bad_signature', recipients };
  }
  return { ok: true, text: data, signer: [...signers][0], recipients };
}

function isEmpty(source) {
  return typeof source === 'string' ? source.trim() === '' : source.length === 0;
}

function isArmoredText(source) {
  return typeof source === 'string';
}

async function readPrivate(source) {
  if (!source || isEmpty(source)) throw new KeyError('no_private_key', 'Paste or upload your private key.');
  if (isArmoredText(source)) {
    const block = source.match(PRIVATE_BLOCK);
    if (!block) {
      if (PUBLIC_BLOCK.test(source)) {
        throw new KeyError('public_only',
          'This is a public key only. SecChat also needs your private key (gpg --armor --export-secret-keys YOU).');
      }
      throw new KeyError('not_a_key', 'That is not an OpenPGP private key (expected "-----BEGIN PGP PRIVATE KEY BLOCK-----").');
    }
    let bytes;
    try {
      bytes = (await openpgp.unarmor(block[0])).data;
    } catch (error) {
      throw new KeyError('not_a_key', `The private key block could not be read: ${error.message}`);
    }
    enforcePolicy(bytes, 'Your key');
    try {
      return await openpgp.readPrivateKey({ binaryKey: bytes });
    } catch (error) {
      throw new KeyError('not_a_key', `The private key block could not be read: ${error.message}`);
    }
  }
  enforcePolicy(source, 'Your key', 'That file is not an OpenPGP key.');
  try {
    return await openpgp.readPrivateKey({ binaryKey: source });
  } catch {
    const isPublic = await openpgp.readKey({ binaryKey: source }).then(() => true, () => false);
    if (isPublic) throw new KeyError('public_only', 'This file holds a public key only. SecChat also needs your private key.');
    throw new KeyError('not_a_key', 'That file is not an OpenPGP key.');
  }
}

async function readPublic(source) {
  const notAKey = () => new KeyError('not_a_key', 'The public key is not an OpenPGP key (expected "-----BEGIN PGP PUBLIC KEY BLOCK-----").');
  let bytes = source;
  if (isArmoredText(source)) {
    const block = source.match(PUBLIC_BLOCK) || source.match(PRIVATE_BLOCK);
    if (!block) throw notAKey();
    try {
      bytes = (await openpgp.unarmor(block[0])).data;
    } catch {
      throw notAKey();
    }
  }
  enforcePolicy(bytes, 'Your public key', notAKey().message);
  let key;
  try {
    key = await openpgp.readKey({ binaryKey: bytes });
  } catch {
    throw notAKey();
  }
  return key.isPrivate() ? key.toPublic() : key;
}

/**
 * Throws the policy's refusal (keypolicy.js) as a KeyError, with `notAKeyText` instead of the policy's own
 * words when the bytes are no key at all. Nothing is handed to OpenPGP.js before this passed.
 */
function enforcePolicy(bytes, who, notAKeyText) {
  const policy = checkKeyPackets(bytes, who);
  if (policy.ok) return;
  throw new KeyError(policy.code, policy.code === 'not_a_key' && notAKeyText ? notAKeyText : policy.message);
}

async function decryptPrivate(encryptedKey, passphrase) {
  if (encryptedKey.isDecrypted()) return encryptedKey;
  if (!passphrase) throw new KeyError('no_passphrase', 'Enter the passphrase of your private key.');
  try {
    return await openpgp.decryptKey({ privateKey: encryptedKey, passphrase });
  } catch (error) {
    if (/passphrase/i.test(error.message)) {
      throw new KeyError('wrong_passphrase', 'Wrong passphrase: the private key did not unlock.');
    }
    throw new KeyError('locked', `The private key could not be unlocked: ${error.message}`);
  }
}

/** Primary key not revoked, not expired, self-signature valid. */
async function checkUsable(key, who) {
  try {
    await key.verifyPrimaryKey();
  } catch (error) {
    if (/revoked/i.test(error.message)) throw new KeyError('revoked', `${who} has been revoked.`);
    if (/expired/i.test(error.message)) {
      const expiry = await key.getExpirationTime().catch(() => null);
      const when = expiry instanceof Date ? ` on ${expiry.toISOString().slice(0, 10)}` : '';
      throw new KeyError('expired', `${who} expired${when}.`);
    }
    throw new KeyError('invalid_key', `${who} is not valid: ${error.message}`);
  }
}

async function checkCapability(probe, code, message) {
  try {
    await probe();
  } catch {
    throw new KeyError(code, message);
  }
}

/** The armored private key as it may rest in storage: protected, re-protecting an unprotected import. */
async function protectedArmor(encryptedKey, passphrase) {
  if (!encryptedKey.isDecrypted()) return encryptedKey.armor();
  if (!passphrase) return null; // unprotected import without passphrase: never stored
  const reprotected = await openpgp.encryptKey({ privateKey: encryptedKey, passphrase });
  return reprotected.armor();
}
