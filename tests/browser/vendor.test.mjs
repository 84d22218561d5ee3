// Plain Node checks of what the binary embeds: vendored files are byte-identical to the lockfile-pinned
// npm packages, versions are pinned, and the client's sources keep to the CSP and the no-HTML-parsing rule.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from './helpers/paths.mjs';
import { vendorDir, vendoredFiles } from '../../scripts/vendor-assets.mjs';

const readJson = (path) => JSON.parse(readFileSync(join(repoRoot, path), 'utf8'));
const publicDir = join(repoRoot, 'public');

function filesUnder(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? filesUnder(path) : [path];
  });
}

function versionAtLeast(version, minimum) {
  const a = version.split('.').map(Number);
  const b = minimum.split('.').map(Number);
  for (let i = 0; i < 3; i += 1) if (a[i] !== b[i]) return a[i] > b[i];
  return true;
}

test('public/vendor/ holds exactly the vendored files, byte-identical to node_modules', () => {
  const expected = vendoredFiles.map(([, name]) => name).sort();
  assert.deepEqual(readdirSync(vendorDir).sort(), expected, 'run `node scripts/vendor-assets.mjs`');
  for (const [source, name] of vendoredFiles) {
    const original = readFileSync(join(repoRoot, source));
    const copy = readFileSync(join(vendorDir, name));
    assert.ok(original.equals(copy), `public/vendor/${name} differs from ${source}: run \`node scripts/vendor-assets.mjs\``);
  }
});

test('dependencies are pinned to exact versions with lockfile integrity, OpenPGP.js at 6.1.1 or later', () => {
  const pkg = readJson('package.json');
  const lock = readJson('package-lock.json');
  const all = { ...pkg.dependencies, ...pkg.devDependencies };
  for (const name of ['openpgp', '@fontsource/jetbrains-mono', 'qrcode-generator', 'playwright-core', 'ws', 'axe-core', '@paulmillr/qr']) {
    assert.match(all[name] || '', /^\d+\.\d+\.\d+$/, `${name} must be pinned to an exact version`);
    const locked = lock.packages[`node_modules/${name}`];
    assert.ok(locked, `${name} missing from package-lock.json`);
    assert.equal(locked.version, all[name]);
    assert.match(locked.integrity, /^sha512-[A-Za-z0-9+/]+=*$/);
    const installed = readJson(join('node_modules', name, 'package.json'));
    assert.equal(installed.version, all[name], `node_modules/${name} is not the locked version: run \`npm ci\``);
  }
  const openpgp = all.openpgp;
  assert.ok(versionAtLeast(openpgp, '6.1.1') && openpgp.startsWith('6.'), `openpgp ${openpgp} must be 6.x ≥ 6.1.1`);
  const banner = readFileSync(join(vendorDir, 'openpgp.min.mjs'), 'utf8').slice(0, 200);
  assert.match(banner, new RegExp(`OpenPGP\\.js v${openpgp.replace(/\./g, '\\.')} `));
});

test('the client never parses HTML from strings and has no inline script or style', () => {
  const forbidden = [/\.innerHTML\b/, /\.outerHTML\b/, /insertAdjacentHTML/, /document\.write/, /\beval\(/, /new Function\(/,
    /setAttribute\(\s*['"]style['"]/, /setAttribute\(\s*['"]on/i];
  const ownFiles = filesUnder(publicDir).filter((path) => !path.startsWith(vendorDir));
  for (const path of ownFiles.filter((p) => p.endsWith('.js'))) {
    const source = readFileSync(path, 'utf8');
    for (const pattern of forbidden) assert.doesNotMatch(source, pattern, `${relative(repoRoot, path)} uses ${pattern}`);
  }
  for (const path of ownFiles.filter((p) => p.endsWith('.html'))) {
    const html = readFileSync(path, 'utf8');
    assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'inline <script>');
    assert.doesNotMatch(html, /<style/i, 'inline <style>');
    assert.doesNotMatch(html, /\sstyle=/i, 'style attribute');
    assert.doesNotMatch(html, /\son[a-z]+=/i, 'inline event handler');
    assert.doesNotMatch(html, /(src|href)=["']?(https?:)?\/\//i, 'third-party resource');
  }
  for (const path of ownFiles.filter((p) => p.endsWith('.css'))) {
    const css = readFileSync(path, 'utf8');
    assert.doesNotMatch(css, /url\(\s*['"]?(https?:)?\/\//i, `${relative(repoRoot, path)} loads a third-party resource`);
    assert.doesNotMatch(css, /@import/i);
  }
});

test('every module import and stylesheet url in public/ points at a file that exists', () => {
  const own = filesUnder(publicDir).filter((path) => !path.startsWith(vendorDir));
  for (const path of own.filter((p) => p.endsWith('.js'))) {
    for (const [, target] of readFileSync(path, 'utf8').matchAll(/\bfrom\s+['"](\.[^'"]+)['"]/g)) {
      assert.ok(statSync(resolve(dirname(path), target), { throwIfNoEntry: false }), `${relative(repoRoot, path)} imports missing ${target}`);
    }
  }
  for (const path of own.filter((p) => p.endsWith('.css'))) {
    for (const [, target] of readFileSync(path, 'utf8').matchAll(/url\(\s*['"]?([^'")]+)['"]?\s*\)/g)) {
      assert.ok(statSync(resolve(dirname(path), target), { throwIfNoEntry: false }), `${relative(repoRoot, path)} points at missing ${target}`);
    }
  }
  const html = readFileSync(join(publicDir, 'index.html'), 'utf8');
  for (const [, target] of html.matchAll(/(?:src|href)="([^"#]+)"/g)) {
    assert.ok(statSync(join(publicDir, target), { throwIfNoEntry: false }), `index.html points at missing ${target}`);
  }
});
