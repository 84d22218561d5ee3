// The §6 envelope inside each payload: building it, checking it, the per-friendship `seq` rules, and how much
// text fits one MESSAGE frame. Pure functions, so they are tested directly under Node as well.

const FINGERPRINT = /^[0-9A-F]{40}$/;

/** What the server adds to a forwarded MESSAGE (`from`, `ts`), PROTOCOL §3: the friend's copy is this much bigger. */
export const FRAME_OVERHEAD = 1024;

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
 * could never go out stays in the composer instead of failing after it was cleared (outbox.js still checks
 * the sealed size).
 */
export function maxTextBytes(maxMessageBytes) {
  return Math.floor((maxMessageBytes - FRAME_OVERHEAD - SEAL_OVERHEAD) / ARMOR_GROWTH);
}

/** JSON text of the envelope {v:1,to,seq,ts,text}. */
export function buildEnvelope({ to, seq, ts, text }) {
  return JSON.stringify({ v: 1, to, seq, ts, text });
}

/**
 * JSON text of a version-2 control envelope (§6 "Kinds"): rendezvous, receipt, here or remove, with its `for`
 * tag (rendezvous.js contactTag) among the fields when the sender knows the recipient's secret. No `seq`.
 */
export function buildControlEnvelope(kind, { to, ts, ...fields }) {
  return JSON.stringify({ v: 1, kind, to, ts, ...fields });
}

/** Receipts list at most this many seqs: a crafted receipt cannot make the page walk a huge list. */
export const MAX_RECEIPT_ACKS = 256;
const NONCE = /^[A-Za-z0-9_-]{22}$/;
const SECRET = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;
const isSeq = (n) => Number.isSafeInteger(n) && n >= 1;

/** The kind-specific fields of a control envelope, with its `for` tag if any, checked; null when not well formed. */
function controlFields(value) {
  if (value.for !== undefined && (typeof value.for !== 'string' || !SECRET.test(value.for))) return null;
  const fields = kindFields(value);
  return fields && value.for !== undefined ? { ...fields, for: value.for } : fields;
}

function kindFields(value) {
  switch (value.kind) {
    case 'rendezvous':
      return SECRET.test(value.secret) ? { secret: value.secret } : null;
    case 'receipt':
      return Array.isArray(value.acks) && value.acks.length >= 1 && value.acks.length <= MAX_RECEIPT_ACKS && value.acks.every(isSeq)
        ? { acks: [...new Set(value.acks)] } : null;
    case 'here':
      if (typeof value.nonce !== 'string' || !NONCE.test(value.nonce)) return null;
      if (value.re !== undefined && (typeof value.re !== 'string' || !NONCE.test(value.re))) return null;
      return value.re === undefined ? { nonce: value.nonce } : { nonce: value.nonce, re: value.re };
    case 'remove':
      return {};
    default:
      return null;
  }
}

export const CONTROL_KINDS = new Set(['rendezvous', 'receipt', 'here', 'remove']);

/**
 * Checks a decrypted envelope against §6. Returns {ok:true, envelope} or {ok:false, problem, envelope?}
 * with problem `malformed` (not the envelope shape), `version` (v is not 1), `unknown_kind` (a `kind` this
 * client does not know) or `wrong_recipient` (`to` is not our fingerprint: the server re-routed someone
 * else's message). Unknown fields are ignored. A text envelope (no `kind`) is {to, seq, ts, text}; a control
 * envelope is {kind, to, ts, for?, …its fields} (no seq, no text); whether its `for` is this contact's is
 * contacts.js's to judge.
 */
export function parseEnvelope(text, ownFingerprint) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'malformed' };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, problem: 'malformed' };
  if (value.v !== 1) return { ok: false, problem: 'version' };
  const addressed = typeof value.to === 'string' && FINGERPRINT.test(value.to) && Number.isSafeInteger(value.ts) && value.ts >= 0;
  let envelope;
  if (value.kind === undefined) {
    const wellFormed = addressed && isSeq(value.seq) && typeof value.text === 'string';
    if (!wellFormed) return { ok: false, problem: 'malformed' };
    envelope = { to: value.to, seq: value.seq, ts: value.ts, text: value.text };
  } else {
    if (typeof value.kind !== 'string') return { ok: false, problem: 'malformed' };
    if (!CONTROL_KINDS.has(value.kind)) return { ok: false, problem: 'unknown_kind' };
    const fields = addressed ? controlFields(value) : null;
    if (!fields) return { ok: false, problem: 'malformed' };
    envelope = { kind: value.kind, to: value.to, ts: value.ts, ...fields };
  }
  if (value.to !== ownFingerprint) return { ok: false, problem: 'wrong_recipient', envelope };
  return { ok: true, envelope };
}

/**
 * Applies §6's rule for an accepted message's `seq` given the next expected one:
 * equal → in order; higher → gap (`missing` messages skipped, expectation continues after it);
 * lower → replay (expectation unchanged).
 */
export function classifySeq(expected, seq) {
  if (seq === expected) return { kind: 'in_order', missing: 0, nextExpected: seq + 1 };
  if (seq > expected) return { kind: 'gap', missing: seq - expected, nextExpected: seq + 1 };
  return { kind: 'replay', missing: 0, nextExpected: expected };
}
