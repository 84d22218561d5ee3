// What may rest in localStorage, stored only on the user's "remember on this device": the passphrase-protected
// armored private key, the public key, fingerprints the user verified and the notification setting (all
// public data). Never a decrypted key, a session token or a message. The contact book is stored by
// contactstore.js, encrypted to the user's key.

const KEY_STORE = 'secchat.key.v1';
const VERIFIED_STORE = 'secchat.verified.v1';
const SETTINGS_STORE = 'secchat.settings.v1';

function readJson(name) {
  try {
    const text = localStorage.getItem(name);
    return text ? JSON.parse(text) : null;
  } catch {
    return null; // storage disabled or corrupted: behave as if nothing was remembered
  }
}

function writeJson(name, value) {
  try {
    localStorage.setItem(name, JSON.stringify(value));
  } catch {
    // storage full or disabled: remembering is best effort
  }
}

export function loadRememberedKey() {
  const value = readJson(KEY_STORE);
  if (!value || typeof value.privateArmored !== 'string' || typeof value.fingerprint !== 'string') return null;
  return value;
}

/** Stores the protected private key; refuses anything that is not passphrase-protected armor. */
export function rememberKey(identity) {
  if (!identity.protectedArmored || !identity.protectedArmored.includes('BEGIN PGP PRIVATE KEY BLOCK')) return false;
  writeJson(KEY_STORE, {
    privateArmored: identity.protectedArmored,
    publicArmored: identity.publicArmored,
    fingerprint: identity.fingerprint,
    userId: identity.userId,
  });
  return true;
}

export function forgetRememberedData() {
  try {
    localStorage.removeItem(KEY_STORE);
    localStorage.removeItem(VERIFIED_STORE);
    localStorage.removeItem('secchat.contacts.v1'); // contactstore.js BOOK_STORE: the encrypted contact book
    localStorage.removeItem(SETTINGS_STORE);
  } catch {
    // nothing to forget
  }
}

export function loadVerifiedFingerprints() {
  const value = readJson(VERIFIED_STORE);
  return new Set(Array.isArray(value) ? value.filter((fp) => /^[0-9A-F]{40}$/.test(fp)) : []);
}

export function saveVerifiedFingerprints(fingerprints) {
  writeJson(VERIFIED_STORE, [...fingerprints]);
}

export function loadSettings() {
  const value = readJson(SETTINGS_STORE);
  return { notifications: Boolean(value && value.notifications) };
}

export function saveSettings(settings) {
  writeJson(SETTINGS_STORE, { notifications: Boolean(settings.notifications) });
}
