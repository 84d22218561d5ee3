#!/usr/bin/env node
// Bytes a client uploads for one group message to N members against N pair messages, with the
// vendored OpenPGP.js and the client's key type (Ed25519/Cv25519). BENCHMARKS.md cites its output.
//   node scripts/group-sizes.mjs
import * as openpgp from 'openpgp';

const MEMBER_COUNTS = [2, 10, 50];
const keys = [];
for (let i = 0; i <= Math.max(...MEMBER_COUNTS); i++) {
  keys.push(await openpgp.generateKey({ type: 'curve25519', userIDs: [{ name: `member ${i}` }], format: 'object' }));
}
const envelope = JSON.stringify({
  v: 1, kind: 'gtext', gid: 'g'.repeat(22), ver: 3, list: 'l'.repeat(43), seq: 7, ts: Date.now(),
  text: 'Hello everyone, dinner at eight? '.repeat(4),
});
const sender = keys[0].privateKey;
async function payloadBytes(recipients) {
  const message = await openpgp.createMessage({ text: envelope });
  const armored = await openpgp.encrypt({ message, encryptionKeys: recipients, signingKeys: sender });
  return armored.length;
}
const handle = 'h'.repeat(43);
const pairFrame = JSON.stringify({ type: 'MESSAGE', handle, payload: '', ref: '123' }).length;
const pairPayload = await payloadBytes([keys[1].publicKey]);
console.log(`envelope ${envelope.length} B; a pair message's payload ${pairPayload} B`);
for (const members of MEMBER_COUNTS) {
  // Encrypted to every member and to the sender itself.
  const groupPayload = await payloadBytes(keys.slice(0, members + 1).map((key) => key.publicKey));
  const groupFrame = JSON.stringify({ type: 'MESSAGE', handles: Array(members).fill(handle), payload: '', ref: '123' }).length;
  const pairs = members * (pairPayload + pairFrame);
  const group = groupPayload + groupFrame;
  console.log(`${members} members: ${members} pair messages ${pairs} B; one group message ${group} B (payload ${groupPayload} B); saved ${Math.round(100 * (1 - group / pairs))} %`);
}
