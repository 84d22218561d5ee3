// The client's pure modules (no DOM, no crypto) run under Node too: IDs, invite links, the §6 envelope.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildEnvelope, classifySeq, parseEnvelope } from '../../public/js/envelope.js';
import { groupFingerprint, normalizeFingerprint, normalizeId } from '../../public/js/ids.js';
import { inviteLink, parseInvite } from '../../public/js/invite.js';

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
  assert.deepEqual(parseInvite(new URL(link).hash), { id: 'K7Q2ZD', fingerprint: FPR });
  assert.deepEqual(parseInvite(`#id=k7q-2zd&fp=${FPR.toLowerCase()}`), { id: 'K7Q2ZD', fingerprint: FPR });
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
