// Carries out the effects the domain's transitions ask for (transition.js): frames through the transport, key
// checks and payloads through the crypto workers, timers, and the page's reactions (notices, notifications,
// unread counts), which `page` supplies. Each outcome goes back in as an event through `dispatch`.
//
// `checkKey` and `open` are ordered: run() resolves only once they, and the events they lead to, are done, so the
// per-peer event queue (peerqueue.js) holds a peer's next frame until its key or message is handled. Sealing
// and sending are not: a friend's busy backoff must never hold up the frames that friend sends us.
import { MAX_RECEIPT_ACKS, buildControlEnvelope } from './envelope.js';
import { matchInviteProof, newInviteSecret } from './inviteproof.js';
import { contactTag, toBase64Url } from './rendezvous.js';
import { noticeText, notificationText } from './text.js';

/** Control envelopes go out at most one per this long (see createEffects). */
export const CONTROL_EVERY_MS = 50;
/** Control envelopes waiting at once, at most: a few per contact (MAX_CONTACTS 1,173) at the very most. */
export const MAX_CONTROL_QUEUED = 4096;
/** How long a control envelope waits for the server's answer before it counts as refused. */
export const CONTROL_ANSWER_MS = 10000;

/**
 * @param {object} options
 * @param {{request: (frame: object) => Promise<object>}} options.transport
 * @param {{readFriendKey: Function, seal: Function, open: Function}} options.pgp  the crypto workers (cryptoclient.js)
 * @param {(event: object) => Promise<void>} options.dispatch
 * @param {{notice: Function, notify: Function, incoming: Function, show: Function, moved: Function, error: Function}} options.page
 * @param {() => Promise<void>} [options.persist]  resolves once the contact book in storage holds the current
 *   state (contactstore.js): awaited before a message that says `persist` and before every receipt
 * @param {number} [options.controlAnswerMs]  how long a control envelope waits for the server's answer
 * @param {number} [options.maxControlQueued]  control envelopes waiting at once, at most
 * @param {{fromContact: Function}} [options.groups]  groupsync.js: a group envelope a contact sent us
 */
export function createEffects({
  transport, pgp, dispatch, page, persist = async () => {}, controlAnswerMs = CONTROL_ANSWER_MS, maxControlQueued = MAX_CONTROL_QUEUED,
  groups = { fromContact: async () => {} },
}) {
  const later = (promise) => promise.catch(page.error);
  // A stale book after a reload would use this seq again, or take a receipted message for a new one.
  const durable = () => Promise.resolve().then(persist).catch(page.error);

  // Control envelopes (contacts.js) wait in two queues and go out one at a time, at most one per
  // CONTROL_EVERY_MS (the server's default MESSAGE rate is 50 per second, shared with chat messages and LISTEN:
  // a book of 1,000 contacts is probed in about 50 s, not in one burst). Receipts go first: a message's sender
  // waits for them, and nothing a server replays (probes) may hold them up. Whatever a server replays, each
  // friend has at most one receipt and one probe answer waiting (later ones are merged into it), and both
  // queues together hold at most MAX_CONTROL_QUEUED envelopes (beyond, one is dropped and reported as failed).
  // A server that never answers one is given CONTROL_ANSWER_MS, so it cannot stall the queue either.
  const receiptQueue = [];
  const otherQueue = [];
  let draining = false;
  const pendingReceipts = new Map(); // peer -> {acks, route}: the receipt waiting in the queue for that friend
  const pendingAnswers = new Map(); // peer -> {fields, route}: the `here` answer waiting for that friend
  const pace = (task, first) => {
    if (receiptQueue.length + otherQueue.length >= maxControlQueued) return false;
    (first ? receiptQueue : otherQueue).push(task);
    if (!draining) drain();
    return true;
  };
  async function drain() {
    draining = true;
    while (receiptQueue.length + otherQueue.length > 0) {
      const task = receiptQueue.length ? receiptQueue.shift() : otherQueue.shift();
      await task().catch(page.error);
      await new Promise((resolve) => setTimeout(resolve, CONTROL_EVERY_MS));
    }
    draining = false;
  }
  /** `request` with an end: a server that never answers counts as a refusal (`no_answer`). */
  function answered(frame) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(Object.assign(new Error('no answer'), { code: 'no_answer' })), controlAnswerMs);
    });
    return Promise.race([transport.request(frame), timeout]).finally(() => clearTimeout(timer));
  }

  const ORDERED = {
    async checkKey({ purpose, from, publicArmored, epoch, invite, inviteSecrets, ownFingerprint }) {
      let key = null;
      let refusal = null;
      let viaInvite = null;
      try {
        const { fingerprint, userId } = await pgp.readFriendKey(publicArmored);
        key = { fingerprint, userId };
        if (invite) viaInvite = await matchInviteProof(invite, inviteSecrets, fingerprint, ownFingerprint);
      } catch (error) {
        if (!key) refusal = { code: error && error.code, message: error && error.message };
      }
      await dispatch({ type: 'keyChecked', purpose, from, publicArmored, key, refusal, epoch, viaInvite });
    },
    async open({ peer, payload, publicArmored, incoming }) {
      const opened = await pgp.open(payload, publicArmored).catch((error) => ({
        ok: false, problem: error.code === 'too_slow' ? 'too_slow' : 'undecryptable', detail: error.message,
      }));
      await dispatch({ type: 'opened', peer, incoming, opened });
    },
    // Ordered like `open`: a contact's version comes before the keys it sends after it.
    async groupFromContact({ peer, text }) {
      await groups.fromContact({ peer, text }).catch(page.error);
    },
  };

  const BACKGROUND = {
    send({ frame }) {
      transport.request(frame).catch(() => {});
    },
    seal({ peer, localId, friendship, seq, envelope, publicArmored }) {
      later(pgp.seal(envelope, publicArmored).then(
        (payload) => dispatch({ type: 'sealed', peer, localId, friendship, seq, payload }),
        (error) => dispatch({ type: 'sealFailed', peer, localId, code: error.code === 'too_slow' ? 'too_slow' : 'encrypt_failed' }),
      ));
    },
    transmit({ peer, localId, frame, persist: first }) {
      later((first ? durable() : Promise.resolve()).then(() => transport.request(frame)).then(
        (ack) => dispatch({ type: 'acked', peer, localId, queued: ack.queued === true }),
        (error) => dispatch({ type: 'sendFailed', peer, localId, code: error.code }),
      ));
    },
    retryLater({ peer, localId, ms }) {
      setTimeout(() => later(dispatch({ type: 'backoffOver', peer, localId })), ms);
    },
    notice({ code, ...details }) {
      page.notice(noticeText(code, details));
    },
    notify({ what, from }) {
      page.notify(notificationText(what, from));
    },
    incoming({ from, flagged }) {
      page.incoming(from, flagged);
    },
    show({ id }) {
      page.show(id);
    },
    moved({ from, to }) {
      page.moved(from, to);
    },
    /**
     * Seals a §6 control envelope (contacts.js), bound to the contact by the tag of `bindTo` (their secret, when
     * known), and sends it; the outcome goes back as controlSent.
     */
    sendControl({ peer, purpose, kind, fields, to, route, publicArmored, bindTo }) {
      if (kind === 'receipt') {
        // Receipts to one friend that wait for their turn are one envelope: a server replaying a message any
        // number of times (each copy a duplicate, each answered with its receipt) queues one, not one per copy.
        const waiting = pendingReceipts.get(peer);
        if (waiting) {
          for (const seq of fields.acks) if (waiting.acks.length < MAX_RECEIPT_ACKS && !waiting.acks.includes(seq)) waiting.acks.push(seq);
          waiting.route = route;
          return;
        }
        pendingReceipts.set(peer, { acks: [...fields.acks], route });
      } else if (purpose === 'answer') {
        // Likewise one answer per friend: the latest probe's nonce is the one worth echoing.
        const waiting = pendingAnswers.get(peer);
        pendingAnswers.set(peer, { fields, route });
        if (waiting) return;
      }
      const queued = pace(async () => {
        if (kind === 'receipt') {
          const waiting = pendingReceipts.get(peer);
          pendingReceipts.delete(peer);
          fields = { acks: waiting.acks };
          route = waiting.route;
          await durable();
        } else if (purpose === 'answer') {
          ({ fields, route } = pendingAnswers.get(peer));
          pendingAnswers.delete(peer);
        }
        const extra = { ...fields };
        if (kind === 'here') extra.nonce = toBase64Url(crypto.getRandomValues(new Uint8Array(16)));
        if (bindTo) extra.for = await contactTag(bindTo);
        if (purpose === 'probe') await dispatch({ type: 'probeSent', peer, nonce: extra.nonce });
        let code = null;
        try {
          const payload = await pgp.seal(buildControlEnvelope(kind, { to, ts: Date.now(), ...extra }), publicArmored);
          await answered({ type: 'MESSAGE', ...route, payload });
        } catch (error) {
          code = (error && error.code) || 'failed';
        }
        await dispatch({ type: 'controlSent', peer, purpose, code });
      }, kind === 'receipt');
      if (!queued) {
        if (kind === 'receipt') pendingReceipts.delete(peer);
        if (purpose === 'answer') pendingAnswers.delete(peer);
        later(dispatch({ type: 'controlSent', peer, purpose, code: 'dropped' }));
      }
    },
    inviteSecretNeeded() {
      later(dispatch({ type: 'inviteSecretCreated', secret: newInviteSecret() }));
    },
  };

  /** Starts the background effects at once, then runs the ordered ones one after the other; resolves when those are done. */
  async function run(effects) {
    const ordered = [];
    for (const effect of effects) {
      if (ORDERED[effect.type]) ordered.push(effect);
      else BACKGROUND[effect.type](effect);
    }
    for (const effect of ordered) await ORDERED[effect.type](effect);
  }

  return {
    run,
    /** Control envelopes waiting to go out (tests, diagnostics). */
    get controlQueued() { return receiptQueue.length + otherQueue.length; },
  };
}
