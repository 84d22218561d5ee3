// Opening a message that came to a group's handles, in two crypto-worker jobs: the payload is decrypted
// (cryptoworker `openGroup`: no key is read), the one member whose key can sign with its signatures' key IDs
// is picked among the keys the group holds (groupmessages.js messageSigner), and only that member's key is
// read and checked against it (cryptoworker `verifyGroup`). So a message, however often a server replays it,
// costs at most one key read, and none while that key is in the worker's cache; the members' keys are not
// copied to the worker for it.
import { messageSigner } from './groupmessages.js';

/**
 * `payload` (armored) against `keys` (a group's messages.keys). Resolves like keys.openGroupPayload did for a
 * whole member list: {ok:true, text, signer, recipients} when it decrypts and every signature is by one held
 * key, verified; else {ok:false, problem ('undecryptable' | 'no_member_signature' | 'bad_signature'),
 * recipients?}. Rejects with the worker's CryptoError (e.g. `too_slow`).
 */
export async function openGroupMessage(pgp, payload, keys) {
  const opened = await pgp.openGroup(payload);
  if (!opened.ok) return opened;
  const { recipients } = opened;
  const signer = messageSigner(keys, opened.signerKeyIds);
  if (!signer) return { ok: false, problem: 'no_member_signature', recipients };
  const checked = await pgp.verifyGroup(payload, opened.sessionKeys, signer);
  if (!checked.ok) {
    // Decrypted once already: a second failure to decrypt is the signature step's, not a message for someone else.
    return { ok: false, problem: checked.problem === 'undecryptable' ? 'bad_signature' : checked.problem, recipients };
  }
  return { ok: true, text: opened.text, signer: signer.fingerprint, recipients };
}
