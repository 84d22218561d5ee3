// Invite links: `#id=K7Q2ZD&fp=<40 hex>&k=<one-time secret>`. The fragment never reaches the server, so the
// link can carry the fingerprint that proves the key a friend request brings back, and a secret the request
// proves knowledge of (inviteproof.js), so the inviter learns the request came through the link.
import { normalizeFingerprint, normalizeId } from './ids.js';
import { isInviteSecret } from './inviteproof.js';

/** The link a friend opens to send us a request and verify our key in one step. */
export function inviteLink(location, id, fingerprint, secret) {
  const base = `${location.origin}${location.pathname}`;
  const link = `${base}#id=${encodeURIComponent(id)}&fp=${encodeURIComponent(fingerprint)}`;
  return isInviteSecret(secret) ? `${link}&k=${secret}` : link;
}

/**
 * Reads an invite out of a URL fragment ("#id=..&fp=..&k=.."). Returns {id, fingerprint, secret} (secret null
 * when the link has none or a malformed one: the fingerprint still counts) or null when the fragment is not
 * a complete, well-formed invite.
 */
export function parseInvite(hash) {
  if (typeof hash !== 'string' || hash.length < 2) return null;
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const id = normalizeId(params.get('id') || '');
  const fingerprint = normalizeFingerprint(params.get('fp') || '');
  const secret = params.get('k');
  return id && fingerprint ? { id, fingerprint, secret: isInviteSecret(secret) ? secret : null } : null;
}
