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

/** The key IDs of a key and its subkeys, as 16 lower-case hex digits (OpenPGP.js KeyID.toHex()). */
export function keyIdsOf(key) {
  return key.getKeyIDs().map((id) => id.toHex());
}

/**
 * The key IDs a key can sign with, as keyIdsOf writes them: its primary key's (whose self-signature
 * readFriendKey verified), and each subkey's that is bound by a signature of the primary allowing it to sign
 * and carrying an embedded primary-key binding signature (a back-signature) made by that subkey itself.
 *
 * Anyone can bind any key packet to their own primary as a subkey, another person's key included: for
 * encryption no back-signature is needed, and a signing binding without a valid one is a claim only. A
 * back-signature over (this primary, this subkey) can only be made with the subkey's secret, so a key ID is
 * here only if its owner chose to sign for this key. OpenPGP.js verifies a message signature only with a key
 * that getSigningKey accepts for it (a subkey: the binding valid at the signature's time allows signing and
 * carries a valid back-signature), so every ID it could verify a signature with is in this list. Checked
 * here without dates (a subkey that expired or was revoked still belongs to whoever holds its secret), so the
 * list does not change with time.
 */
export async function signingKeyIdsOf(key) {
  const ids = [key.getKeyID().toHex()];
  for (const subkey of key.subkeys) {
    if (await hasBackSignature(key, subkey)) ids.push(subkey.getKeyID().toHex());
  }
  return [...new Set(ids)];
}

/** Key algorithms that can make signatures (OpenPGP.js validateSigningKeyPacket). */
const SIGNING_ALGORITHMS = new Set([
  openpgp.enums.publicKey.rsaEncryptSign, openpgp.enums.publicKey.rsaSign, openpgp.enums.publicKey.dsa,
  openpgp.enums.publicKey.ecdsa, openpgp.enums.publicKey.eddsaLegacy, openpgp.enums.publicKey.ed25519,
  openpgp.enums.publicKey.ed448,
]);

async function hasBackSignature(key, subkey) {
  if (!SIGNING_ALGORITHMS.has(subkey.keyPacket.algorithm)) return false;
  const { enums } = openpgp;
  const data = { key: key.keyPacket, bind: subkey.keyPacket };
  for (const binding of subkey.bindingSignatures) {
    const embedded = binding.embeddedSignature;
    if (!embedded) continue;
    if (binding.keyFlags && (binding.keyFlags[0] & enums.keyFlags.signData) === 0) continue;
    try {
      // A date of null: checked as signatures, not as valid at some time.
      await binding.verify(key.keyPacket, enums.signature.subkeyBinding, data, null, false, openpgp.config);
      await embedded.verify(subkey.keyPacket, enums.signature.keyBinding, data, null, false, openpgp.config);
      return true;
    } catch {
      // not this binding: try the next one
    }
  }
  return false;
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
 * Decrypts a group payload, the first of its two steps (the second is verifyGroupPayload): who signed it is
 * told apart by its signatures' key IDs, so that only the one key that can have made them is read and
 * checked, never every key a group holds. Returns {ok:true, text, recipients, signerKeyIds, sessionKeys}:
 * `signerKeyIds` the issuer key ID of each of its signatures (unverified: a claim), `sessionKeys` what opens
 * it again in the second step without our private key; or {ok:false, problem: 'undecryptable', recipients?}.
 * `recipients` are the key IDs its session-key packets name (getEncryptionKeyIDs), so the caller can tell
 * whether it was also encrypted to someone outside the group.
 */
export async function openGroupPayload({ payload, privateKey }) {
  const config = { maxDecompressedMessageSize: MAX_DECOMPRESSED_BYTES };
  let message;
  try {
    message = await openpgp.readMessage({ armoredMessage: payload });
  } catch (error) {
    return { ok: false, problem: 'undecryptable', detail: error.message };
  }
  const recipients = message.getEncryptionKeyIDs().map((id) => id.toHex());
  try {
    const sessionKeys = await openpgp.decryptSessionKeys({ message, decryptionKeys: privateKey, config });
    const { data, signatures } = await openpgp.decrypt({ message, sessionKeys, expectSigned: false, config });
    return { ok: true, text: data, recipients, signerKeyIds: signatures.map((s) => s.keyID.toHex()), sessionKeys };
  } catch (error) {
    return { ok: false, problem: 'undecryptable', detail: error.message, recipients };
  }
}

/**
 * The second step of opening a group payload: whether every signature on it verifies with `key`, the one
 * key the caller found can have made them (the member whose signing key IDs they name). Only that key is
 * given to OpenPGP.js, which takes the first key it is given that holds a signature's key ID, and then
 * accepts the signature only when that key can sign with it (getSigningKey: the primary key, or a subkey
 * with a valid back-signature); so a signature counts as the member's only when the member's own key made
 * it. Returns {ok:true} or {ok:false, problem: 'bad_signature' | 'undecryptable'}.
 */
export async function verifyGroupPayload({ payload, sessionKeys, key }) {
  const config = { maxDecompressedMessageSize: MAX_DECOMPRESSED_BYTES };
  let signatures;
  try {
    const message = await openpgp.readMessage({ armoredMessage: payload });
    ({ signatures } = await openpgp.decrypt({ message, sessionKeys, verificationKeys: key, expectSigned: false, config }));
  } catch (error) {
    return { ok: false, problem: 'undecryptable', detail: error.message };
  }
  if (signatures.length === 0) return { ok: false, problem: 'bad_signature' };
  try {
    for (const s of signatures) await s.verified;
  } catch (error) {
    return { ok: false, problem: 'bad_signature', detail: error.message };
  }
  return { ok: true };
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
