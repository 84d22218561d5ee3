// How people are named on screen. A friend has an ID (from the server), maybe a name on their key (chosen by
// whoever made the key: attacker-controlled text) and maybe a nickname the user gave them (trusted: the user
// typed it). Pure: no DOM; the views decide how each kind looks.
//
// Invariants of a cleaned name: no control, format (bidi overrides, zero-width), line or paragraph separator
// characters, no look-alikes of the page's own trust marks, white space collapsed, at most its bound in code
// points. So a name can never reorder the text around it, hide characters, break a line, or draw a mark the
// page uses for verification.
import { DEFAULT_KEY_NAME } from './keys.js';

/** Code points of a name on a key that are shown; longer ones end in "…". */
export const KEY_NAME_MAX = 40;
/** Code points of a nickname the user gives a friend. */
export const NICKNAME_MAX = 32;

// Cc (controls), Cf (format: bidi embeddings/overrides/isolates, zero-width joiners, soft hyphen…), Zl, Zp,
// and the marks the page draws for trust and warnings (✓ ✔ ✅ ☑ ⚠ ❗ ❌ ✗ ✘ and the variation selectors that
// turn them into emoji).
const STRIPPED = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\u2713\u2714\u2705\u2611\u26A0\u2757\u274C\u2717\u2718\uFE0E\uFE0F]/gu;

/** `text` made safe to show as a name (see the invariants above), at most `max` code points; '' for nothing. */
export function cleanName(text, max) {
  if (typeof text !== 'string') return '';
  // White space first (a line break is a space), then what must not be shown at all.
  const cleaned = text.normalize('NFC').replace(/\s+/gu, ' ').replace(STRIPPED, '').replace(/ {2,}/g, ' ').trim();
  const points = [...cleaned];
  return points.length <= max ? cleaned : `${points.slice(0, max - 1).join('').trimEnd()}…`;
}

/** The name on a key as shown, or '' when it has none worth showing (the default name keys made without one get). */
export function keyName(userId) {
  const name = cleanName(userId, KEY_NAME_MAX);
  return name === DEFAULT_KEY_NAME ? '' : name;
}

/** Names compare the way people read them: case and accents aside. */
export function nameKey(name) {
  return name.normalize('NFKD').replace(/\p{M}/gu, '').toLocaleLowerCase('en');
}

/**
 * What the page calls a friend: {text, kind}. kind 'nickname' (the user's own word for them), 'key' (the name
 * on their key, shown marked as chosen by its owner), or 'id' (neither).
 */
export function friendLabel(friend) {
  if (friend.nickname) return { text: friend.nickname, kind: 'nickname' };
  const name = keyName(friend.userId);
  if (name) return { text: name, kind: 'key' };
  return { text: friend.id, kind: 'id' };
}

/** The label as plain text for sentences and accessible names: a key's name carries its caveat. */
export function labelText(label) {
  return label.kind === 'key' ? `${label.text} (name on their key)` : label.text;
}

/**
 * Other friends whose nickname or key name reads the same as `id`'s key name: a key's owner can pick any name,
 * including one the user gave someone else. The views then show the ID beside the name, and a warning.
 */
export function nameClashes(state, id) {
  const friend = state.friends.get(id);
  const name = friend && keyName(friend.userId);
  if (!name || friend.nickname) return [];
  const wanted = nameKey(name);
  const clashes = [];
  for (const other of state.friends.values()) {
    if (other.id === id) continue;
    const names = [other.nickname, keyName(other.userId)].filter(Boolean);
    if (names.some((n) => nameKey(n) === wanted)) clashes.push(other.id);
  }
  return clashes;
}

/**
 * Why `typed` cannot be `id`'s nickname: 'taken' (another friend already has it as nickname), or null with
 * `nickname` the cleaned text ('' clears the nickname).
 */
export function nicknameProblem(state, id, typed) {
  const nickname = cleanName(typed, NICKNAME_MAX);
  if (nickname) {
    const wanted = nameKey(nickname);
    for (const other of state.friends.values()) {
      if (other.id !== id && other.nickname && nameKey(other.nickname) === wanted) return { problem: 'taken', nickname, other: other.id };
    }
  }
  return { problem: null, nickname };
}
