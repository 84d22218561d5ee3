// GnuPG in a throw-away GNUPGHOME: keys made at test time, encryption/decryption for interop checks.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const GPG = process.env.GPG_PATH || 'gpg';

export function createGpgHome() {
  // Short path: gpg-agent's socket lives in the home and socket paths are limited to ~100 bytes.
  const home = mkdtempSync(join(tmpdir(), 'scg-'));
  // gpg-agent otherwise spends ~2 s per key calibrating its S2K; exported keys keep GnuPG's usual
  // iterated+salted S2K either way.
  writeFileSync(join(home, 'gpg-agent.conf'), 's2k-calibration 10\n');
  return {
    home,
    run: (args, input) => runGpg(home, args, input),
    destroy() {
      spawnSync('gpgconf', ['--homedir', home, '--kill', 'all'], { stdio: 'ignore' });
      rmSync(home, { recursive: true, force: true });
    },
  };
}

function runGpg(home, args, input) {
  const result = spawnSync(GPG, ['--homedir', home, '--batch', '--no-tty', '--quiet', ...args], {
    input, encoding: 'utf8', timeout: 60000,
  });
  if (result.error) throw result.error;
  return result;
}

function must(result, what) {
  if (result.status !== 0) throw new Error(`gpg ${what} failed (${result.status}): ${result.stderr}`);
  return result;
}

function withPassphrase(passphrase) {
  return ['--pinentry-mode', 'loopback', '--passphrase', passphrase];
}

/**
 * Makes a key pair protected by `passphrase`: kind 'ecc' (ed25519 primary + cv25519 subkey, GnuPG's
 * default) or 'rsa' (RSA primary + RSA encryption subkey), or the GnuPG algorithm names in `algorithms`
 * ([primary, encryption subkey], e.g. ['nistp256', 'nistp256']). Returns {fingerprint, publicArmored, privateArmored}.
 */
export function generateGpgKey(gpg, { name, passphrase, kind, algorithms = null, expire = 'never', createdAt = null }) {
  const uid = `${name} <${name.toLowerCase().replace(/\W+/g, '')}@example.org>`;
  const [primary, sub] = algorithms || (kind === 'rsa' ? ['rsa2048', 'rsa2048'] : ['ed25519', 'cv25519']);
  // A frozen fake clock makes a key that was created (and expired) in the past.
  const clock = createdAt ? ['--faked-system-time', `${createdAt}!`, '--ignore-time-conflict'] : [];
  must(gpg.run([...clock, ...withPassphrase(passphrase), '--quick-gen-key', uid, primary, 'sign,cert', expire]), 'quick-gen-key');
  const fingerprint = fingerprintOf(gpg, uid);
  must(gpg.run([...clock, ...withPassphrase(passphrase), '--quick-add-key', fingerprint, sub, 'encr', expire]), 'quick-add-key');
  return { fingerprint, ...exportKeys(gpg, fingerprint, passphrase) };
}

/** The key's current armored public and private exports, plus the binary private export. */
export function exportKeys(gpg, fingerprint, passphrase) {
  const secret = spawnSync(GPG, ['--homedir', gpg.home, '--batch', '--no-tty', ...withPassphrase(passphrase), '--export-secret-keys', fingerprint]);
  return {
    publicArmored: must(gpg.run(['--armor', '--export', fingerprint]), 'export').stdout,
    privateArmored: must(gpg.run([...withPassphrase(passphrase), '--armor', '--export-secret-keys', fingerprint]), 'export-secret-keys').stdout,
    privateBinary: secret.stdout,
  };
}

/** Revokes a key with the revocation certificate GnuPG made when it generated the key. */
export function revokeGpgKey(gpg, fingerprint) {
  const certificate = readFileSync(join(gpg.home, 'openpgp-revocs.d', `${fingerprint}.rev`), 'utf8')
    .replace(':-----BEGIN PGP PUBLIC KEY BLOCK-----', '-----BEGIN PGP PUBLIC KEY BLOCK-----');
  must(gpg.run(['--import'], certificate), 'import revocation');
}

export function fingerprintOf(gpg, query) {
  const listing = must(gpg.run(['--with-colons', '--fingerprint', query]), 'list').stdout;
  const line = listing.split('\n').find((l) => l.startsWith('fpr:'));
  if (!line) throw new Error(`no fingerprint for ${query}`);
  return line.split(':')[9];
}

export function importKey(gpg, armored) {
  must(gpg.run(['--import'], armored), 'import');
}

/** Encrypts `text` to `recipient` and signs it with `signer` (both fingerprints in this home). */
export function encryptAndSign(gpg, { text, recipient, signer, passphrase }) {
  return must(gpg.run([...withPassphrase(passphrase), '--armor', '--trust-model', 'always', '--local-user', signer,
    '--recipient', recipient, '--sign', '--encrypt'], text), 'sign+encrypt').stdout;
}

/**
 * Decrypts a payload; returns {plaintext, signerPrimary} where signerPrimary is the primary-key fingerprint
 * from a VALIDSIG status line (null when no valid signature was found).
 */
export function decryptAndVerify(gpg, { payload, passphrase }) {
  const result = gpg.run([...withPassphrase(passphrase), '--status-fd', '2', '--trust-model', 'always', '--decrypt'], payload);
  const validsig = result.stderr.split('\n').find((line) => line.startsWith('[GNUPG:] VALIDSIG '));
  const fields = validsig ? validsig.trim().split(' ') : [];
  return {
    status: result.status,
    plaintext: result.stdout,
    signerPrimary: fields.length >= 12 ? fields[11] : null,
    stderr: result.stderr,
  };
}
