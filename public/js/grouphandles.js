// Group handles (PROTOCOL §6 "Groups", §11): every member listens on handles derived from the group's secret
// and its own fingerprint, and a message to the group is one MESSAGE to the other members' handles of today:
//
//   handle(secret, fp, day) = base64url-unpadded(HMAC-SHA256(key = secret, "secchat-group-v1\n" + fp + "\n" + "YYYY-MM-DD"))
//
// Anyone holding the secret can derive every member's handle, so a removed member is cut off only by a new
// secret (grouplist.js refuses a removal without one). As for contacts (rendezvous.js daysListened), a member
// listens on today's handle, the neighbouring day's within an hour of UTC midnight (clocks disagree about the
// date), and yesterday's for a connection's first FETCH (`catchUp`), for the current secret and for each
// secret replaced less than 7 days ago (messages still in flight or in the mailbox). Pure.
import { MAX_DAYS_AT_ONCE, daysListened, fromBase64Url, isSecret, toBase64Url, utcDay } from './rendezvous.js';
import { MAX_PREVIOUS_SECRETS, current, isFingerprint, memberOf } from './grouplist.js';

export const GROUP_HANDLE_LABEL = 'secchat-group-v1\n';
/** The most handles one group makes a member listen on (the current secret and the previous ones, 3 days each). */
export const HANDLES_PER_GROUP = MAX_DAYS_AT_ONCE * (1 + MAX_PREVIOUS_SECRETS);

/** handle(secret, fp, day); resolves to 43 base64url characters. */
export async function deriveMemberHandle(secret, fingerprint, day, subtle = globalThis.crypto.subtle) {
  if (!isSecret(secret)) throw new TypeError('not a group secret');
  if (!isFingerprint(fingerprint)) throw new TypeError('not a fingerprint');
  const key = await subtle.importKey('raw', fromBase64Url(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  const mac = await subtle.sign('HMAC', key, new TextEncoder().encode(`${GROUP_HANDLE_LABEL}${fingerprint}\n${day}`));
  return toBase64Url(new Uint8Array(mac));
}

/** The secrets whose handles a member listens on at `now`: the current one first, then unexpired previous ones. */
export function listeningSecrets(state, now) {
  const secrets = [current(state).secret];
  for (const p of state.previousSecrets) if (p.until > now && !secrets.includes(p.secret)) secrets.push(p.secret);
  return secrets;
}

/**
 * The handles of the group held in `state` (grouplist.js) at `now`: `send` maps each other member of the
 * current version to its handle of today (one MESSAGE to all of them, §11; at most 63), `listen` maps each of
 * our own handles for daysListened(now, {catchUp}) to the gid (`catchUp`: the connection has not fetched yet;
 * the default, so yesterday's handles are there until the wiring knows the mail is in). A member removed from
 * the current version listens on nothing and sends nowhere.
 */
export async function groupHandles(state, now, subtle = globalThis.crypto.subtle, { catchUp = true } = {}) {
  const day = utcDay(now);
  const send = new Map();
  const listen = new Map();
  const version = current(state);
  if (!memberOf(version, state.me)) return { day, send, listen };
  for (const [fp, handle] of await versionHandles(version, state.me, day, subtle)) send.set(fp, handle);
  for (const secret of listeningSecrets(state, now)) {
    for (const offset of daysListened(now, { catchUp })) listen.set(await deriveMemberHandle(secret, state.me, utcDay(now, offset), subtle), state.gid);
  }
  return { day, send, listen };
}

/**
 * Each member of `version` but `except` mapped to its handle of `day` under that version's secret. An admin
 * sends a new version to the members who hold the one before it through that one's handles (§6).
 */
export async function versionHandles(version, except, day, subtle = globalThis.crypto.subtle) {
  const handles = new Map();
  for (const m of version.members) {
    if (m.fp !== except) handles.set(m.fp, await deriveMemberHandle(version.secret, m.fp, day, subtle));
  }
  return handles;
}
