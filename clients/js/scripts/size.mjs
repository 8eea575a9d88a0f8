// Prints the module's size as served (raw), minified (esbuild) and minified + gzip; the goal
// is at most 8 KB min+gzip. Exits non-zero over 8192 bytes so CI notices growth.
import { buildSync } from 'esbuild';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const file = join(dirname(fileURLToPath(import.meta.url)), '..', 'streamgate.js');
const raw = readFileSync(file);
const min = buildSync({ entryPoints: [file], bundle: false, minify: true, format: 'esm', write: false, target: 'es2022' }).outputFiles[0].contents;
const gz = gzipSync(min, { level: 9 }).length;
console.log(`streamgate.js: ${raw.length} bytes raw, ${gzipSync(raw, { level: 9 }).length} gzip; ${min.length} min, ${gz} min+gzip (limit 8192)`);
if (gz > 8192) process.exit(1);
