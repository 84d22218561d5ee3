// The crypto worker: reads friends' keys and opens and seals payloads off the page's main thread, so no
// key or message, however crafted, can freeze the page. cryptoclient.js runs one job at a time here and
// terminates the worker when a job overruns its time budget; nothing here needs to survive that.
//
// Messages in: {id, op, args}; out: {id, ok:true, result} or {id, ok:false, error:{code, message}}, and once,
// when this module (with OpenPGP.js) is loaded, {ready:true}: the page starts a job's time budget only then.
// Jobs run strictly one after the other, in the order they were posted (`init` before the jobs after it).
import {
  KeyError, fingerprintOf, keyIdsOf, openGroupPayload, openPayload, readFriendKey, sealPayload, sealToMany, signingKeyIdsOf,
  verifyGroupPayload,
} from './keys.js';
import * as openpgp from '../vendor/openpgp.min.mjs';

/**
 * Parsed keys kept, by armored text, least recently used dropped first: twice a group's largest member list
 * (64), so that sealing to a whole group (up to 64 keys in one job) never pushes out its own keys, and the keys
 * of the contacts and group members writing meanwhile stay too. A key is read once while it is in use, not
 * per message; opening a group message reads at most one key (its signer's), so even messages that miss the
 * cache every time cost one key read each.
 */
export const FRIEND_KEY_CACHE = 128;

let privateKey = null;
const friendKeys = new Map(); // armored -> key object, oldest first
let keysRead = 0;

/** How many keys this worker has read (parsed and checked) so far: what the cache saves, for tests. */
export function keyReadCount() {
  return keysRead;
}

/** A friend's key, read (and checked against the policy) once. */
async function friendKey(armored) {
  let key = friendKeys.get(armored);
  if (key) {
    friendKeys.delete(armored);
  } else {
    keysRead += 1;
    ({ key } = await readFriendKey(armored));
    if (friendKeys.size >= FRIEND_KEY_CACHE) friendKeys.delete(friendKeys.keys().next().value);
  }
  friendKeys.set(armored, key);
  return key;
}

function needIdentity() {
  if (!privateKey) throw new KeyError('no_identity', 'The crypto worker has no key to work with.');
  return privateKey;
}

const OPS = {
  /** The user's unlocked private key (binary, as keys.unlockKeyPair made it). */
  async init({ privateBinary }) {
    privateKey = await openpgp.readPrivateKey({ binaryKey: privateBinary });
    return true;
  },
  /** The key's fingerprint, user ID, every key ID it carries, and those it can sign with (keys.signingKeyIdsOf). */
  async readFriendKey({ armored }) {
    const { key, fingerprint, userId } = await readFriendKey(armored);
    return { fingerprint, userId, keyIds: keyIdsOf(key), signingKeyIds: await signingKeyIdsOf(key) };
  },
  /** A group message: encrypted once to every key of `armoredKeys`, signed by ours. */
  async sealMany({ envelopeText, armoredKeys }) {
    const keys = [];
    for (const armored of armoredKeys) keys.push(await friendKey(armored));
    return sealToMany({ envelopeText, keys, privateKey: needIdentity() });
  },
  /** A group payload decrypted, with its signatures' key IDs: keys.openGroupPayload's answer. No key is read. */
  async openGroup({ payload }) {
    return openGroupPayload({ payload, privateKey: needIdentity() });
  },
  /**
   * The second step: the payload's signatures checked against the one key (armored) held for the member
   * `fingerprint`, found by their key IDs; keys.verifyGroupPayload's answer.
   */
  async verifyGroup({ payload, sessionKeys, fingerprint, armored }) {
    const key = await friendKey(armored).catch(() => null);
    // A key held under another member's fingerprint names nobody.
    if (!key || fingerprintOf(key) !== fingerprint) return { ok: false, problem: 'no_member_signature', detail: 'the member\'s key could not be read' };
    return verifyGroupPayload({ payload, sessionKeys, key });
  },
  async seal({ envelopeText, friendArmored }) {
    return sealPayload({ envelopeText, friendKey: await friendKey(friendArmored), privateKey: needIdentity() });
  },
  async open({ payload, friendArmored }) {
    const friend = await friendKey(friendArmored).catch(() => null);
    if (!friend) return { ok: false, problem: 'undecryptable', detail: 'the pinned key could not be read' };
    return openPayload({ payload, privateKey: needIdentity(), friendKey: friend });
  },
};

let chain = Promise.resolve();

self.onmessage = (event) => {
  const { id, op, args } = event.data;
  chain = chain.then(async () => {
    try {
      if (!Object.hasOwn(OPS, op)) throw new KeyError('bad_op', `unknown crypto job ${op}`);
      self.postMessage({ id, ok: true, result: await OPS[op](args) });
    } catch (error) {
      self.postMessage({ id, ok: false, error: { code: error.code || 'failed', message: error.message || String(error) } });
    }
  });
};

// Loaded: messages posted meanwhile are delivered from now on, after this one.
self.postMessage({ ready: true });
