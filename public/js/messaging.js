// Chat messages: the outbox per friend (one MESSAGE in flight, so `seq` never skips or repeats on the
// wire), delivery states from ACK / ERROR / UNDELIVERED, and checking what arrives (§6).
import { JOB_BUDGET_MS } from './cryptoclient.js';
import { buildEnvelope, classifySeq, parseEnvelope } from './envelope.js';
import { FRAME_OVERHEAD } from './transport.js';
import { canSendTo } from './trust.js';

const BUSY_RETRIES = 4; // peer_busy / rate_limited: retry this often before showing the error
const BUSY_RETRY_BASE_MS = 1000;
// How far the sender's clock may be from ours. The sender's signed time is compared with OUR receive time,
// never with the server's `ts`: a replaying server would simply send the original `ts` again.
const CLOCK_SKEW_MS = 10 * 60 * 1000;
// A message may legitimately arrive this late: the server queues it while we are away for at most its
// resume window (`--resume-grace`, 30 s by default; not announced to clients, so the default is assumed).
const QUEUE_DELAY_MS = 30 * 1000;

let nextLocalId = 1;

/** Human text for the ERROR codes a MESSAGE can get, and for local failures. */
export const SEND_ERROR_TEXT = {
  not_friends: 'not friends any more',
  not_encrypted: 'the server saw no encrypted payload',
  rate_limited: 'sending too fast; try again in a moment',
  peer_busy: 'your friend cannot receive right now',
  bad_id: 'invalid recipient ID',
  too_long: 'message too long for the server',
  encrypt_failed: 'could not encrypt',
  too_slow: `encrypting took more than ${JOB_BUDGET_MS / 1000} seconds`,
  session_lost: 'your session ended before it was sent',
  friend_gone: 'your friend has left',
  bad_request: 'the server rejected the request',
};

export const INCOMING_PROBLEM_TEXT = {
  bad_signature: 'NOT signed by this friend\'s pinned key',
  undecryptable: 'could not be decrypted with your key',
  malformed: 'malformed message envelope',
  version: 'unknown envelope version',
  wrong_recipient: 'addressed to another key (re-routed?)',
  replay: 'REPLAY: this sequence number was already received',
  replay_copy: 'REPLAY: a copy of a message received in an earlier friendship',
  replay_old: 'REPLAY: written before this friendship began (by the sender\'s signed clock)',
  key_changed: 'sent with a key you have not confirmed',
  oversized: 'payload too large',
  not_pgp: 'not an OpenPGP message',
  too_slow: `REFUSED: decrypting and checking it took more than ${JOB_BUDGET_MS / 1000} seconds`,
};

// What sealing adds around the envelope text, measured with OpenPGP.js 6.3.2: about 700 bytes with
// Curve25519 keys, 1,900 with RSA-4096 ones, plus the envelope's other fields; rounded up so that keys up to
// RSA-8192 fit too. Armor then costs 4/3 (base64) × 62/60 (60-character lines, each `\n` escaped in JSON).
const SEAL_OVERHEAD = 4096;
const ARMOR_GROWTH = (4 / 3) * (62 / 60);

/** Bytes a message text takes in the envelope: UTF-8 after JSON escaping, which is what the frame carries. */
export function envelopeTextBytes(text) {
  return new TextEncoder().encode(JSON.stringify(text)).length;
}

/**
 * The most envelope text bytes that surely fit one MESSAGE frame. Checked before sending, so a text that
 * could never go out stays in the composer instead of failing after it was cleared (seal() still checks
 * the real size).
 */
export function maxTextBytes(maxMessageBytes) {
  return Math.floor((maxMessageBytes - FRAME_OVERHEAD - SEAL_OVERHEAD) / ARMOR_GROWTH);
}

/** ECMAScript Dates hold ±8.64e15 ms; a server `ts` outside that would make rendering the message throw. */
const MAX_DATE_MS = 8.64e15;

export function isRepresentableTime(ms) {
  return Number.isFinite(ms) && Math.abs(ms) <= MAX_DATE_MS;
}

/** The sender's signed time is further from our receive time than clocks and queueing explain. */
export function isSkewed(sentTs, receivedAt) {
  return sentTs < receivedAt - CLOCK_SKEW_MS - QUEUE_DELAY_MS || sentTs > receivedAt + CLOCK_SKEW_MS;
}

/**
 * @param {object} options
 * @param {{seal: Function, open: Function}} options.pgp  the crypto worker (cryptoclient.js createCrypto)
 */
export function createMessaging({ state, transport, pgp, changed, onIncoming }) {
  const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function sendText(friend, text) {
    const message = {
      localId: nextLocalId++,
      direction: 'out',
      text,
      ts: Date.now(),
      state: 'waiting', // waiting | sending | delivered | queued | undelivered | error
      error: '',
      seq: 0,
      payload: null,
      ref: null,
      attempts: 0,
    };
    friend.messages.push(message);
    friend.outbox.push(message);
    changed();
    pump(friend);
    return message;
  }

  /** Puts a failed message back at the end of the conversation and the outbox. */
  function retry(friend, message) {
    if (message.state !== 'error' && message.state !== 'undelivered') return;
    const index = friend.messages.indexOf(message);
    if (index >= 0) friend.messages.splice(index, 1);
    friend.messages.push(message);
    Object.assign(message, { state: 'waiting', error: '', payload: null, seq: 0, attempts: 0, ts: Date.now() });
    friend.outbox.push(message);
    changed();
    pump(friend);
  }

  function fail(friend, message, code) {
    message.state = 'error';
    message.error = code;
    if (message.payload && message.seq === friend.sendSeq) {
      // Nothing after it was sent yet (one in flight), so its seq can be reused without a gap.
      friend.sendSeq = message.seq - 1;
    }
    message.payload = null;
    friend.outbox.shift();
  }

  async function pump(friend) {
    if (friend.pumping) return;
    friend.pumping = true;
    try {
      while (friend.outbox.length > 0 && transport.isOnline() && canSendTo(friend)) {
        const message = friend.outbox[0];
        if (!message.payload) {
          const sealed = await seal(friend, message);
          if (!sealed) continue;
        }
        const frame = { type: 'MESSAGE', to: friend.id, payload: message.payload, ref: `m${message.localId}.${message.attempts}` };
        message.ref = frame.ref;
        message.state = 'sending';
        changed();
        try {
          const ack = await transport.request(frame);
          message.state = ack.queued === true ? 'queued' : 'delivered';
          friend.outbox.shift();
        } catch (error) {
          if (error.code === 'offline' || error.code === 'connection_lost') {
            // Kept with its payload and seq: sent again as is after the resume.
            message.state = 'waiting';
            break;
          }
          if ((error.code === 'peer_busy' || error.code === 'rate_limited') && message.attempts < BUSY_RETRIES) {
            message.attempts += 1;
            message.state = 'waiting';
            changed();
            await delay(BUSY_RETRY_BASE_MS * 2 ** (message.attempts - 1));
            continue;
          }
          fail(friend, message, error.code);
        }
        changed();
      }
    } finally {
      friend.pumping = false;
      changed();
    }
  }

  /** Encrypts the head of the outbox with the next seq; false when it could not be sent at all. */
  async function seal(friend, message) {
    const seq = friend.sendSeq + 1;
    const envelopeText = buildEnvelope({ to: friend.fingerprint, seq, ts: message.ts, text: message.text });
    let payload;
    try {
      payload = await pgp.seal(envelopeText, friend.publicArmored);
    } catch (error) {
      fail(friend, message, error.code === 'too_slow' ? 'too_slow' : 'encrypt_failed');
      return false;
    }
    const frameBytes = new TextEncoder().encode(JSON.stringify({ type: 'MESSAGE', to: friend.id, payload, ref: 'm0000000.0' })).length;
    // The server closes the whole connection (1009) on an oversized message, and the friend's copy is bigger.
    if (frameBytes + FRAME_OVERHEAD > state.session.limits.max_message_bytes) {
      fail(friend, message, 'too_long');
      return false;
    }
    message.payload = payload;
    message.seq = seq;
    friend.sendSeq = seq;
    return true;
  }

  function pumpAll() {
    for (const friend of state.friends.values()) pump(friend);
  }

  /** Outgoing messages that can no longer reach this friend (friendship or session over). */
  function abandonOutbox(friend, code) {
    for (const message of friend.outbox) {
      message.state = message.payload ? 'undelivered' : 'error';
      message.error = code;
    }
    friend.outbox.length = 0;
    changed();
  }

  function markUndelivered(ref) {
    for (const friend of state.friends.values()) {
      const message = friend.messages.find((m) => m.direction === 'out' && m.ref === ref);
      if (message) {
        message.state = 'undelivered';
        message.error = 'friend_gone';
        changed();
        return;
      }
    }
  }

  /** A friend came back within its resume window: what was queued for it has been handed over. */
  function queuedDelivered(friend) {
    for (const message of friend.messages) {
      if (message.direction === 'out' && message.state === 'queued') message.state = 'delivered';
    }
  }

  /** Decrypts and checks one MESSAGE from a friend, then appends it to the conversation. */
  async function receive(friend, frame) {
    const incoming = {
      localId: nextLocalId++,
      direction: 'in',
      text: null,
      ts: isRepresentableTime(frame.ts) ? frame.ts : Date.now(),
      receivedAt: Date.now(), // our own clock: the server's `ts` proves nothing
      friendship: friend.friendship, // which of this ID's friendships it arrived in
      sentTs: null,
      skewed: false, // sentTs is too far from receivedAt (see isSkewed)
      seq: null,
      verified: false,
      duplicate: false, // the same signed message received again (a re-send after a dropped connection)
      problems: [],
      missing: 0,
      hidden: false, // text withheld until the user asks (signature not by the pinned key)
    };
    const payload = frame.payload;
    if (typeof payload !== 'string' || !payload.startsWith('-----BEGIN PGP MESSAGE-----')) {
      incoming.problems.push('not_pgp');
    } else if (payload.length > state.session.limits.max_message_bytes + FRAME_OVERHEAD) {
      incoming.problems.push('oversized');
    } else {
      await check(friend, payload, incoming);
    }
    if (incoming.sentTs !== null) incoming.skewed = isSkewed(incoming.sentTs, incoming.receivedAt);
    friend.messages.push(incoming);
    if (!incoming.duplicate) onIncoming(friend, incoming);
    changed();
  }

  async function check(friend, payload, incoming) {
    const opened = await pgp.open(payload, friend.publicArmored).catch((error) => ({
      ok: false, problem: error.code === 'too_slow' ? 'too_slow' : 'undecryptable', detail: error.message,
    }));
    if (!opened.ok) {
      incoming.problems.push(opened.problem);
      // Not from the pinned key: shown only on the user's explicit "show anyway", and then still flagged.
      if (opened.text !== undefined) incoming.text = textOfUntrusted(opened.text);
      incoming.hidden = true;
      return;
    }
    const parsed = parseEnvelope(opened.text, state.identity.fingerprint);
    if (!parsed.ok) {
      incoming.problems.push(parsed.problem);
      if (parsed.envelope) incoming.text = parsed.envelope.text;
      return;
    }
    const { envelope } = parsed;
    incoming.text = envelope.text;
    incoming.sentTs = envelope.ts;
    incoming.seq = envelope.seq;
    const order = classifySeq(friend.expectedSeq, envelope.seq);
    friend.expectedSeq = order.nextExpected;
    const firstSeenIn = rememberSigned(friend, envelope);
    if (order.kind === 'replay' && firstSeenIn === friend.friendship && friend.trust !== 'changed'
      && !friend.copiesShown.has(envelope.seq) && isCopyOfReceived(friend, envelope)) {
      // At-least-once delivery re-sends a message whose ACK was lost with the connection: the same seq, time
      // and text as one already shown as verified in this friendship. Quiet once per seq; a second copy is
      // no longer explained by a re-send, and is a REPLAY.
      friend.copiesShown.add(envelope.seq);
      incoming.duplicate = true;
      return;
    }
    // `seq` restarts with each friendship, so a server that fakes the end of one and the start of the next
    // can replay the recorded conversation in order: only the signed time and text give it away.
    if (firstSeenIn !== friend.friendship) incoming.problems.push('replay_copy');
    else if (envelope.ts < friend.friendshipStartedAt - CLOCK_SKEW_MS) incoming.problems.push('replay_old');
    if (order.kind === 'replay') incoming.problems.push('replay');
    if (order.kind === 'gap') incoming.missing = order.missing;
    if (friend.trust === 'changed') incoming.problems.push('key_changed');
    incoming.verified = incoming.problems.length === 0;
  }

  function isCopyOfReceived(friend, envelope) {
    return friend.messages.some((m) => m.direction === 'in' && m.verified && m.friendship === friend.friendship
      && m.seq === envelope.seq && m.sentTs === envelope.ts && m.text === envelope.text);
  }

  /**
   * Records a signed (key, time, text) for the page's life and returns the number of the friendship it was
   * first received in (numbers are unique in the page). Kept apart from the conversations, which the user can
   * close.
   */
  function rememberSigned(friend, envelope) {
    const key = `${friend.fingerprint}\n${envelope.ts}\n${envelope.text}`;
    if (!state.signedSeen.has(key)) state.signedSeen.set(key, friend.friendship);
    return state.signedSeen.get(key);
  }

  /** The text of an envelope that failed the signature check, or the raw text when it is no envelope. */
  function textOfUntrusted(text) {
    try {
      const value = JSON.parse(text);
      if (value && typeof value.text === 'string') return value.text;
    } catch {
      // not JSON: show the raw text
    }
    return text;
  }

  return { sendText, retry, pump, pumpAll, abandonOutbox, markUndelivered, queuedDelivered, receive };
}
