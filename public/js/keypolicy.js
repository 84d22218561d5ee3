// Which OpenPGP keys SecChat accepts, decided on the raw packets before OpenPGP.js reads a signature. A key
// is the one thing any ID can make the client work on (FRIEND_REQUEST), and verifying a signature costs what
// the key's owner chose: an RSA key with a 16,384-bit modulus and public exponent takes seconds per signature
// in OpenPGP.js's pure-JS fallback. Within this policy every key costs milliseconds. Pure: no DOM, no
// OpenPGP.js, so it runs the same in the page, the crypto worker and Node.

/** The largest armored public key sent or accepted, counted as checkArmoredSize does (the server refuses
 * bigger ones with `key_too_large`, PROTOCOL §8). */
export const MAX_PUBLIC_KEY_BYTES = 16384;

// Longer texts are measured by their UTF-16 length only (see checkArmoredSize).
const MAX_MEASURED_TEXT = 1 << 20;

/** RSA modulus sizes accepted; the public exponent must be small (65537 is the usual one). */
export const RSA_MIN_BITS = 2048;
export const RSA_MAX_BITS = 4096;
export const RSA_MAX_EXPONENT_BITS = 33; // up to 2^32 + 1

/** Generous for real keys (GnuPG keys with several user IDs and years of subkeys), bounded for crafted ones. */
export const MAX_USER_IDS = 32; // user IDs and user attributes
export const MAX_SUBKEYS = 16;
export const MAX_SIGNATURES = 128;
export const MAX_PACKETS = 256;

const TAG = {
  SIGNATURE: 2, SECRET_KEY: 5, PUBLIC_KEY: 6, SECRET_SUBKEY: 7, MARKER: 10, TRUST: 12, USER_ID: 13,
  PUBLIC_SUBKEY: 14, USER_ATTRIBUTE: 17, PADDING: 21,
};

const ALGORITHM = { RSA: 1, RSA_ENCRYPT: 2, RSA_SIGN: 3, ECDH: 18, ECDSA: 19, EDDSA_LEGACY: 22, X25519: 25, ED25519: 27 };

const ALGORITHM_NAME = {
  16: 'ElGamal', 17: 'DSA', 20: 'ElGamal (sign)', 26: 'X448', 28: 'Ed448',
};

// Curve OIDs as hex of their DER contents (RFC 9580 §9.2).
const OID_CV25519 = '2b060104019755010501';
const OID_ED25519 = '2b06010401da470f01';
const CURVE_NAME = {
  '2a8648ce3d030107': 'NIST P-256',
  '2b81040022': 'NIST P-384',
  '2b81040023': 'NIST P-521',
  '2b8104000a': 'secp256k1',
  '2b2403030208010107': 'brainpoolP256r1',
  '2b240303020801010b': 'brainpoolP384r1',
  '2b240303020801010d': 'brainpoolP512r1',
  [OID_CV25519]: 'Curve25519',
  [OID_ED25519]: 'Ed25519',
};

// A curve point in an MPI: 0x40 then 32 bytes, 263 bits.
const MAX_POINT_BITS = 263;

const ACCEPTED = 'SecChat accepts Ed25519/Curve25519 keys, or RSA keys of 2,048 to 4,096 bits with a small public exponent such as 65537';

/**
 * The size of an armored public key as the server counts it (PROTOCOL §8): the UTF-8 bytes of the JSON string
 * as sent, escapes included (each line break is `\n`, two bytes), quotes excluded.
 * Returns {ok:true, bytes} or {ok:false, code:'key_too_large', bytes}.
 */
export function checkArmoredSize(text) {
  // Escaping and UTF-8 never make a string shorter than its UTF-16 length, so a huge one (only a lying server
  // sends those) is refused without encoding it, and its length is what the refusal says.
  const bytes = text.length > MAX_MEASURED_TEXT ? text.length : new TextEncoder().encode(JSON.stringify(text)).length - 2;
  return bytes > MAX_PUBLIC_KEY_BYTES ? { ok: false, code: 'key_too_large', bytes } : { ok: true, bytes };
}


/** "16,384 bytes": sizes in messages, grouped so they read at a glance. */
export function byteCount(bytes) {
  return `${bytes.toLocaleString('en-US')} bytes`;
}

/**
 * Checks the packets of one transferable key (public or secret, binary) against the policy. `who` starts the
 * sentence ("This key", "Your key"). Returns {ok:true, primary, subkeys} (algorithm descriptions) or
 * {ok:false, code, message} with code 'unsupported_key' (algorithm or size), 'too_many_parts' or 'not_a_key'.
 */
export function checkKeyPackets(bytes, who = 'This key') {
  let packets;
  try {
    packets = readPackets(bytes);
  } catch (error) {
    if (error.tooMany) return refuse('too_many_parts', `${who} has too many parts (more than ${MAX_PACKETS} packets).`);
    return refuse('not_a_key', `${who} is not a well-formed OpenPGP key (${error.message}).`);
  }
  let primary = null;
  const subkeys = [];
  let userIds = 0;
  let signatures = 0;
  for (const { tag, body } of packets) {
    switch (tag) {
      case TAG.PUBLIC_KEY:
      case TAG.SECRET_KEY:
        if (primary) return refuse('not_a_key', `${who} holds more than one key; give SecChat one key at a time.`);
        primary = describeKeyPacket(body);
        if (!primary.ok) return unsupported(who, primary.reason);
        break;
      case TAG.PUBLIC_SUBKEY:
      case TAG.SECRET_SUBKEY: {
        if (!primary) return refuse('not_a_key', `${who} is not a well-formed OpenPGP key (a subkey comes first).`);
        const subkey = describeKeyPacket(body);
        if (!subkey.ok) return unsupported(who, `a subkey is ${subkey.reason}`);
        subkeys.push(subkey.algorithm);
        break;
      }
      case TAG.USER_ID:
      case TAG.USER_ATTRIBUTE:
        userIds += 1;
        break;
      case TAG.SIGNATURE:
        signatures += 1;
        break;
      case TAG.MARKER:
      case TAG.TRUST:
      case TAG.PADDING:
        break;
      default:
        return refuse('not_a_key', `${who} is not an OpenPGP key (it holds a packet of type ${tag}).`);
    }
    if (!primary && tag !== TAG.MARKER) return refuse('not_a_key', `${who} is not a well-formed OpenPGP key (it does not start with a key).`);
  }
  if (!primary) return refuse('not_a_key', `${who} is not an OpenPGP key (no key packet).`);
  const counts = [
    [subkeys.length, MAX_SUBKEYS, 'subkeys'],
    [userIds, MAX_USER_IDS, 'user IDs'],
    [signatures, MAX_SIGNATURES, 'signatures'],
  ];
  for (const [count, max, what] of counts) {
    if (count > max) return refuse('too_many_parts', `${who} has too many ${what} (${count}; SecChat accepts at most ${max}).`);
  }
  return { ok: true, primary: primary.algorithm, subkeys };
}

function refuse(code, message) {
  return { ok: false, code, message };
}

function unsupported(who, reason) {
  return refuse('unsupported_key', `${who} uses an algorithm or size SecChat does not accept: ${reason}. ${ACCEPTED}.`);
}

/**
 * Splits binary OpenPGP data into packets (RFC 9580 §4.2), old and new format. Partial and indeterminate
 * lengths are for data packets, never for keys: refused. Throws on anything truncated or beyond MAX_PACKETS.
 */
export function readPackets(bytes) {
  const packets = [];
  let at = 0;
  while (at < bytes.length) {
    if (packets.length >= MAX_PACKETS) throw Object.assign(new Error(`more than ${MAX_PACKETS} packets`), { tooMany: true });
    const header = bytes[at];
    if ((header & 0x80) === 0) throw new Error('not a packet header');
    let tag;
    let length;
    at += 1;
    if (header & 0x40) {
      tag = header & 0x3f;
      const first = need(bytes, at, 1)[0];
      if (first < 192) {
        length = first;
        at += 1;
      } else if (first < 224) {
        length = ((first - 192) << 8) + need(bytes, at, 2)[1] + 192;
        at += 2;
      } else if (first === 255) {
        const b = need(bytes, at + 1, 4);
        length = ((b[0] << 24) >>> 0) + (b[1] << 16) + (b[2] << 8) + b[3];
        at += 5;
      } else {
        throw new Error('partial packet length in a key');
      }
    } else {
      tag = (header >> 2) & 0x0f;
      const lengthType = header & 0x03;
      if (lengthType === 3) throw new Error('indeterminate packet length in a key');
      const size = [1, 2, 4][lengthType];
      const b = need(bytes, at, size);
      length = 0;
      for (const byte of b) length = length * 256 + byte;
      at += size;
    }
    packets.push({ tag, body: need(bytes, at, length) });
    at += length;
  }
  return packets;
}

function need(bytes, at, count) {
  if (at + count > bytes.length) throw new Error('truncated');
  return bytes.subarray(at, at + count);
}

/**
 * The algorithm and size of a (public or secret) key packet, read from its public part only:
 * {ok:true, algorithm:'RSA 4096'} or {ok:false, reason}.
 */
export function describeKeyPacket(body) {
  try {
    const version = body[0];
    let at;
    if (version === 4) at = 6;
    else if (version === 6) at = 10; // v6 adds a four-octet length of the key material
    else return { ok: false, reason: `a version ${version} key (SecChat reads version 4 and 6 keys)` };
    need(body, 0, at);
    const algorithm = body[5];
    switch (algorithm) {
      case ALGORITHM.RSA:
      case ALGORITHM.RSA_ENCRYPT:
      case ALGORITHM.RSA_SIGN: {
        const n = readMpi(body, at);
        const e = readMpi(body, n.end);
        const wrong = [];
        if (n.bits < RSA_MIN_BITS || n.bits > RSA_MAX_BITS) wrong.push(`a ${n.bits.toLocaleString('en-US')}-bit modulus`);
        if (e.bits > RSA_MAX_EXPONENT_BITS) wrong.push(`a ${e.bits.toLocaleString('en-US')}-bit public exponent`);
        if (wrong.length > 0) return { ok: false, reason: `RSA with ${wrong.join(' and ')}` };
        return { ok: true, algorithm: `RSA ${n.bits}` };
      }
      case ALGORITHM.ECDH:
      case ALGORITHM.EDDSA_LEGACY: {
        const oidLength = need(body, at, 1)[0];
        const oid = hex(need(body, at + 1, oidLength));
        const wanted = algorithm === ALGORITHM.ECDH ? OID_CV25519 : OID_ED25519;
        const kind = algorithm === ALGORITHM.ECDH ? 'ECDH' : 'EdDSA';
        if (oid !== wanted) return { ok: false, reason: `${kind} on ${CURVE_NAME[oid] || 'an unknown curve'}` };
        const point = readMpi(body, at + 1 + oidLength);
        if (point.bits > MAX_POINT_BITS) return { ok: false, reason: `${kind} with a malformed ${point.bits}-bit point` };
        return { ok: true, algorithm: algorithm === ALGORITHM.ECDH ? 'Curve25519' : 'Ed25519' };
      }
      case ALGORITHM.X25519:
        need(body, at, 32);
        return { ok: true, algorithm: 'X25519' };
      case ALGORITHM.ED25519:
        need(body, at, 32);
        return { ok: true, algorithm: 'Ed25519' };
      case ALGORITHM.ECDSA: {
        const oid = hex(need(body, at + 1, need(body, at, 1)[0]));
        return { ok: false, reason: `ECDSA on ${CURVE_NAME[oid] || 'an unknown curve'}` };
      }
      default:
        return { ok: false, reason: ALGORITHM_NAME[algorithm] || `public-key algorithm ${algorithm}` };
    }
  } catch (error) {
    return { ok: false, reason: `a malformed key packet (${error.message})` };
  }
}

/** An MPI at `at`: its bit length (as it really is, whatever the header claims) and where it ends. */
function readMpi(body, at) {
  const header = need(body, at, 2);
  const declared = (header[0] << 8) + header[1];
  const value = need(body, at + 2, Math.ceil(declared / 8));
  let bits = 0;
  for (let i = 0; i < value.length; i += 1) {
    if (value[i] !== 0) {
      bits = (value.length - i - 1) * 8 + (32 - Math.clz32(value[i]));
      break;
    }
  }
  return { bits, end: at + 2 + value.length };
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
