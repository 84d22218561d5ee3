#!/usr/bin/env node
// Copies the third-party files the web client serves from its own origin (OpenPGP.js, the
// JetBrains Mono font and the qrcode-generator ES module) out of node_modules into public/vendor/. The copies are committed so that
// `cargo build` needs no npm; tests/browser/vendor.test.mjs checks they are byte-identical to the
// lockfile-pinned packages. Usage: `npm ci && node scripts/vendor-assets.mjs`.
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');
export const vendorDir = join(repoRoot, 'public', 'vendor');

const fontFiles = join('node_modules', '@fontsource', 'jetbrains-mono', 'files');

/** [source relative to the repo root, file name inside public/vendor/] */
export const vendoredFiles = [
  [join('node_modules', 'openpgp', 'dist', 'openpgp.min.mjs'), 'openpgp.min.mjs'],
  [join('node_modules', 'openpgp', 'LICENSE'), 'openpgp.LICENSE.txt'],
  [join(fontFiles, 'jetbrains-mono-latin-400-normal.woff2'), 'jetbrains-mono-latin-400-normal.woff2'],
  [join(fontFiles, 'jetbrains-mono-latin-700-normal.woff2'), 'jetbrains-mono-latin-700-normal.woff2'],
  [join('node_modules', '@fontsource', 'jetbrains-mono', 'LICENSE'), 'jetbrains-mono.LICENSE.txt'],
  // MIT; the package ships no separate license file, its text is in the module's header comment.
  [join('node_modules', 'qrcode-generator', 'dist', 'qrcode.mjs'), 'qrcode-generator.mjs'],
];

function vendor() {
  // Start from an empty folder so that a file dropped from the list does not linger in the binary.
  rmSync(vendorDir, { recursive: true, force: true });
  mkdirSync(vendorDir, { recursive: true });
  for (const [source, name] of vendoredFiles) {
    copyFileSync(join(repoRoot, source), join(vendorDir, name));
  }
  console.log(`vendored ${readdirSync(vendorDir).length} files into public/vendor/`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) vendor();
