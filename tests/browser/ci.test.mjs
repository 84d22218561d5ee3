// The README's test command is all CI runs, and it installs what the tests need by itself (plain Node checks;
// the install step really runs, with nothing to install on a machine that has it all).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot } from './helpers/paths.mjs';

test('.ci/run runs exactly scripts/test and nothing else', () => {
  const commands = readFileSync(join(repoRoot, '.ci', 'run'), 'utf8').split('\n')
    .map((line) => line.trim()).filter((line) => line && !line.startsWith('#'));
  assert.deepEqual(commands, ['set -euo pipefail', 'cd "$(dirname "$0")/.."', 'exec scripts/test']);
});

test('scripts/test installs every Debian package the tests use when missing, through sudo when not root, then npm ci', () => {
  const script = readFileSync(join(repoRoot, 'scripts', 'test'), 'utf8');
  for (const [command, pkg] of [['chromium', 'chromium'], ['gpg', 'gnupg'], ['systemd-analyze', 'systemd'], ['ip', 'iproute2'], ['node', 'nodejs'], ['npm', 'npm']]) {
    assert.match(script, new RegExp(`command -v ${command} >/dev/null 2>&1 [^\\n]*\\|\\| need\\+=\\(${pkg}\\)`), `${pkg} for ${command}`);
  }
  assert.match(script, /\[ -x \/bin\/kill \] \|\| need\+=\(procps\)/);
  assert.match(script, /\[ "\$\(id -u\)" -eq 0 \] \|\| sudo="sudo"/);
  assert.match(script, /npm ci --no-audit --no-fund/);
  // The install step runs for real and stops there: on this machine nothing is missing.
  const output = execFileSync(join(repoRoot, 'scripts', 'test'), ['--deps-only'], { encoding: 'utf8' });
  assert.match(output, /system packages: nothing missing/);
  assert.match(output, /npm packages: (up to date with package-lock\.json|npm ci)/);
});
