// Fails when the committed streamgate.d.ts is not what tsc generates from streamgate.js today
// (regenerate with `npm run dts`).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = mkdtempSync(join(tmpdir(), 'streamgate-dts-'));
try {
  execFileSync(join(root, 'node_modules/.bin/tsc'), ['-p', join(root, 'tsconfig.dts.json'), '--outDir', out], { stdio: 'inherit' });
  const fresh = readFileSync(join(out, 'streamgate.d.ts'), 'utf8');
  const committed = readFileSync(join(root, 'streamgate.d.ts'), 'utf8');
  if (fresh !== committed) {
    console.error('streamgate.d.ts is stale: run `npm run dts` and commit it');
    process.exit(1);
  }
  console.log('streamgate.d.ts is up to date');
} finally {
  rmSync(out, { recursive: true, force: true });
}
