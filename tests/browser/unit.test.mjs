// The client's pure modules (no DOM, no crypto) run under Node too: IDs, invite links, the §6 envelope, the
// key policy (fed with keys made here by OpenPGP.js and helpers/hostilekey.mjs), the per-peer event order.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as openpgp from 'openpgp';
import { buildEnvelope, classifySeq, parseEnvelope } from '../../public/js/envelope.js';
import { groupFingerprint, normalizeFingerprint, normalizeId } from '../../public/js/ids.js';
import { inviteLink, parseInvite } from '../../public/js/invite.js';
import { checkArmoredSize, checkKeyPackets } from '../../public/js/keypolicy.js';
import { CryptoError, createLane, refuseUnsent } from '../../public/js/cryptoclient.js';
import { createPeerQueue } from '../../public/js/peerqueue.js';
import { droppedText } from '../../public/js/text.js';
import { CLIENT_MAX_MESSAGE_BYTES, clampLimits, frameCeiling } from '../../public/js/transport.js';
import { hostileRsaKey } from './helpers/hostilekey.mjs';

const FPR = '0123456789ABCDEF0123456789ABCDEF01234567';

test('IDs are normalized like the server does (PROTOCOL §3), plus inner spaces for typing comfort', () => {
  assert.equal(normalizeId('K7Q2ZD'), 'K7Q2ZD');
  assert.equal(normalizeId('  k7q-2zd\t'), 'K7Q2ZD');
  assert.equal(normalizeId('k7q 2zd'), 'K7Q2ZD');
  assert.equal(normalizeId('oil-abc'), '011ABC');
  assert.equal(normalizeId('K7Q2Z'), null, 'too short');
  assert.equal(normalizeId('K7Q2ZDX'), null, 'too long');
  assert.equal(normalizeId('K7Q2ZU'), null, 'U is not in the alphabet');
  assert.equal(normalizeId('K7Q2ZＤ'), null, 'non-ASCII');
  assert.equal(normalizeId(42), null);
});

test('fingerprints are read in any spacing and shown in 4-hex groups', () => {
  assert.equal(normalizeFingerprint(groupFingerprint(FPR).toLowerCase()), FPR);
  assert.equal(groupFingerprint(FPR), '0123 4567 89AB CDEF 0123 4567 89AB CDEF 0123 4567');
  assert.equal(normalizeFingerprint('0123'), null);
  assert.equal(normalizeFingerprint(`${FPR}0`), null);
});

test('invite links round-trip and reject incomplete fragments', () => {
  const link = inviteLink({ origin: 'https://chat.example', pathname: '/' }, 'K7Q2ZD', FPR);
  assert.equal(link, `https://chat.example/#id=K7Q2ZD&fp=${FPR}`);
  assert.deepEqual(parseInvite(new URL(link).hash), { id: 'K7Q2ZD', fingerprint: FPR, secret: null });
  assert.deepEqual(parseInvite(`#id=k7q-2zd&fp=${FPR.toLowerCase()}`), { id: 'K7Q2ZD', fingerprint: FPR, secret: null });
  assert.equal(parseInvite('#id=K7Q2ZD'), null);
  assert.equal(parseInvite(`#fp=${FPR}`), null);
  assert.equal(parseInvite(`#id=K7Q2ZD&fp=${FPR.slice(1)}`), null);
  assert.equal(parseInvite(''), null);
});

test('envelopes are built and checked as §6 says', () => {
  const text = buildEnvelope({ to: FPR, seq: 3, ts: 1795000000000, text: 'hi' });
  assert.deepEqual(JSON.parse(text), { v: 1, to: FPR, seq: 3, ts: 1795000000000, text: 'hi' });
  assert.deepEqual(parseEnvelope(text, FPR), { ok: true, envelope: { to: FPR, seq: 3, ts: 1795000000000, text: 'hi' } });
  const withExtra = JSON.stringify({ v: 1, to: FPR, seq: 1, ts: 1, text: '', future: true });
  assert.equal(parseEnvelope(withExtra, FPR).ok, true, 'unknown fields are ignored');
  assert.equal(parseEnvelope(text, FPR.replace('0', '1')).problem, 'wrong_recipient');
  assert.equal(parseEnvelope(text.replace('"v":1', '"v":2'), FPR).problem, 'version');
  assert.equal(parseEnvelope('not json', FPR).problem, 'malformed');
  assert.equal(parseEnvelope('[1]', FPR).problem, 'malformed');
  for (const broken of [{ to: FPR.toLowerCase() }, { seq: 0 }, { seq: 1.5 }, { seq: '1' }, { ts: 'now' }, { text: 5 }, { to: undefined }]) {
    const value = { v: 1, to: FPR, seq: 1, ts: 1, text: 'x', ...broken };
    assert.equal(parseEnvelope(JSON.stringify(value), FPR).problem, 'malformed', JSON.stringify(broken));
  }
});

test('seq: in order moves on, a gap counts what is missing, a replay changes nothing', () => {
  assert.deepEqual(classifySeq(1, 1), { kind: 'in_order', missing: 0, nextExpected: 2 });
  assert.deepEqual(classifySeq(2, 5), { kind: 'gap', missing: 3, nextExpected: 6 });
  assert.deepEqual(classifySeq(6, 5), { kind: 'replay', missing: 0, nextExpected: 6 });
  assert.deepEqual(classifySeq(6, 1), { kind: 'replay', missing: 0, nextExpected: 6 });
});

test('key policy: Ed25519/Cv25519 and RSA 2048-4096 with a small exponent pass; other algorithms, sizes and counts are refused in words', async () => {
  const bytesOf = async (armored) => (await openpgp.unarmor(armored)).data;
  const ecc = await openpgp.generateKey({ type: 'ecc', curve: 'curve25519Legacy', userIDs: [{ name: 'E' }], passphrase: 'abcdefgh', format: 'armored' });
  assert.deepEqual(checkKeyPackets(await bytesOf(ecc.publicKey)), { ok: true, primary: 'Ed25519', subkeys: ['Curve25519'] });
  assert.equal(checkKeyPackets(await bytesOf(ecc.privateKey)).ok, true, 'secret key packets are judged by their public part');
  const v6 = await openpgp.generateKey({ type: 'curve25519', userIDs: [{ name: 'E' }], format: 'armored', config: { v6Keys: true } });
  assert.deepEqual(checkKeyPackets(await bytesOf(v6.publicKey)), { ok: true, primary: 'Ed25519', subkeys: ['X25519'] });
  const rsa = await openpgp.generateKey({ type: 'rsa', rsaBits: 2048, userIDs: [{ name: 'R' }], format: 'armored' });
  assert.deepEqual(checkKeyPackets(await bytesOf(rsa.publicKey)), { ok: true, primary: 'RSA 2048', subkeys: ['RSA 2048'] });
  // The crafted keys' signatures are garbage, which the policy never looks at: only sizes and counts.
  const crafted = async (options) => bytesOf(hostileRsaKey({ certifications: 1, ...options }).armored);
  assert.equal(checkKeyPackets(await crafted({ modulusBits: 4096, exponentBits: 33 })).ok, true);

  const refusal = async (bytes, who) => checkKeyPackets(bytes, who);
  assert.deepEqual(await refusal(await crafted({ modulusBits: 16384, exponentBits: 16384 })), {
    ok: false,
    code: 'unsupported_key',
    message: 'This key uses an algorithm or size SecChat does not accept: RSA with a 16,384-bit modulus and a 16,384-bit public exponent. SecChat accepts Ed25519/Curve25519 keys, or RSA keys of 2,048 to 4,096 bits with a small public exponent such as 65537.',
  });
  assert.match((await refusal(await crafted({ modulusBits: 4096, exponentBits: 34 }), 'Your key')).message, /^Your key uses .*: RSA with a 34-bit public exponent\./);
  assert.match((await refusal(await crafted({ modulusBits: 1024, exponentBits: 17 }))).message, /: RSA with a 1,024-bit modulus\./);
  assert.match((await refusal(await crafted({ modulusBits: 8192, exponentBits: 17 }))).message, /: RSA with a 8,192-bit modulus\./);
  const nist = await openpgp.generateKey({ type: 'ecc', curve: 'nistP256', userIDs: [{ name: 'N' }], format: 'armored' });
  assert.match((await refusal(await bytesOf(nist.publicKey))).message, /: ECDSA on NIST P-256\./);
  assert.deepEqual(await refusal(await crafted({ modulusBits: 2048, exponentBits: 17, certifications: 129 })),
    { ok: false, code: 'too_many_parts', message: 'This key has too many signatures (129; SecChat accepts at most 128).' });

  const good = await bytesOf(ecc.publicKey);
  assert.equal((await refusal(good.subarray(0, good.length - 5))).code, 'not_a_key', 'truncated');
  assert.equal((await refusal(new Uint8Array([...good, ...good]))).code, 'not_a_key', 'two keys');
  assert.equal((await refusal(new Uint8Array([0xcb, 0x03, 0x62, 0x00, 0x00]))).code, 'not_a_key', 'a literal data packet');
  assert.equal((await refusal(new Uint8Array([0xc6, 0xe1, 0x00]))).code, 'not_a_key', 'a partial length');
});

test('the armored key size limit counts as the server does: UTF-8 bytes of the JSON string as sent, without quotes', () => {
  assert.deepEqual(checkArmoredSize('x'.repeat(16384)), { ok: true, bytes: 16384 });
  assert.deepEqual(checkArmoredSize('x'.repeat(16385)), { ok: false, code: 'key_too_large', bytes: 16385 });
  assert.deepEqual(checkArmoredSize('é'.repeat(8193)), { ok: false, code: 'key_too_large', bytes: 16386 });
  // Each line break goes out as the two bytes `\n`.
  assert.deepEqual(checkArmoredSize(`${'x'.repeat(64)}\n`.repeat(248)), { ok: true, bytes: 66 * 248 });
  assert.deepEqual(checkArmoredSize(`${'x'.repeat(64)}\n`.repeat(249)), { ok: false, code: 'key_too_large', bytes: 66 * 249 });
});

test('the peer queue keeps one peer\'s events in order and lets other peers pass a slow one', async () => {
  const log = [];
  const errors = [];
  const queue = createPeerQueue((error) => errors.push(error.message));
  let releaseSlow;
  const slow = new Promise((resolve) => { releaseSlow = resolve; });
  queue.run('A', async () => { await slow; log.push('A1'); });
  queue.run('A', () => { log.push('A2'); });
  const bDone = queue.run('B', () => { log.push('B1'); });
  queue.run('B', () => { throw new Error('B2 failed'); });
  const b3 = queue.run('B', () => { log.push('B3'); });
  await bDone;
  await b3;
  assert.deepEqual(log, ['B1', 'B3'], 'B ran while A waited; a failing task does not stop its peer');
  assert.deepEqual(errors, ['B2 failed']);
  assert.equal(queue.pending, 1);
  releaseSlow();
  await queue.run('A', () => { log.push('A3'); });
  assert.deepEqual(log, ['B1', 'B3', 'A1', 'A2', 'A3']);
  assert.equal(queue.pending, 0);
});

test('the peer queue holds at most maxPerPeer tasks per ID and maxTotal in all; drops are reported gathered and rate-limited', async () => {
  const reports = [];
  const queue = createPeerQueue(() => {}, {
    maxPerPeer: 3, maxTotal: 5, gatherMs: 20, reportEveryMs: 200, onDropped: (peer, count) => reports.push([peer, count]),
  });
  let release;
  const gate = new Promise((resolve) => { release = resolve; });
  const ran = [];
  const results = [];
  for (let i = 0; i < 10; i += 1) results.push(queue.run('A', async () => { await gate; ran.push(`A${i}`); }));
  assert.equal(queue.queued, 3, 'one running and two waiting');
  results.push(queue.run('B', () => gate), queue.run('B', () => gate), queue.run('C', () => ran.push('C')));
  assert.equal(queue.queued, 5);
  assert.equal(await results.at(-1), false, 'over the total: dropped, not run');
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(reports, [['A', 7], ['C', 1]], 'one report per ID for the burst');
  for (let i = 0; i < 4; i += 1) queue.run('A', () => {});
  await new Promise((resolve) => setTimeout(resolve, 60));
  assert.deepEqual(reports.length, 2, 'no second report within the window');
  release();
  assert.deepEqual((await Promise.all(results.slice(0, 10))).map(Boolean), [true, true, true, false, false, false, false, false, false, false]);
  assert.deepEqual(ran, ['A0', 'A1', 'A2']);
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.deepEqual(reports, [['A', 7], ['C', 1], ['A', 4]], 'the drops of the window, reported when it ends');
  assert.equal(queue.queued, 0);
  assert.equal(queue.pending, 0);
  assert.equal(await queue.run('A', () => {}), true, 'room again');
  assert.equal(droppedText(1), '1 message from the server was dropped: too many waiting.');
  assert.equal(droppedText(144), '144 messages from the server were dropped: too many waiting.');
});

test('a server\'s max_message_bytes is clamped to the client maximum, and frames are read up to that plus 1024', () => {
  assert.equal(CLIENT_MAX_MESSAGE_BYTES, 1048576);
  assert.deepEqual(clampLimits({ max_message_bytes: 65536 }), { max_message_bytes: 65536 });
  assert.deepEqual(clampLimits({ max_message_bytes: 16 * 1024 * 1024 }), { max_message_bytes: 1048576 });
  assert.deepEqual(clampLimits({ max_message_bytes: Number.MAX_SAFE_INTEGER }), { max_message_bytes: 1048576 });
  assert.deepEqual(clampLimits({ max_message_bytes: -5 }), { max_message_bytes: 0 });
  for (const odd of [undefined, null, 'x', {}, { max_message_bytes: 1.5 }, { max_message_bytes: '65536' }, { max_message_bytes: 2 ** 60 }]) {
    assert.deepEqual(clampLimits(odd), {}, JSON.stringify(odd));
  }
  assert.equal(frameCeiling(65536), 132096, 'twice the default: room for a long friend list in the CONNECT reply');
  assert.equal(frameCeiling(4096), 132096);
  assert.equal(frameCeiling(524288), 525312);
  assert.equal(frameCeiling(16 * 1024 * 1024), 1049600, 'a larger announced limit does not raise it past the clamp');
  assert.equal(frameCeiling(undefined), 132096);
});

test('a friend\'s key over the size the server accepts, or not text, is refused before it is posted to the worker', async () => {
  assert.equal(refuseUnsent('x'.repeat(16384)), null);
  const big = refuseUnsent('x'.repeat(100000));
  assert.ok(big instanceof CryptoError);
  assert.equal(big.code, 'key_too_large');
  assert.equal(big.message, 'This key is 100,000 bytes; SecChat accepts keys of at most 16,384 bytes.');
  assert.equal(refuseUnsent({ length: 1 }).code, 'not_a_key');
  assert.equal(refuseUnsent(['x']).code, 'not_a_key');
});

/**
 * A stand-in for the crypto worker: says it is ready `startupMs` after it is made (never, for Infinity), then
 * answers jobs in order, each after `jobMs` (op 'hang': never). `made` counts the workers.
 */
function fakeWorker({ startupMs, jobMs = 5, initMs = 5 }) {
  const made = [];
  class FakeWorker {
    constructor() {
      made.push(this);
      this.terminated = false;
      this.chain = startupMs === Infinity ? new Promise(() => {}) : sleep(startupMs).then(() => this.emit({ ready: true }));
    }

    emit(data) {
      if (!this.terminated && this.onmessage) this.onmessage({ data });
    }

    postMessage({ id, op, args }) {
      this.chain = this.chain.then(async () => {
        if (op === 'hang') return new Promise(() => {});
        await sleep(op === 'init' ? initMs : jobMs);
        this.emit({ id, ok: true, result: { op, args } });
      });
    }

    terminate() {
      this.terminated = true;
    }
  }
  return { FakeWorker, made };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

test('a crypto job\'s time budget starts when its worker is ready, so start-up (also after a restart) is not counted', async () => {
  // Start-up takes three budgets; the job itself a fraction of one.
  const slowStart = fakeWorker({ startupMs: 300 });
  const lane = createLane({ name: 't', budgetMs: 100, WorkerImpl: slowStart.FakeWorker });
  assert.deepEqual(await lane.run('readFriendKey', { armored: 'k' }), { op: 'readFriendKey', args: { armored: 'k' } });
  // A job over its budget is refused and its worker replaced; the next job waits for the new worker's start-up
  // without spending its budget on it.
  const hung = lane.run('hang', {}).then(() => 'answered', (error) => error.code);
  const next = lane.run('readFriendKey', { armored: 'k2' });
  assert.equal(await hung, 'too_slow');
  assert.deepEqual(await next, { op: 'readFriendKey', args: { armored: 'k2' } });
  assert.equal(lane.restarts, 1);
  assert.equal(slowStart.made.length, 2);

  // Reading the user's key (`init`) is start-up too.
  const slowInit = fakeWorker({ startupMs: 50, initMs: 300 });
  const messages = createLane({ name: 'm', budgetMs: 100, WorkerImpl: slowInit.FakeWorker });
  messages.setInit('init', { privateBinary: 1 });
  assert.equal((await messages.run('open', {})).op, 'open');
  assert.equal(messages.restarts, 0);

  // A worker that never gets ready fails its job after the start-up budget, and the next job gets a new one.
  const never = fakeWorker({ startupMs: Infinity });
  const stuck = createLane({ name: 's', budgetMs: 100, startupMs: 200, WorkerImpl: never.FakeWorker });
  const started = Date.now();
  await assert.rejects(stuck.run('readFriendKey', {}), (error) => error instanceof CryptoError && error.code === 'worker_failed');
  assert.ok(Date.now() - started >= 190, 'failed before the start-up budget was spent');
  assert.equal(stuck.restarts, 1);
});

test('the message worker serves peer IDs in turn: each ID has one job queued at a time, so a backlog from one waits behind one job of each other', async () => {
  const seen = [];
  const { FakeWorker } = fakeWorker({ startupMs: 1, jobMs: 2 });
  class Recording extends FakeWorker {
    postMessage(message) {
      if (message.op === 'open') seen.push(message.args.who);
      super.postMessage(message);
    }
  }
  const lane = createLane({ name: 'm', WorkerImpl: Recording });
  const queue = createPeerQueue((error) => { throw error; });
  const done = [];
  // A lying server's backlog "from" A arrives first, then one message each from B and C.
  for (let i = 0; i < 4; i += 1) done.push(queue.run('A', () => lane.run('open', { who: `A${i}` })));
  done.push(queue.run('B', () => lane.run('open', { who: 'B0' })), queue.run('C', () => lane.run('open', { who: 'C0' })));
  await Promise.all(done);
  assert.deepEqual(seen, ['A0', 'B0', 'C0', 'A1', 'A2', 'A3']);
});
