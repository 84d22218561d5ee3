// Session IDs and fingerprints as users type them and as the protocol (PROTOCOL.md §3, §6) spells them.

const ID_PATTERN = /^[0-9A-HJKMNP-TV-Z]{6}$/;
const FINGERPRINT_PATTERN = /^[0-9A-F]{40}$/;

/**
 * Normalizes an ID the way the server does: trim ASCII white space, drop `-` (and, for users who type
 * "K7Q 2ZD", inner spaces), upper-case ASCII letters, read O as 0 and I/L as 1.
 * Returns the 6-character ID, or null when it is not one.
 */
export function normalizeId(input) {
  if (typeof input !== 'string') return null;
  // Only ASCII is accepted: anything else would be `bad_id` on the server too.
  if (/[^\x20-\x7e\t\n\r\f\v]/.test(input)) return null;
  const compact = input.replace(/[\s-]/g, '').toUpperCase().replace(/O/g, '0').replace(/[IL]/g, '1');
  return ID_PATTERN.test(compact) ? compact : null;
}

/** True for a 6-character ID already in canonical form. */
export function isCanonicalId(value) {
  return typeof value === 'string' && ID_PATTERN.test(value);
}

/** Upper-case 40-hex fingerprint from any spacing/case, or null. */
export function normalizeFingerprint(input) {
  if (typeof input !== 'string') return null;
  const compact = input.replace(/[\s:]/g, '').toUpperCase();
  return FINGERPRINT_PATTERN.test(compact) ? compact : null;
}

/** "ABCD EF01 ..." — 4-hex blocks, the way people read fingerprints aloud. */
export function groupFingerprint(fingerprint) {
  return (fingerprint.match(/.{1,4}/g) || []).join(' ');
}
