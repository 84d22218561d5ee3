// Where things are, relative to this file, so the suite runs from any working directory.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const artifactsDir = join(repoRoot, 'tests', 'browser', 'artifacts');
