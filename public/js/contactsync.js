// The wiring's side of contacts (contacts.js): draws listening secrets, derives the day's handles (Web Crypto
// HMAC, rendezvous.js), keeps the server's LISTEN set equal to them on every connection, fetches the mailbox
// until nothing waits, then asks the domain to probe every contact. Re-run after every change of the domain
// state and whenever the days listened on change (rendezvous.js daysListened: the neighbouring day only near
// UTC midnight; what leaves the window is UNLISTENed). A connection's first LISTEN and FETCH also take
// yesterday's handles, for the mail that waited there while the user was away; once the messages fetched have
// been handled, they are UNLISTENed (unless it is near midnight). One run at a time; a run that finds the
// connection replaced stops, and the next CONNECT starts over (LISTEN after every CONNECT, §10).
import { isLive } from './model.js';
import {
  batches, contactTag, daysListened, deriveHandles, listenPlan, msUntilListenChange, newSecret, utcDay,
} from './rendezvous.js';

/** FETCH again while frames from the last one are still being opened only below this many (peerqueue.js). */
const FETCH_WHEN_QUEUED_BELOW = 64;
/** A FETCH loop stops after this many rounds even if the server keeps saying messages wait. */
const MAX_FETCH_ROUNDS = 1000;
/** Yesterday's handles go once the fetched frames are handled, or after this long whatever keeps arriving. */
const MAX_DRAIN_WAIT_MS = 10000;
/** How long a handle the server dropped to make room (HANDLE_DROPPED) waits before it is LISTENed again. */
export const DROPPED_RETRY_MS = 5 * 60 * 1000;

/**
 * @param {object} options
 * @param {object} options.transport  transport.js (request, isOnline)
 * @param {() => object} options.getModel  the current domain state
 * @param {(event: object) => Promise<void>} options.dispatch
 * @param {() => number} options.queued  frames waiting in the per-peer queue
 * @param {(error: unknown) => void} options.onError
 * @param {{now: () => number, setTimeout: Function, clearTimeout: Function}} [options.clock]  (tests: a fake one)
 * @param {() => void} [options.onFetched]  a connection's mailbox was fetched and handled (groups resend then)
 */
export function createContactSync({
  transport, getModel, dispatch, queued, onError, onFetched = () => {},
  clock = { now: () => Date.now(), setTimeout: (f, ms) => setTimeout(f, ms), clearTimeout: (t) => clearTimeout(t) },
}) {
  const sleep = (ms) => new Promise((resolve) => clock.setTimeout(resolve, ms));
  let connection = 0; // bumped by every CONNECT reply
  let listened = new Set(); // handles the server holds for this connection
  let fetched = false; // this connection's mailbox was fetched and the contacts probed
  let derivedFor = ''; // the secrets and day the domain's handles were derived from
  let running = false;
  let again = false;
  const secretsDrawn = new Set(); // "id friendship" a secret was drawn for (the domain keeps it; this avoids a second draw)
  let windowTimer = null;
  let retryTimer = null; // LISTEN again for handles the server dropped (dropped())

  /** Runs again when the days listened on change next (a second after, so the clock is surely past it). */
  function scheduleWindow() {
    clock.clearTimeout(windowTimer);
    windowTimer = clock.setTimeout(() => {
      scheduleWindow();
      changed();
    }, msUntilListenChange(clock.now()) + 1000);
  }
  scheduleWindow();

  function changed() {
    if (running) {
      again = true;
      return;
    }
    running = true;
    run().catch(onError).finally(() => {
      running = false;
      if (again) {
        again = false;
        changed();
      }
    });
  }

  /** A CONNECT reply: the server's set is this connection's to fill (a resumed session kept it, LISTEN is idempotent). */
  function onSession() {
    connection += 1;
    listened = new Set();
    fetched = false;
    changed();
  }

  async function run() {
    const model = getModel();
    const v2 = model.session.version === 2 && model.handles.supported !== false;
    // 1. A listening secret for each friend who should have one (contacts.js: we asked, or they offered theirs).
    if (v2) {
      for (const friend of model.friends.values()) {
        const mark = `${friend.id} ${friend.friendship}`;
        if (!isLive(friend) || !friend.idLive || friend.rendezvous.mine || secretsDrawn.has(mark)) continue;
        if (!friend.requestedByMe && !friend.rendezvous.theirs) continue;
        secretsDrawn.add(mark);
        const secret = newSecret();
        await dispatch({ type: 'rendezvousSecretCreated', peer: friend.id, secret, tag: await contactTag(secret) });
      }
    }
    // 2. The handles of the days listened on now for every secret we know (yesterday's too until this
    // connection's mailbox was fetched).
    const now = clock.now();
    const catchUp = !fetched;
    const inputs = [...getModel().friends.values()]
      .filter((f) => isLive(f) && (f.rendezvous.mine || f.rendezvous.theirs))
      .map((f) => ({ key: f.id, mine: f.rendezvous.mine, theirs: f.rendezvous.theirs }));
    const days = daysListened(now, { catchUp }).map((offset) => utcDay(now, offset)).join(',');
    const inputKey = `${utcDay(now)}|${days}|${inputs.map((i) => `${i.key}:${i.mine}:${i.theirs}`).join(',')}`;
    if (inputKey !== derivedFor) {
      const { day, listen, send } = await deriveHandles(inputs, now, undefined, { catchUp });
      derivedFor = inputKey;
      await dispatch({ type: 'handlesDerived', day, listen, send });
    }
    // 3. The server's set for this connection, then the mailbox, then the probes.
    const current = getModel();
    if (!transport.isOnline() || current.session.version !== 2 || current.handles.supported === false) return;
    const at = connection;
    // The groups' handles (groupsync.js) share the connection's LISTEN set and its FETCH.
    const plan = listenPlan(listened, [...current.handles.listen.keys(), ...current.groupHandles.listen.keys()]);
    let waiting = false; // a LISTEN after this connection's first FETCH says mail waits (a group joined since)
    for (const handles of batches(plan.listen)) {
      try {
        const answer = await transport.request({ type: 'LISTEN', handles });
        if (answer && answer.waiting > 0) waiting = true;
      } catch (error) {
        if (error.code === 'unknown_type') await dispatch({ type: 'handlesSupported', supported: false });
        return; // offline, or the server refused (too_many_handles): the next change or CONNECT tries again
      }
      if (at !== connection) return;
      handles.forEach((h) => listened.add(h));
      if (getModel().handles.supported !== true) await dispatch({ type: 'handlesSupported', supported: true });
    }
    for (const handles of batches(plan.unlisten)) {
      try {
        await transport.request({ type: 'UNLISTEN', handles });
      } catch {
        return;
      }
      if (at !== connection) return;
      handles.forEach((h) => listened.delete(h));
    }
    if ((fetched && !waiting) || listened.size === 0) return;
    for (let round = 0; round < MAX_FETCH_ROUNDS; round += 1) {
      let answer;
      try {
        answer = await transport.request({ type: 'FETCH' });
      } catch {
        return;
      }
      if (at !== connection) return;
      if (!(answer.waiting > 0)) break;
      while (queued() >= FETCH_WHEN_QUEUED_BELOW) await sleep(50);
    }
    if (fetched) {
      onFetched(); // a group joined or restored since: what waited for its handles is in
      return;
    }
    // The messages fetched from yesterday's handles find their contact through the handles derived now: they
    // are handled before those handles go (a frame to a handle no longer listened on is for nobody).
    for (let waited = 0; queued() > 0 && waited < MAX_DRAIN_WAIT_MS; waited += 50) await sleep(50);
    if (at !== connection) return;
    fetched = true;
    await dispatch({ type: 'probeContacts' });
    onFetched();
    again = true; // derive again without yesterday's handles, and UNLISTEN them
  }

  /**
   * The server dropped `handle` from this connection's set to make room (HANDLE_DROPPED): it is LISTENed again
   * after DROPPED_RETRY_MS (then the mailbox holds what came to it meanwhile). True for the first drop since the
   * last retry, so the page says it once.
   */
  function dropped(handle) {
    if (!listened.delete(handle)) return false;
    const first = retryTimer === null;
    if (first) {
      retryTimer = clock.setTimeout(() => {
        retryTimer = null;
        changed();
      }, DROPPED_RETRY_MS);
    }
    return first;
  }

  return {
    changed,
    dropped,
    onSession,
    /** Listening handles on this connection (tests, diagnostics). */
    get listening() { return listened.size; },
  };
}
