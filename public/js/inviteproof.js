// The one-time secret in an invite link (`k=`) and the proof a friend request carries that its sender opened
// the link (PROTOCOL.md §9 "invite"). The fragment never reaches the server, so a server cannot make a proof:
// proof = base64url(HMAC-SHA256(key = secret, "secchat-invite-v1\n" + requester fingerprint + "\n" + inviter
// fingerprint)). It binds the requester's key: a server that swaps the key in the request makes the proof
// fail, so the inviter sees "not through your link". A server can strip the proof (then the request merely
// does not say it came through the link); it cannot add one. Web Crypto only, so it runs in pages and Node.

const SECRET_BYTES = 16;
const SECRET_PATTERN = /^[A-Za-z0-9_-]{22}$/; // 16 bytes, base64url without padding
/** What the server forwards (PROTOCOL.md §9): 1–64 base64url characters. */
const PROOF_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const CONTEXT = 'secchat-invite-v1';

export function toBase64url(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function fromBase64url(text) {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** A fresh link secret: 16 random bytes. */
export function newInviteSecret() {
  return toBase64url(crypto.getRandomValues(new Uint8Array(SECRET_BYTES)));
}

export function isInviteSecret(value) {
  return typeof value === 'string' && SECRET_PATTERN.test(value);
}

export function isInviteProof(value) {
  return typeof value === 'string' && PROOF_PATTERN.test(value);
}

/** The proof that the holder of `requesterFingerprint`'s key opened the link with `secret` of `inviterFingerprint`. */
export async function inviteProof(secret, requesterFingerprint, inviterFingerprint) {
  const key = await crypto.subtle.importKey('raw', fromBase64url(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const message = new TextEncoder().encode(`${CONTEXT}\n${requesterFingerprint}\n${inviterFingerprint}`);
  return toBase64url(new Uint8Array(await crypto.subtle.sign('HMAC', key, message)));
}

/**
 * Which of our outstanding `secrets` `proof` was made with, for a request whose key is `requesterFingerprint`
 * to us (`ownFingerprint`); null when none (no proof, a malformed one, a wrong or stripped one).
 */
export async function matchInviteProof(proof, secrets, requesterFingerprint, ownFingerprint) {
  if (!isInviteProof(proof) || !requesterFingerprint || !ownFingerprint) return null;
  for (const secret of secrets) {
    if (!isInviteSecret(secret)) continue;
    if (await inviteProof(secret, requesterFingerprint, ownFingerprint) === proof) return secret;
  }
  return null;
}
