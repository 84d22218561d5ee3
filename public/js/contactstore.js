// Where the contact book rests: with "remember on this device", in localStorage as ONE OpenPGP message
// encrypted to the user's own key and signed by it, re-saved when it changes; as an exported file of the same
// form; and read back (stored or imported) only when it decrypts with the user's key, every signature on it is
// by that key, and its contents pass contactbook.js parseBook. Never plaintext at rest.
//
// When it is saved: SAVE_QUIET_MS after the last change, but never later than SAVE_MAX_WAIT_MS after the first
// unsaved one, so changes that keep coming (a frame to our handles every second, which a server can send) cannot
// hold a save off. And at once, through persist(), before anything leaves that a stale book would repeat after a
// reload: a message with a new seq (a reload must never use that seq again) and a receipt (a reload must never
// take the receipted message for a new one). One save runs at a time; a save asked for while one runs starts
// after it, with the state as it is then, so any number of waiting sends share one.
import { MAX_ARMORED_BOOK_CHARS, contactRecord, isContact, parseBook, serializeBook } from './contactbook.js';
import { groupRecord, readForgotten, readGroups } from './groupbook.js';
import { contactTag } from './rendezvous.js';

export const BOOK_STORE = 'secchat.contacts.v1';
export const SAVE_QUIET_MS = 1000;
export const SAVE_MAX_WAIT_MS = 5000;
/** Sealing or opening a big book (thousands of contacts) may take longer than a message's budget. */
const BOOK_BUDGET_MS = 30000;

const REFUSAL = {
  too_large: 'it is larger than SecChat accepts',
  malformed: 'it is not a SecChat contact book',
  not_yours: 'it was made for another key',
  too_many_contacts: 'it holds more contacts than SecChat can listen for',
  bad_contact: 'a contact in it is not well formed',
  duplicate: 'it lists one key twice, or your own key',
  bad_signature: 'it is not signed by your key',
  undecryptable: 'it cannot be decrypted with your key',
  too_slow: 'decrypting it took too long',
  bad_group: 'a group in it is not well formed',
  too_many_groups: 'it holds more groups than SecChat can listen for',
  duplicate_group: 'it lists one group twice',
};

export function refusalReason(problem) {
  return REFUSAL[problem] || problem;
}

/**
 * @param {object} options
 * @param {object} options.pgp  cryptoclient.js (its message lane holds the user's key)
 * @param {() => object} options.getModel
 * @param {(event: object) => Promise<void>} options.dispatch
 * @param {() => {fingerprint: string, publicArmored: string}} options.identity
 * @param {() => boolean} options.remember  whether the user opted in to remembering
 * @param {(code: string, details?: object) => void} options.notice
 * @param {{now: () => number, setTimeout: Function, clearTimeout: Function}} [options.clock]  (tests: a fake one)
 * @param {() => void} [options.onSettled]  called when no save is due or running any more (the page shows it)
 * @param {(groups: object[], forgotten: object[]) => Promise<void>} [options.groupsLoaded]  the book's groups and the groups
 *   taken off the list, read and checked (groupsync.js)
 */
export function createContactStore({
  pgp, getModel, dispatch, identity, remember, notice, onSettled = () => {}, groupsLoaded = async () => {},
  clock = { now: () => Date.now(), setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (t) => clearTimeout(t) },
}) {
  let timer = null;
  let dirtySince = 0; // when the first change not yet saved happened (0: none)
  let lastSaved = ''; // the contacts' JSON as last stored
  let lastFriends = null;
  let lastGroups = null;
  let saving = null; // the save running, if any
  let queued = null; // the save that starts after it, if any
  // A stored book this page could not read (too slow, or damaged): it is never overwritten, as that would lose
  // every contact in it; a reload reads it again. Changes in this page are then not saved (the page says so).
  let storedUnread = false;

  const run = (op, args) => pgp.lanes.messages.run(op, args, { budgetMs: BOOK_BUDGET_MS });

  /** What the book keeps: {contacts, groups} records. */
  function records(model) {
    const now = Date.now();
    return {
      contacts: [...model.friends.values()].filter(isContact).map((friend) => contactRecord(friend, now)),
      groups: [...model.groups.values()].map(groupRecord),
      forgottenGroups: model.forgottenGroups,
    };
  }

  /** The armored book for `kept` (records), or {problem}. */
  async function sealed(kept = records(getModel())) {
    const { fingerprint, publicArmored } = identity();
    const book = serializeBook(kept.contacts, fingerprint, clock.now(), kept.groups, kept.forgottenGroups);
    if (book.problem) return { problem: book.problem };
    const armored = await run('seal', { envelopeText: book.text, friendArmored: publicArmored });
    return { armored, text: book.text };
  }

  /** The contacts of an armored book, checked; or {problem}. */
  async function opened(armored) {
    if (typeof armored !== 'string' || armored.length > MAX_ARMORED_BOOK_CHARS) return { problem: 'too_large' };
    if (!armored.trimStart().startsWith('-----BEGIN PGP MESSAGE-----')) return { problem: 'malformed' };
    const { fingerprint, publicArmored } = identity();
    let result;
    try {
      result = await run('open', { payload: armored, friendArmored: publicArmored });
    } catch (error) {
      return { problem: error.code === 'too_slow' ? 'too_slow' : 'undecryptable' };
    }
    if (!result.ok) return { problem: result.problem };
    const book = parseBook(result.text, fingerprint);
    if (book.problem) return book;
    const read = await readGroups(book.groups, fingerprint, clock.now());
    if (read.problem) return read;
    const forgotten = readForgotten(book.forgottenGroups);
    if (forgotten.problem) return forgotten;
    // The tag our contacts' control envelopes must carry (contacts.js); derived, never stored.
    const contacts = [];
    for (const contact of book.contacts) contacts.push({ ...contact, mineTag: await contactTag(contact.mine) });
    return { contacts, groups: read.groups, forgotten: forgotten.forgotten };
  }

  /** Saves the contacts as they are now, unless they are what was stored last. Never throws. */
  async function save() {
    if (!remember() || storedUnread) return;
    const kept = records(getModel());
    const text = JSON.stringify(kept);
    if (text === lastSaved) return;
    try {
      const book = await sealed(kept);
      if (book.problem) {
        notice('book_not_saved', { reason: refusalReason(book.problem) });
        return;
      }
      localStorage.setItem(BOOK_STORE, book.armored);
      lastSaved = text;
    } catch (error) {
      const storage = error && (error.name === 'QuotaExceededError' || error.name === 'SecurityError');
      notice('book_not_saved', { reason: storage ? 'the browser\'s storage is full or disabled' : 'encrypting it failed' });
    }
  }

  /** Starts a save after the one running (if any); resolves when it is done. Saves asked for meanwhile share it. */
  function saveSoon() {
    if (queued) return queued;
    const start = () => {
      queued = null;
      dirtySince = 0;
      clock.clearTimeout(timer);
      timer = null;
      saving = save().finally(() => {
        saving = null;
        if (!timer && !queued) onSettled();
      });
      return saving;
    };
    if (!saving) return start();
    queued = saving.then(start);
    return queued;
  }

  return {
    /**
     * After a change of the domain state: a save SAVE_QUIET_MS after the last change, at most SAVE_MAX_WAIT_MS
     * after the first unsaved one.
     */
    changed() {
      const { friends, groups } = getModel();
      if ((friends === lastFriends && groups === lastGroups) || !remember()) return;
      lastFriends = friends;
      lastGroups = groups;
      const now = clock.now();
      if (!dirtySince) dirtySince = now;
      clock.clearTimeout(timer);
      const due = Math.min(now + SAVE_QUIET_MS, dirtySince + SAVE_MAX_WAIT_MS);
      timer = clock.setTimeout(() => { saveSoon(); }, Math.max(0, due - now));
    },
    /**
     * Resolves once the book in storage holds the contacts as they are now (at once when it does already, or
     * when nothing is remembered). Called before a message with a new seq or a receipt leaves (effects.js).
     * A save that fails says so in a notice and resolves too: the message still goes.
     */
    persist() {
      if (!remember()) return Promise.resolve();
      if (!saving && !queued && JSON.stringify(records(getModel())) === lastSaved) return Promise.resolve();
      return saveSoon();
    },
    /** Whether a save is due or running (cheap: the page shows it). */
    get pending() {
      return Boolean(timer || saving || queued);
    },
    /** Whether the stored book differs from the contacts as they are (a reload now would lose the difference). */
    get unsaved() {
      if (!remember()) return false;
      const kept = records(getModel());
      const text = JSON.stringify(kept);
      return text !== lastSaved && !(kept.contacts.length === 0 && kept.groups.length === 0 && lastSaved === '');
    },
    /** Reads the remembered book, if any, into the domain. */
    async load() {
      let armored = null;
      try {
        armored = localStorage.getItem(BOOK_STORE);
      } catch {
        return;
      }
      if (!armored) return;
      const book = await opened(armored);
      if (book.problem) {
        storedUnread = true;
        notice('book_refused', { reason: refusalReason(book.problem) });
        return;
      }
      await dispatch({ type: 'bookLoaded', contacts: book.contacts });
      await groupsLoaded(book.groups, book.forgotten);
    },
    /** The armored book to download, or throws with the reason. */
    async exportText() {
      const book = await sealed();
      if (book.problem) throw new Error(`The contact book cannot be exported: ${refusalReason(book.problem)}.`);
      return book.armored;
    },
    /** Merges an exported book into the domain; resolves {added, updated} or throws with the reason. */
    async importText(armored) {
      const book = await opened(armored);
      if (book.problem) throw new Error(`Not imported: ${refusalReason(book.problem)}.`);
      const known = new Set([...getModel().friends.values()].map((f) => f.fingerprint));
      const added = book.contacts.filter((c) => !known.has(c.fingerprint)).length;
      await dispatch({ type: 'bookLoaded', contacts: book.contacts });
      await groupsLoaded(book.groups, book.forgotten);
      return { added, updated: book.contacts.length - added };
    },
  };
}
