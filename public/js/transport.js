// The WebSocket to /ws: CONNECT and resume, reconnection with backoff and jitter, `ref`s matched to their
// ACK / ERROR, keepalive PINGs, and liveness checks when the page wakes up. It knows nothing of keys or chat.
import { FRAME_OVERHEAD } from './envelope.js';

const BACKOFF_BASE_MS = 500;
// Below the server's default 30 s resume window, so a few attempts fit inside it.
const BACKOFF_CAP_MS = 8000;
const PING_EVERY_MS = 15000;
const SILENCE_LIMIT_MS = 40000; // two missed PONGs: the socket is dead even if the browser has not noticed
const PROBE_TIMEOUT_MS = 5000;
const TICK_MS = 5000;
const OFFLINE_RETRY_MS = 15000;
const TIMER_JUMP_MS = 20000; // the page slept (laptop lid, background tab): check the socket
// Announced in CONNECT. A version 2 server says so in its reply and sends FRIEND_CANCEL; a version 1 server
// ignores the field (unknown fields are ignored, PROTOCOL §2) and the client works with it as before.
const PROTOCOL_VERSION = 2;
const ANSWERS = new Set(['ACK', 'ERROR', 'LISTENING', 'FETCHED']);

/**
 * The largest `max_message_bytes` the client takes from a server's CONNECT reply. A server may be run with up
 * to 16 MiB; a larger limit than this is used as this (the composer and incoming messages both follow it), so
 * a server cannot announce its way past the frame ceiling below.
 */
export const CLIENT_MAX_MESSAGE_BYTES = 1 << 20;
/** The server's default `max_message_bytes`, assumed until a CONNECT reply says otherwise (as model.js does). */
export const DEFAULT_MAX_MESSAGE_BYTES = 65536;

/**
 * The limits the client takes from a CONNECT reply: `max_message_bytes` kept within 0..CLIENT_MAX_MESSAGE_BYTES,
 * or nothing when the reply has no whole number there (the limit known before stays).
 */
export function clampLimits(limits) {
  const announced = limits && typeof limits === 'object' ? limits.max_message_bytes : undefined;
  if (!Number.isSafeInteger(announced)) return {};
  return { max_message_bytes: Math.min(Math.max(announced, 0), CLIENT_MAX_MESSAGE_BYTES) };
}

/**
 * The longest incoming frame read, in UTF-16 code units (a string's length; never more than its UTF-8 bytes):
 * the clamped limit plus the forwarding overhead, and never less than twice the default limit plus it (the
 * CONNECT reply's friend list is not bounded by the limit: 132,096 holds about 4,500 friends). Anything longer
 * is dropped before JSON.parse: a lying server's frame of any size would otherwise be parsed and held.
 */
export function frameCeiling(maxMessageBytes) {
  const limit = Number.isSafeInteger(maxMessageBytes) ? Math.min(maxMessageBytes, CLIENT_MAX_MESSAGE_BYTES) : DEFAULT_MAX_MESSAGE_BYTES;
  return Math.max(2 * DEFAULT_MAX_MESSAGE_BYTES, limit) + FRAME_OVERHEAD;
}

/** Error carried by a rejected request: a server ERROR code, or `offline` / `connection_lost`. */
export class RequestError extends Error {
  constructor(code, message) {
    super(message || code);
    this.name = 'RequestError';
    this.code = code;
  }
}

/**
 * @param {object} options
 * @param {string} options.url  ws(s)://host/ws
 * @param {(event: object) => void} options.onEvent  called in arrival order with
 *   {kind:'session', id, version, resumed, resumeAttempted, friends, limits} after each CONNECT reply
 *   (version: 2 when the server said so, else 1),
 *   {kind:'frame', frame} for every other server message that is not a matched ACK/ERROR/PONG,
 *   {kind:'status', status, retryInMs?, closeCode?} when the connection status changes.
 */
export function createTransport({ url, onEvent, WebSocketImpl = globalThis.WebSocket, random = Math.random }) {
  let socket = null;
  let session = null; // {id, token} of the last CONNECT reply: what a resume needs
  let status = 'idle';
  let attempts = 0;
  let reconnectTimer = null;
  let probeTimer = null;
  let lastFrameAt = 0;
  let lastTickAt = Date.now();
  let nextRef = 1;
  let ceiling = frameCeiling(DEFAULT_MAX_MESSAGE_BYTES); // follows the last CONNECT reply's (clamped) limit
  let droppedFrames = 0;
  let leaving = false;
  let stopped = false;
  const pending = new Map(); // ref -> {resolve, reject}

  const pingTimer = setInterval(keepAlive, PING_EVERY_MS);
  const tickTimer = setInterval(watchClock, TICK_MS);

  function setStatus(next, extra = {}) {
    status = next;
    onEvent({ kind: 'status', status: next, ...extra });
  }

  function open() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (stopped) return;
    setStatus(session ? 'resuming' : 'connecting');
    let ws;
    try {
      ws = new WebSocketImpl(url);
    } catch {
      scheduleReconnect();
      return;
    }
    socket = ws;
    ws.onopen = () => {
      lastFrameAt = Date.now();
      const connect = { type: 'CONNECT', version: PROTOCOL_VERSION };
      if (session) connect.resume = { id: session.id, token: session.token };
      ws.send(JSON.stringify(connect));
    };
    ws.onmessage = (event) => {
      if (ws !== socket) return;
      lastFrameAt = Date.now();
      clearTimeout(probeTimer); // any frame proves the socket alive
      handleFrame(event.data);
    };
    ws.onclose = (event) => {
      if (ws !== socket) return;
      connectionLost(event.code);
    };
    ws.onerror = () => {}; // onclose follows and carries what we need
  }

  function handleFrame(data) {
    // The server sends text frames of at most max_message_bytes + 1024 bytes (PROTOCOL §1, §3). A longer one, or
    // a binary one, is not parsed at all: only its length is looked at.
    if (typeof data !== 'string' || data.length > ceiling) {
      droppedFrames += 1;
      if (droppedFrames === 1) {
        const size = typeof data === 'string' ? `of ${data.length.toLocaleString('en-US')} characters` : 'in binary';
        console.warn(`SecChat dropped a server frame ${size} unread (the most it reads is ${ceiling.toLocaleString('en-US')}). Later ones are only counted.`);
      }
      return;
    }
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the server only sends JSON; anything else is not ours to interpret
    }
    if (!frame || typeof frame !== 'object') return;
    if (frame.type === 'CONNECT') {
      const resumeAttempted = Boolean(session);
      session = { id: frame.id, token: frame.token };
      attempts = 0;
      status = 'online';
      const limits = clampLimits(frame.limits);
      if (limits.max_message_bytes !== undefined) ceiling = frameCeiling(limits.max_message_bytes);
      onEvent({
        kind: 'session',
        id: frame.id,
        version: frame.version === 2 ? 2 : 1,
        resumed: frame.resumed === true,
        resumeAttempted,
        friends: Array.isArray(frame.friends) ? frame.friends : [],
        limits,
      });
      onEvent({ kind: 'status', status: 'online' });
      return;
    }
    if (frame.type === 'PONG') return;
    // LISTENING and FETCHED (PROTOCOL §10) answer LISTEN / UNLISTEN / FETCH the way ACK answers the rest.
    if (ANSWERS.has(frame.type) && typeof frame.ref === 'string' && pending.has(frame.ref)) {
      const waiter = pending.get(frame.ref);
      pending.delete(frame.ref);
      if (frame.type !== 'ERROR') waiter.resolve(frame);
      else waiter.reject(new RequestError(frame.code, frame.message));
      return;
    }
    onEvent({ kind: 'frame', frame });
  }

  function connectionLost(closeCode) {
    socket = null;
    clearTimeout(probeTimer);
    for (const waiter of pending.values()) waiter.reject(new RequestError('connection_lost'));
    pending.clear();
    if (leaving) {
      stopped = true;
      setStatus('left', { closeCode });
      return;
    }
    if (closeCode === 4001) {
      // Another tab or device resumed this session: fighting over it would bounce both forever.
      stopped = true;
      setStatus('taken_over', { closeCode });
      return;
    }
    scheduleReconnect(closeCode);
  }

  function scheduleReconnect(closeCode) {
    if (stopped) return;
    clearTimeout(reconnectTimer);
    if (navigator.onLine === false) {
      // No network: attempts would only fail. The `online` event calls check(); the timer is a fallback
      // for browsers that miss it.
      reconnectTimer = setTimeout(open, OFFLINE_RETRY_MS);
      setStatus('offline', { closeCode });
      return;
    }
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempts);
    // Jitter keeps many clients from reconnecting in lock-step after a server restart.
    const delay = Math.round(ceiling * (0.5 + random() / 2));
    attempts += 1;
    reconnectTimer = setTimeout(open, delay);
    setStatus('reconnecting', { retryInMs: delay, closeCode });
  }

  /** Drops the current socket without waiting for a closing handshake that may never come. */
  function abandonSocket() {
    const ws = socket;
    if (!ws) return;
    socket = null;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close(4000, 'client reconnecting');
    } catch {
      // already closing
    }
    connectionLost(1006);
  }

  function isOpen() {
    return status === 'online' && socket !== null && socket.readyState === 1;
  }

  function sendRaw(frame) {
    if (!isOpen()) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  /** Sends a client message with a `ref`; resolves with the ACK, rejects with a RequestError. */
  function request(frame) {
    const ref = frame.ref || `r${nextRef++}`;
    const withRef = { ...frame, ref };
    return new Promise((resolve, reject) => {
      if (!isOpen()) {
        reject(new RequestError('offline'));
        return;
      }
      pending.set(ref, { resolve, reject });
      socket.send(JSON.stringify(withRef));
    });
  }

  function keepAlive() {
    if (!isOpen()) return;
    if (Date.now() - lastFrameAt > SILENCE_LIMIT_MS) {
      abandonSocket();
      return;
    }
    sendRaw({ type: 'PING' });
  }

  function watchClock() {
    const now = Date.now();
    const jumped = now - lastTickAt > TIMER_JUMP_MS;
    lastTickAt = now;
    if (jumped) check();
  }

  /**
   * Called when the page may have slept or the network changed: reconnect now if the socket is gone,
   * otherwise prove it alive with a PING that must be answered within a few seconds.
   */
  function check() {
    if (stopped) return;
    if (navigator.onLine === false) return;
    if (!socket) {
      attempts = 0;
      open();
      return;
    }
    if (!isOpen()) return; // still connecting
    clearTimeout(probeTimer);
    probeTimer = setTimeout(abandonSocket, PROBE_TIMEOUT_MS);
    sendRaw({ type: 'PING', ref: 'probe' });
  }

  /** The browser says the network went away: stop trusting the socket, retry when it is back. */
  function networkLost() {
    if (stopped) return;
    abandonSocket();
  }

  /** Graceful leave (DISCONNECT): the session ends at once on the server. */
  async function leave() {
    leaving = true;
    try {
      await request({ type: 'DISCONNECT' });
    } catch {
      // offline or already gone: the session ends with its resume window anyway
    }
    stopped = true;
    if (socket) abandonSocket();
    else if (status !== 'left') setStatus('left');
  }

  /** Forgets the session and starts a new one (after leaving, or after a takeover). */
  function restart() {
    leaving = false;
    stopped = false;
    session = null;
    attempts = 0;
    if (socket) abandonSocket();
    open();
  }

  function start() {
    open();
  }

  function shutdown() {
    stopped = true;
    clearInterval(pingTimer);
    clearInterval(tickTimer);
    clearTimeout(reconnectTimer);
    if (socket) abandonSocket();
  }

  return {
    start,
    request,
    check,
    networkLost,
    leave,
    restart,
    shutdown,
    isOnline: isOpen,
    get status() { return status; },
    get sessionId() { return session ? session.id : null; },
    /** Server frames dropped unread for their size or type (see frameCeiling). */
    get droppedFrames() { return droppedFrames; },
  };
}
