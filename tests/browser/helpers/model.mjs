// Driving the client's domain (public/js/transition.js) under Node: every step checks that the state it was
// given is left exactly as it was, and scenarios are built from the same events the wiring feeds in.
import assert from 'node:assert/strict';
import { buildEnvelope } from '../../../public/js/envelope.js';
import { createModel } from '../../../public/js/model.js';
import { transition } from '../../../public/js/transition.js';

export const NOW = 1_800_000_000_000;
export const ME = 'MMMMMM';
export const OWN_FP = 'A'.repeat(40);
export const MAX_MESSAGE_BYTES = 65536;

/** A friend's key as the crypto worker reports it, plus the armored text it came in. */
export function keyOf(name, hexDigit) {
  return {
    fingerprint: hexDigit.repeat(40),
    userId: name,
    publicArmored: `-----BEGIN PGP PUBLIC KEY BLOCK-----\n${name} ${hexDigit}\n-----END PGP PUBLIC KEY BLOCK-----`,
  };
}

export const BOB = 'B0B0B0';
export const BOB_KEY = keyOf('Bob', 'B');
export const CAROL = 'CCCCCC';
export const CAROL_KEY = keyOf('Carol', 'C');
export const DAN = 'D0D0D0';
export const DAN_KEY = keyOf('Dan', 'E');

/**
 * One transition; fails the test if it changed the state it was given. Returns {state, effects}.
 * Events get `now` (NOW unless the event says otherwise), as the wiring stamps them.
 */
export function step(state, event) {
  const before = structuredClone(state);
  const result = transition(state, { now: NOW, ...event });
  assert.deepStrictEqual(state, before, `${event.type} changed the state it was given`);
  return result;
}

/** Several steps in a row; returns the last result, with every effect along the way in `all`. */
export function steps(state, ...events) {
  let result = { state, effects: [] };
  const all = [];
  for (const event of events) {
    result = step(result.state, event);
    all.push(...result.effects);
  }
  return { ...result, all };
}

/** The effects of one type. */
export const effectsOf = (result, type) => result.effects.filter((effect) => effect.type === type);

/** A user whose key is ready and who has a new session with ID ME. */
export function online({ epoch } = {}) {
  let { state } = step(createModel(), { type: 'identityReady', fingerprint: OWN_FP });
  ({ state } = step(state, { type: 'connected', id: ME, version: 2, resumed: false, resumeAttempted: false, friends: [], limits: { max_message_bytes: MAX_MESSAGE_BYTES } }));
  if (epoch !== undefined) state = { ...state, session: { ...state.session, epoch } };
  return state;
}

export const frame = (body, extra = {}) => ({ type: 'frame', frame: body, epoch: 0, ...extra });

/** The crypto worker's answer for a key, as effects.js dispatches it. */
export function keyChecked(effect, key, extra = {}) {
  return {
    type: 'keyChecked', purpose: effect.purpose, from: effect.from, publicArmored: effect.publicArmored,
    key: key ? { fingerprint: key.fingerprint, userId: key.userId } : null,
    refusal: key ? null : { code: 'policy', message: 'This key uses an algorithm SecChat does not accept.' },
    epoch: effect.epoch,
    ...extra,
  };
}

/** We ask `id` to be our friend and they accept with `key`. */
export function befriend(state, id, key) {
  let result = step(state, { type: 'requestSent', id, unsure: false });
  result = step(result.state, frame({ type: 'FRIEND_ACCEPT', from: id, public_key: key.publicArmored }, { epoch: result.state.session.epoch }));
  const [check] = effectsOf(result, 'checkKey');
  assert.ok(check, 'the acceptance asked for its key to be checked');
  return step(result.state, keyChecked(check, key)).state;
}

/** The payload the crypto worker would have opened: the §6 envelope text from a friend. */
export function envelope(seq, text, ts = NOW) {
  return buildEnvelope({ to: OWN_FP, seq, ts, text });
}

/** A MESSAGE from `id` opened by the worker as `opened` ({ok, text} or {ok:false, problem}). */
export function receive(state, id, opened, { ts = NOW, now = NOW } = {}) {
  const arrived = step(state, { ...frame({ type: 'MESSAGE', from: id, payload: '-----BEGIN PGP MESSAGE-----\nx', ts }), now });
  const [open] = effectsOf(arrived, 'open');
  assert.ok(open, 'the message was handed to the crypto worker');
  const result = step(arrived.state, { type: 'opened', peer: open.peer, incoming: open.incoming, opened, now });
  return { ...result, line: result.state.friends.get(id).messages.at(-1) };
}

export const lines = (state, id) => state.friends.get(id).messages;
export const lastLine = (state, id) => lines(state, id).at(-1);
export const systemLines = (state, id) => lines(state, id).filter((m) => m.direction === 'system').map((m) => m.what);
