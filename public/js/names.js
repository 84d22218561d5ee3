// How people are named on screen. A friend has an ID (from the server), maybe a name on their key (chosen by
// whoever made the key: attacker-controlled text) and maybe a nickname the user gave them (trusted: the user
// typed it). Pure: no DOM; the views decide how each kind looks.
//
// Invariants of a cleaned name: no control, format (bidi overrides, zero-width), line or paragraph separator
// characters, nothing that draws blank without being a space (Hangul fillers, the Braille blank, other
// default-ignorable code points), at most MAX_MARKS_PER_BASE combining marks on any character and none
// without one, no look-alikes of the page's own trust marks, white space collapsed, at most its bound in code
// points. So a name can never reorder the text around it, hide characters, look empty, spill over the lines
// around it, break a line, or draw a mark the page uses for verification.
//
// Names are compared by their skeleton (nameSkeleton): what two names have in common when read by a person.
import { DEFAULT_KEY_NAME } from './keys.js';
import { normalizeId } from './ids.js';

/** Code points of a name on a key that are shown; longer ones end in "…". */
export const KEY_NAME_MAX = 40;
/** Code points of a nickname the user gives a friend. */
export const NICKNAME_MAX = 32;
/**
 * Combining marks kept on one character: enough for ordinary writing in every script (a Devanagari consonant
 * with nukta, vowel sign and candrabindu has three), not for a stack that draws over the lines around it.
 */
export const MAX_MARKS_PER_BASE = 3;

// Drawn as nothing or as a blank, yet not white space: every default-ignorable code point (the Hangul fillers
// U+115F, U+1160, U+3164 and U+FFA0, the combining grapheme joiner, variation selectors, tag characters…)
// and the Braille blank U+2800, which Unicode does not count as ignorable.
const INVISIBLE = '\\p{Default_Ignorable_Code_Point}\\u2800';
// The marks the page draws for trust, warnings and the invite (✓ ✔ ✅ ☑ ⚠ ❗ ❌ ✗ ✘ ✉) and what reads like them:
// ✕ ✖ ❎ ☐ ☒ √ ⍻ 𐄂, the ballot marks 🗴 🗵 🗶 🗷 🗸 🗹, and the envelopes 📧 📨 📩.
const MARK_LOOKALIKES = '\\u2713-\\u2718\\u2705\\u2610-\\u2612\\u26A0\\u2757\\u274C\\u274E\\u221A\\u237B\\u2709\\u{10102}\\u{1F5F4}-\\u{1F5F9}\\u{1F4E7}-\\u{1F4E9}';
// Cc (controls), Cf (format: bidi embeddings/overrides/isolates, zero-width joiners, soft hyphen…), Zl, Zp,
// the invisible characters and the mark look-alikes above.
const STRIPPED = new RegExp(`[\\p{Cc}\\p{Cf}\\p{Zl}\\p{Zp}${INVISIBLE}${MARK_LOOKALIKES}]`, 'gu');

/** `text` made safe to show as a name (see the invariants above), at most `max` code points; '' for nothing. */
export function cleanName(text, max) {
  if (typeof text !== 'string') return '';
  // White space first (a line break is a space), then what must not be shown at all.
  const stripped = text.normalize('NFC').replace(/\s+/gu, ' ').replace(STRIPPED, '').replace(/ {2,}/g, ' ').trim();
  const cleaned = limitMarks(stripped).trim();
  const points = [...cleaned];
  return points.length <= max ? cleaned : `${points.slice(0, max - 1).join('').trimEnd()}…`;
}

/** Drops combining marks beyond MAX_MARKS_PER_BASE on one character, and marks on nothing (first, or on a space). */
function limitMarks(text) {
  let out = '';
  let marks = MAX_MARKS_PER_BASE; // none allowed before the first character
  for (const point of text) {
    if (/\p{M}/u.test(point)) {
      if (marks < MAX_MARKS_PER_BASE) out += point;
      marks += 1;
    } else {
      out += point;
      marks = point === ' ' ? MAX_MARKS_PER_BASE : 0;
    }
  }
  return out;
}

// Cyrillic and Greek letters that read as Latin ones, both cases (before case folding: Cyrillic "В" reads as
// "B", its lower case "в" does not). A small table of the common ones, not the full confusables data of
// Unicode TR #39: Armenian, Cherokee and others are not folded.
const CONFUSABLE = {
  // Cyrillic
  А: 'A', В: 'B', Е: 'E', К: 'K', М: 'M', Н: 'H', О: 'O', Р: 'P', С: 'C', Т: 'T', У: 'Y', Х: 'X', Ѕ: 'S',
  І: 'I', Ј: 'J', Ү: 'Y', Һ: 'H', Ԛ: 'Q', Ԝ: 'W', Ӏ: 'I', Ԁ: 'D',
  а: 'a', е: 'e', о: 'o', р: 'p', с: 'c', у: 'y', х: 'x', ѕ: 's', і: 'i', ј: 'j', һ: 'h', ԁ: 'd', ԛ: 'q',
  ԝ: 'w', ӏ: 'l', ү: 'y', к: 'k',
  // Greek
  Α: 'A', Β: 'B', Ε: 'E', Ζ: 'Z', Η: 'H', Ι: 'I', Κ: 'K', Μ: 'M', Ν: 'N', Ο: 'O', Ρ: 'P', Τ: 'T', Υ: 'Y',
  Χ: 'X', ο: 'o', ρ: 'p', ν: 'v', υ: 'u', ι: 'i', κ: 'k', χ: 'x', γ: 'y', α: 'a', ϲ: 'c', ϳ: 'j',
  // Latin letters without a dot or with a hook that NFKC leaves alone
  ı: 'i', ɩ: 'l', ɑ: 'a', ɡ: 'g',
};
const CONFUSABLE_PATTERN = new RegExp(`[${Object.keys(CONFUSABLE).join('')}]`, 'gu');

const SKELETONS_CACHED = 1024; // names are bounded (KEY_NAME_MAX, NICKNAME_MAX, IDs), so this is bounded too
const skeletons = new Map();

/**
 * What a name reads as, for comparing names: NFKC (full-width and mathematical letters are letters), without
 * invisible characters, marks, white space or punctuation, common Cyrillic and Greek look-alikes read as the
 * Latin letters, case folded, and 0/o, 1/l/i/|, rn/m and vv/w read alike. Two names with the same skeleton can
 * be told apart by nobody at a glance; '' for a name with nothing readable.
 */
export function nameSkeleton(name) {
  if (typeof name !== 'string') return '';
  let skeleton = skeletons.get(name);
  if (skeleton !== undefined) return skeleton;
  skeleton = name.normalize('NFKC')
    .replace(STRIPPED, '')
    .replace(CONFUSABLE_PATTERN, (c) => CONFUSABLE[c])
    .normalize('NFKD')
    .replace(/[\p{M}\p{P}\p{Z}\s]/gu, '')
    .toLowerCase()
    .replace(/0/g, 'o')
    .replace(/[1i|]/g, 'l')
    .replace(/rn/g, 'm')
    .replace(/vv/g, 'w');
  if (skeletons.size >= SKELETONS_CACHED) skeletons.clear();
  skeletons.set(name, skeleton);
  return skeleton;
}

/**
 * Whether a name reads as a session ID (upper-case letters and digits, six of them, spaces and dashes aside):
 * shown beside the real ID, it could pass for one.
 */
export function readsAsId(name) {
  const folded = name.normalize('NFKC').replace(STRIPPED, '').replace(CONFUSABLE_PATTERN, (c) => CONFUSABLE[c]);
  return !/\p{Ll}/u.test(folded) && normalizeId(folded) !== null;
}

/**
 * The name on a key as shown, or '' when it has none worth showing: the default name keys made without one
 * get, and a name that reads as an ID (readsAsId: beside the real ID it would pass for another one).
 */
export function keyName(userId) {
  const name = cleanName(userId, KEY_NAME_MAX);
  return name === DEFAULT_KEY_NAME || readsAsId(name) ? '' : name;
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
 * Other friends whose nickname or key name reads the same as `id`'s key name (nameSkeleton), or whose ID its
 * key name contains: a key's owner can pick any name, including one the user gave someone else. The views
 * then show the ID beside the name, and a warning. A nickname is the user's own word: it clashes with nothing.
 */
export function nameClashes(state, id) {
  const friend = state.friends.get(id);
  if (!friend || friend.nickname) return [];
  return friendsNamedLike(state, keyName(friend.userId), id);
}

/**
 * Friends (but `exceptId`) whose nickname or key name has the skeleton of `name`, or whose ID `name` contains
 * as read (a key named "Mum K7Q2ZD" next to the real ID reads as friend K7Q2ZD's). For a request card, too.
 */
export function friendsNamedLike(state, name, exceptId) {
  const wanted = name ? nameSkeleton(name) : '';
  if (!wanted) return [];
  const clashes = [];
  for (const other of state.friends.values()) {
    if (other.id === exceptId) continue;
    const names = [other.nickname, keyName(other.userId)].filter(Boolean);
    if (names.some((n) => nameSkeleton(n) === wanted) || wanted.includes(nameSkeleton(other.id))) clashes.push(other.id);
  }
  return clashes;
}

/**
 * Why `typed` cannot be `id`'s nickname: 'taken' (another friend already has a nickname that reads the same),
 * or null with `nickname` the cleaned text ('' clears the nickname).
 */
export function nicknameProblem(state, id, typed) {
  const nickname = cleanName(typed, NICKNAME_MAX);
  const wanted = nameSkeleton(nickname);
  if (wanted) {
    for (const other of state.friends.values()) {
      if (other.id !== id && other.nickname && nameSkeleton(other.nickname) === wanted) return { problem: 'taken', nickname, other: other.id };
    }
  }
  return { problem: null, nickname };
}
