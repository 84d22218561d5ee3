// Where the contact book rests: with "remember on this device", in localStorage as ONE OpenPGP message
// encrypted to the user's own key and signed by it, re-saved (debounced) when it changes; as an exported file
// of the same form; and read back (stored or imported) only when it decrypts with the user's key, every
// signature on it is by that key, and its contents pass contactbook.js parseBook. Never plaintext at rest.
import { MAX_ARMORED_BOOK_CHARS, contactRecord, isContact, parseBook, serializeBook } from './contactbook.js';

export const BOOK_STORE = 'secchat.contacts.v1';
const SAVE_DELAY_MS = 1000;
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
 */
export function createContactStore({ pgp, getModel, dispatch, identity, remember, notice }) {
  let timer = null;
  let lastSaved = '';
  let lastFriends = null;

  const run = (op, args) => pgp.lanes.messages.run(op, args, { budgetMs: BOOK_BUDGET_MS });

  function records(model) {
    const now = Date.now();
    return [...model.friends.values()].filter(isContact).map((friend) => contactRecord(friend, now));
  }

  /** The armored book for the current contacts, or {problem}. */
  async function sealed() {
    const { fingerprint, publicArmored } = identity();
    const book = serializeBook(records(getModel()), fingerprint, Date.now());
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
    return parseBook(result.text, fingerprint);
  }

  async function save() {
    if (!remember()) return;
    const book = await sealed();
    if (book.problem) {
      notice('book_not_saved', { reason: refusalReason(book.problem) });
      return;
    }
    if (book.text === lastSaved) return;
    try {
      localStorage.setItem(BOOK_STORE, book.armored);
      lastSaved = book.text;
    } catch {
      notice('book_not_saved', { reason: 'the browser\'s storage is full or disabled' });
    }
  }

  return {
    /** After a change of the domain state: save later, once, if contacts may have changed. */
    changed() {
      const { friends } = getModel();
      if (friends === lastFriends || !remember()) return;
      lastFriends = friends;
      clearTimeout(timer);
      timer = setTimeout(() => save().catch(() => notice('book_not_saved', { reason: 'encrypting it failed' })), SAVE_DELAY_MS);
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
        notice('book_refused', { reason: refusalReason(book.problem) });
        return;
      }
      await dispatch({ type: 'bookLoaded', contacts: book.contacts });
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
      return { added, updated: book.contacts.length - added };
    },
  };
}
