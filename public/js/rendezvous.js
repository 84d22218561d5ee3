// Rendezvous handles (PROTOCOL §10, client conventions in §6): each side of a contact draws a random 32-byte
// *listening secret* and gives it to the friend inside the encrypted, signed channel. A side listens on handles
// derived from its own secret and sends to handles derived from the friend's:
//
//   handle(secret, day) = base64url-unpadded(HMAC-SHA256(key = secret, "secchat-handle-v1\n" + "YYYY-MM-DD"))
//
// which is always 43 characters. Handles change every UTC day, so a handle seen today names nobody next month,
// and the server never learns a key, fingerprint or name from one. A client sends to the friend's handle of
// today and listens on its own of today; clocks disagree about the date near midnight, so within NEAR_MIDNIGHT_MS
// of it (either side) it also listens on the neighbouring day's. Not all day: one connection listening on two
// days' handles at once tells the server they belong together, which is what rotation is meant to hide. The one
// exception is a connection's first FETCH (contactsync.js), which also takes yesterday's handle for the mail
// that waited there while the user was away, and drops it right after. Pure (Web Crypto's HMAC is passed in or
// taken from globalThis), so it runs under Node too.

export const HANDLE_LABEL = 'secchat-handle-v1\n';
/** What a contact tag is the HMAC of (see contactTag). */
export const TAG_LABEL = 'secchat-contact-v1';
export const SECRET_BYTES = 32;
/** A handle and a secret are both the unpadded base64url of 32 bytes. */
const B64URL_32 = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
/** The server's bound per session (PROTOCOL §10) ... */
export const MAX_HANDLES_PER_SESSION = 4096;
/**
 * ... is shared between groups and contacts. A group makes a member listen on at most 9 handles
 * (grouphandles.js HANDLES_PER_GROUP: three days under the current secret and two previous ones), and a member
 * belongs to at most MAX_GROUPS groups, so groups take at most 576 handles ...
 */
export const MAX_GROUPS = 64;
export const GROUP_HANDLES_RESERVED = MAX_GROUPS * 9;
/**
 * ... and the rest over the most days listened on at once per contact (yesterday for the first FETCH, today,
 * and tomorrow near midnight) gives the contact book's bound: 1,173 contacts.
 */
export const MAX_DAYS_AT_ONCE = 3;
export const MAX_CONTACTS = Math.floor((MAX_HANDLES_PER_SESSION - GROUP_HANDLES_RESERVED) / MAX_DAYS_AT_ONCE);
/** How near UTC midnight (before or after) the neighbouring day's handle is listened on too. */
export const NEAR_MIDNIGHT_MS = 60 * 60 * 1000;
/** Handles per LISTEN / UNLISTEN frame (PROTOCOL §10: 1 to 1,024). */
export const LISTEN_BATCH = 1024;
const DAY_MS = 24 * 60 * 60 * 1000;

export function isSecret(value) {
  return typeof value === 'string' && B64URL_32.test(value);
}

export const isHandle = isSecret;

export function toBase64Url(bytes) {
  let binary = '';
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

export function fromBase64Url(text) {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** A fresh listening secret (32 bytes from the CSPRNG). */
export function newSecret(crypto = globalThis.crypto) {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(SECRET_BYTES)));
}

/** The UTC date `offsetDays` from `ms`, as "YYYY-MM-DD". */
export function utcDay(ms, offsetDays = 0) {
  return new Date(ms + offsetDays * DAY_MS).toISOString().slice(0, 10);
}

/** Milliseconds from `ms` to the next UTC midnight (at least 1). */
export function msUntilNextUtcDay(ms) {
  return Math.max(1, DAY_MS - (ms % DAY_MS));
}

/**
 * The days (offsets from today) whose handles are listened on at `now`: today; yesterday too within
 * NEAR_MIDNIGHT_MS after midnight or when `catchUp` (a connection's first FETCH); tomorrow too within
 * NEAR_MIDNIGHT_MS before the next midnight.
 */
export function daysListened(now, { catchUp = false } = {}) {
  const sinceMidnight = ((now % DAY_MS) + DAY_MS) % DAY_MS;
  const days = [];
  if (catchUp || sinceMidnight < NEAR_MIDNIGHT_MS) days.push(-1);
  days.push(0);
  if (DAY_MS - sinceMidnight <= NEAR_MIDNIGHT_MS) days.push(1);
  return days;
}

/** Milliseconds from `ms` to the next time daysListened changes (at least 1). */
export function msUntilListenChange(ms) {
  const sinceMidnight = ((ms % DAY_MS) + DAY_MS) % DAY_MS;
  const next = [NEAR_MIDNIGHT_MS, DAY_MS - NEAR_MIDNIGHT_MS, DAY_MS].find((at) => at > sinceMidnight);
  return Math.max(1, next - sinceMidnight);
}

/** handle(secret, day); resolves to 43 base64url characters. */
export async function deriveHandle(secret, day, subtle = globalThis.crypto.subtle) {
  if (!isSecret(secret)) throw new TypeError('not a rendezvous secret');
  const key = await subtle.importKey('raw', fromBase64Url(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = await subtle.sign('HMAC', key, new TextEncoder().encode(`${HANDLE_LABEL}${day}`));
  return toBase64Url(new Uint8Array(mac));
}

/**
 * The tag that binds a control envelope to one contact (PROTOCOL §6 `for`): HMAC-SHA256(key = the recipient's
 * listening secret, TAG_LABEL), 43 characters. Only the two sides of this contact know the secret, and a new
 * contact draws new secrets, so an envelope of an earlier contact between the same keys carries another tag.
 * Never a handle (another label), and it travels only inside encrypted envelopes.
 */
export async function contactTag(secret, subtle = globalThis.crypto.subtle) {
  if (!isSecret(secret)) throw new TypeError('not a rendezvous secret');
  const key = await subtle.importKey('raw', fromBase64Url(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return toBase64Url(new Uint8Array(await subtle.sign('HMAC', key, new TextEncoder().encode(TAG_LABEL))));
}

/**
 * The handles for `contacts` ([{key, mine, theirs}], either secret may be '') at `now`: `listen` maps the
 * handles of every `mine` for daysListened(now, {catchUp}) to the contact's key, `send` maps the key to today's
 * handle of `theirs`. Contacts beyond MAX_CONTACTS (by the order given) are left out: the server would refuse
 * them.
 */
export async function deriveHandles(contacts, now, subtle = globalThis.crypto.subtle, { catchUp = false } = {}) {
  const day = utcDay(now);
  const listen = new Map();
  const send = new Map();
  const days = daysListened(now, { catchUp });
  let listening = 0;
  for (const { key, mine, theirs } of contacts) {
    if (isSecret(mine) && listening < MAX_CONTACTS) {
      listening += 1;
      for (const offset of days) listen.set(await deriveHandle(mine, utcDay(now, offset), subtle), key);
    }
    if (isSecret(theirs)) send.set(key, await deriveHandle(theirs, day, subtle));
  }
  return { day, listen, send };
}

/** What to LISTEN and UNLISTEN to go from the handles `current` to `wanted` (both iterables). */
export function listenPlan(current, wanted) {
  const have = new Set(current);
  const want = new Set(wanted);
  return {
    listen: [...want].filter((handle) => !have.has(handle)),
    unlisten: [...have].filter((handle) => !want.has(handle)),
  };
}

/** `items` in frames of at most `size`. */
export function batches(items, size = LISTEN_BATCH) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}
