// Invite links: `#id=K7Q2ZD&fp=<40 hex>`. The fragment never reaches the server, so the link can carry
// the fingerprint that proves the key a friend request brings back.
import { normalizeFingerprint, normalizeId } from './ids.js';

/** The link a friend opens to send us a request and verify our key in one step. */
export function inviteLink(location, id, fingerprint) {
  const base = `${location.origin}${location.pathname}`;
  return `${base}#id=${encodeURIComponent(id)}&fp=${encodeURIComponent(fingerprint)}`;
}

/**
 * Reads an invite out of a URL fragment ("#id=..&fp=.."). Returns {id, fingerprint} or null when the
 * fragment is not a complete, well-formed invite.
 */
export function parseInvite(hash) {
  if (typeof hash !== 'string' || hash.length < 2) return null;
  const params = new URLSearchParams(hash.replace(/^#/, ''));
  const id = normalizeId(params.get('id') || '');
  const fingerprint = normalizeFingerprint(params.get('fp') || '');
  return id && fingerprint ? { id, fingerprint } : null;
}
