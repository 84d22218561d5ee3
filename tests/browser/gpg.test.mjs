// Interoperability with GnuPG 2.2 and the §6 checks on what arrives: keys made by gpg import (and bad ones
// are refused with a clear reason); a message the page sends decrypts and verifies with gpg; a message
// built with gpg and sent by a raw protocol client shows as verified; a replay, a stranger's signature,
// a re-routed envelope and a seq gap are flagged.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  assertClean, assertWireIsOpaque, enterChat, incomingMessage, jsonFrames, launchBrowser, newChatUser, openUser,
  pane, PASSPHRASE, screenshot, sendMessage, waitForSession,
} from './helpers/browser.mjs';
import {
  createGpgHome, decryptAndVerify, encryptAndSign, exportKeys, generateGpgKey, importKey, revokeGpgKey,
} from './helpers/gpg.mjs';
import { RawClient } from './helpers/rawclient.mjs';
import { startServer } from './helpers/server.mjs';

const GPG_PASSPHRASE = 'gpg pass phrase';
let server;
let browser;
let gpg;

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  gpg = createGpgHome();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  gpg?.destroy();
});

async function importWith(page, { privateKey, publicKey = '', passphrase }) {
  await page.click('#tab-import');
  await page.fill('#import-private', privateKey);
  await page.fill('#import-public', publicKey);
  await page.fill('#import-passphrase', passphrase);
  await page.click('#import');
}

async function expectImportError(page, pattern) {
  const error = page.locator('#key-error');
  await page.waitForFunction(() => document.querySelector('#key-error')?.textContent !== ''
    && !document.querySelector('#import')?.disabled);
  assert.match(await error.textContent(), pattern);
  assert.equal(await page.locator('.chat-screen').count(), 0, 'still on the key screen');
}

describe('keys made by GnuPG', { timeout: 60000 }, () => {
  test('an ed25519/cv25519 pair imports; wrong passphrase, public-only, mismatched, expired and revoked keys are refused clearly', async () => {
    const good = generateGpgKey(gpg, { name: 'Gina Gpg', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
    const other = generateGpgKey(gpg, { name: 'Other Otto', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
    const expired = generateGpgKey(gpg, { name: 'Old Olga', passphrase: GPG_PASSPHRASE, kind: 'ecc', expire: '1d', createdAt: '20200101T000000' });
    const revokedKey = generateGpgKey(gpg, { name: 'Rev Rita', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
    revokeGpgKey(gpg, revokedKey.fingerprint);
    const revoked = exportKeys(gpg, revokedKey.fingerprint, GPG_PASSPHRASE);

    const user = await openUser(browser, server, { name: 'Gina' });
    const { page } = user;
    await importWith(page, { privateKey: good.privateArmored, publicKey: good.publicArmored, passphrase: 'not the passphrase' });
    await expectImportError(page, /wrong passphrase/i);
    await screenshot(page, 'key-import-error-desktop');

    await importWith(page, { privateKey: good.publicArmored, passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /public key only/i);

    await importWith(page, { privateKey: 'hello, I am not a key', passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /not an OpenPGP private key/i);

    await importWith(page, { privateKey: good.privateArmored, publicKey: other.publicArmored, passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /does not belong to this private key/i);

    await importWith(page, { privateKey: expired.privateArmored, passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /expired on 2020-01-02/i);

    await importWith(page, { privateKey: revoked.privateArmored, passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /revoked/i);

    await importWith(page, { privateKey: good.privateArmored, publicKey: good.publicArmored, passphrase: GPG_PASSPHRASE });
    await waitForSession(user);
    assert.equal(user.fingerprint, good.fingerprint);
    await assertClean(user);
    await user.context.close();
  });

  test('an RSA pair imports from files (binary private key, armored public key) and can be remembered protected', async () => {
    const rsa = generateGpgKey(gpg, { name: 'Rosa Rsa', passphrase: GPG_PASSPHRASE, kind: 'rsa' });
    const user = await openUser(browser, server, { name: 'Rosa' });
    const { page } = user;
    await page.click('#tab-import');
    await page.setInputFiles('#import-private-file', { name: 'rosa.gpg', mimeType: 'application/octet-stream', buffer: rsa.privateBinary });
    await page.setInputFiles('#import-public-file', { name: 'rosa.asc', mimeType: 'text/plain', buffer: Buffer.from(rsa.publicArmored) });
    await page.getByText('Loaded binary key file rosa.gpg').waitFor();
    assert.equal((await page.inputValue('#import-public')).trim(), rsa.publicArmored.trim());
    await page.fill('#import-passphrase', GPG_PASSPHRASE);
    await page.check('#import-remember');
    await page.click('#import');
    await waitForSession(user);
    assert.equal(user.fingerprint, rsa.fingerprint);

    // "Remember" stored only the passphrase-protected key: it needs the passphrase again after a reload.
    const stored = await page.evaluate(() => Object.fromEntries(Object.entries(localStorage)));
    const saved = JSON.parse(stored['secchat.key.v1']);
    assert.match(saved.privateArmored, /^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
    assert.equal(saved.fingerprint, rsa.fingerprint);
    for (const value of Object.values(stored)) assert.ok(!value.includes(GPG_PASSPHRASE));
    await page.reload();
    await page.fill('#saved-passphrase', 'wrong one');
    await page.click('#unlock-saved');
    await page.locator('#key-error', { hasText: /wrong passphrase/i }).waitFor();
    await page.fill('#saved-passphrase', GPG_PASSPHRASE);
    await page.click('#unlock-saved');
    user.fingerprint = null;
    await waitForSession(user);
    assert.equal(user.fingerprint, rsa.fingerprint);
    await assertClean(user);
    await user.context.close();
  });
});

describe('keys SecChat does not accept', { timeout: 60000 }, () => {
  test('a GnuPG key on NIST P-256, an RSA-1024 key file, and a key too big to send are refused at import in plain words', async () => {
    const nist = generateGpgKey(gpg, { name: 'Nina Nist', passphrase: GPG_PASSPHRASE, algorithms: ['nistp256', 'nistp256'] });
    const small = generateGpgKey(gpg, { name: 'Sam Small', passphrase: GPG_PASSPHRASE, algorithms: ['rsa1024', 'rsa1024'] });
    // Within the policy (31 user IDs, RSA-2048), but its public key is over the 16,384 bytes the server accepts.
    const big = generateGpgKey(gpg, { name: 'Bea Big', passphrase: GPG_PASSPHRASE, kind: 'rsa' });
    for (let i = 0; i < 30; i += 1) {
      const result = gpg.run(['--pinentry-mode', 'loopback', '--passphrase', GPG_PASSPHRASE, '--quick-add-uid', big.fingerprint,
        `Bea Big, alias number ${i}, with a long comment to make the key large ${'x'.repeat(160)}`]);
      assert.equal(result.status, 0, result.stderr);
    }
    const bigExport = exportKeys(gpg, big.fingerprint, GPG_PASSPHRASE);
    assert.ok(JSON.stringify(bigExport.publicArmored).length - 2 > 16384);

    const user = await openUser(browser, server, { name: 'Nina' });
    const { page } = user;
    await importWith(page, { privateKey: nist.privateArmored, publicKey: nist.publicArmored, passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /^Your key uses an algorithm or size SecChat does not accept: ECDSA on NIST P-256\. SecChat accepts Ed25519\/Curve25519 keys, or RSA keys of 2,048 to 4,096 bits/);

    await page.setInputFiles('#import-private-file', { name: 'sam.gpg', mimeType: 'application/octet-stream', buffer: small.privateBinary });
    await page.getByText('Loaded binary key file sam.gpg').waitFor();
    await page.fill('#import-public', '');
    await page.fill('#import-passphrase', GPG_PASSPHRASE);
    await page.click('#import');
    await expectImportError(page, /^Your key uses an algorithm or size SecChat does not accept: RSA with a 1,024-bit modulus\./);

    await importWith(page, { privateKey: bigExport.privateArmored, passphrase: GPG_PASSPHRASE });
    await expectImportError(page, /^Your public key is \d{2},\d{3} bytes; SecChat sends keys of at most 16,384 bytes\. Export it without other people's signatures/);
    await assertClean(user);
    await user.context.close();
  });
});

describe('messages between the page and GnuPG', { timeout: 90000 }, () => {
  let page;
  let user;
  let raw;
  let gina;
  let pageKeyImported = false;

  const envelope = (fields) => JSON.stringify({ v: 1, to: user.fingerprint, ts: Date.now(), ...fields });
  const sendRaw = (payload, ref) => raw.request({ type: 'MESSAGE', to: user.id, payload }, ref);
  const sealed = (text, signer = gina.fingerprint) => encryptAndSign(gpg, { text, recipient: user.fingerprint, signer, passphrase: GPG_PASSPHRASE });

  before(async () => {
    gina = generateGpgKey(gpg, { name: 'Gina Raw', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
    user = await newChatUser(browser, server, { name: 'Paula' });
    page = user.page;
    raw = await RawClient.connect(server.wsUrl);
    await raw.request({ type: 'FRIEND_REQUEST', to: user.id, public_key: gina.publicArmored }, 'req');
    const card = page.locator(`.request-card[data-request="${raw.id}"]`);
    await card.waitFor();
    assert.equal(await card.locator('[data-fingerprint]').getAttribute('data-fingerprint'), gina.fingerprint);
    await card.getByRole('button', { name: `Accept friend request from ${raw.id}` }).click();
    const accept = await raw.next((f) => f.type === 'FRIEND_ACCEPT');
    assert.equal(accept.from, user.id);
    importKey(gpg, accept.public_key);
    pageKeyImported = true;
  });

  after(() => raw?.close());

  test('a message the page sends decrypts with gpg and carries a valid signature by the page key', async () => {
    assert.ok(pageKeyImported);
    await sendMessage(user, raw.id, 'hello from the browser');
    const delivered = await raw.next((f) => f.type === 'MESSAGE');
    // Playwright reports the page's frames asynchronously: the server's copy can reach the raw client first.
    let sentFrame;
    for (let waited = 0; !sentFrame && waited < 5000; waited += 50) {
      sentFrame = jsonFrames(user).find((f) => f.direction === 'sent' && f.json.type === 'MESSAGE');
      if (!sentFrame) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.equal(delivered.payload, sentFrame.json.payload, 'the server forwards the payload unchanged');
    assert.equal(delivered.from, user.id);
    assert.equal(typeof delivered.ts, 'number');

    const opened = decryptAndVerify(gpg, { payload: delivered.payload, passphrase: GPG_PASSPHRASE });
    assert.equal(opened.status, 0, opened.stderr);
    assert.equal(opened.signerPrimary, user.fingerprint);
    const body = JSON.parse(opened.plaintext);
    assert.equal(body.v, 1);
    assert.equal(body.to, gina.fingerprint);
    assert.equal(body.seq, 1);
    assert.equal(body.text, 'hello from the browser');
    assert.ok(Math.abs(body.ts - Date.now()) < 60000);
  });

  test('a §6 envelope built with gpg shows as decrypted and verified', async () => {
    const payload = sealed(envelope({ seq: 1, text: 'signed and sealed by gpg' }));
    await sendRaw(payload, 'g1');
    const message = await incomingMessage(user, raw.id, 'signed and sealed by gpg');
    assert.equal(await message.getAttribute('data-verified'), 'true');
    assert.equal(await message.getAttribute('data-problems'), '');

    // The same payload again (an at-least-once re-send) is a quiet duplicate, not a new message.
    await sendRaw(payload, 'g1-again');
    const duplicate = pane(user, raw.id).locator('.msg-in[data-duplicate="true"]');
    await duplicate.first().waitFor({ state: 'attached' });
    assert.equal(await duplicate.first().getAttribute('data-verified'), 'false');
    assert.equal(await duplicate.first().getAttribute('data-problems'), '');
    assert.equal(await duplicate.first().locator('.msg-text').count(), 0);

    // Another message under a seq already used is a replay.
    await sendRaw(sealed(envelope({ seq: 1, text: 'a second message numbered 1' })), 'g1-other');
    const replays = pane(user, raw.id).locator('.msg-in[data-problems~="replay"]');
    await replays.first().waitFor({ state: 'attached' });
    assert.equal(await replays.first().getAttribute('data-verified'), 'false');
    assert.match(await replays.first().textContent(), /REPLAY/);
  });

  test('a payload signed by another key is flagged and its text withheld until asked', async () => {
    const mallory = generateGpgKey(gpg, { name: 'Mallory Mitm', passphrase: GPG_PASSPHRASE, kind: 'ecc' });
    await sendRaw(sealed(envelope({ seq: 2, text: 'trust me, I am Gina' }), mallory.fingerprint), 'm1');
    const flagged = pane(user, raw.id).locator('.msg-in[data-problems~="bad_signature"]');
    await flagged.first().waitFor({ state: 'attached' });
    assert.equal(await flagged.getAttribute('data-verified'), 'false');
    assert.match(await flagged.textContent(), /NOT signed by this friend's pinned key/);
    assert.equal(await flagged.locator('.msg-text').count(), 0);
    await flagged.getByRole('button', { name: 'show the text anyway' }).click();
    assert.equal(await flagged.locator('.msg-text').textContent(), 'trust me, I am Gina');
    assert.equal(await flagged.getAttribute('data-verified'), 'false');
  });

  test('an envelope addressed to another key, a bad envelope and a seq gap are each shown', async () => {
    await sendRaw(sealed(JSON.stringify({ v: 1, to: gina.fingerprint, seq: 2, ts: Date.now(), text: 're-routed' })), 'r1');
    const rerouted = pane(user, raw.id).locator('.msg-in[data-problems~="wrong_recipient"]');
    await rerouted.first().waitFor({ state: 'attached' });
    assert.equal(await rerouted.getAttribute('data-verified'), 'false');

    await sendRaw(sealed(JSON.stringify({ v: 2, to: user.fingerprint, seq: 2, ts: Date.now(), text: 'future' })), 'v2');
    await pane(user, raw.id).locator('.msg-in[data-problems~="version"]').first().waitFor({ state: 'attached' });

    // No failed message moved the expected seq (2): seq 4 skips 2 and 3, and is itself still verified.
    await sendRaw(sealed(envelope({ seq: 4, text: 'after a gap' })), 'gap');
    const gap = await incomingMessage(user, raw.id, 'after a gap');
    assert.equal(await gap.getAttribute('data-verified'), 'true');
    assert.match(await gap.textContent(), /2 earlier messages missing/);
    await page.click(`.friend[data-friend="${raw.id}"]`);
    await screenshot(page, 'flagged-messages-desktop');

    assertWireIsOpaque(user, ['hello from the browser', 'signed and sealed by gpg', 'trust me', 'after a gap']);
    await assertClean(user);
  });
});

test('the page key made by OpenPGP.js is readable by GnuPG 2.2', { timeout: 30000 }, async () => {
  const user = await openUser(browser, server, { name: 'Exporter' });
  await user.page.fill('#gen-passphrase', PASSPHRASE);
  await user.page.fill('#gen-passphrase2', PASSPHRASE);
  await user.page.click('#generate');
  await user.page.waitForSelector('#enter-chat');
  const [download] = await Promise.all([
    user.page.waitForEvent('download'),
    user.page.getByRole('button', { name: 'Download private key' }).click(),
  ]);
  const armored = await new Promise((resolve, reject) => {
    download.createReadStream().then((stream) => {
      let text = '';
      stream.on('data', (chunk) => { text += chunk; });
      stream.on('end', () => resolve(text));
      stream.on('error', reject);
    }, reject);
  });
  assert.match(armored, /^-----BEGIN PGP PRIVATE KEY BLOCK-----/);
  const home = createGpgHome();
  try {
    const imported = home.run(['--pinentry-mode', 'loopback', '--passphrase', PASSPHRASE, '--import'], armored);
    assert.equal(imported.status, 0, imported.stderr);
    const listing = home.run(['--with-colons', '--list-secret-keys']).stdout;
    assert.match(listing, /^sec:.*:22:/m, 'EdDSA (ed25519) primary key');
    assert.match(listing, /^ssb:.*:18:/m, 'ECDH (cv25519) subkey');
  } finally {
    home.destroy();
  }
  await enterChat(user);
  await assertClean(user);
});
