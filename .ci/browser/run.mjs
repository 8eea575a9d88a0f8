// Runs one browser test module against a running gateway, in a fresh Chromium:
//   node run.mjs tests/websocket.mjs http://127.0.0.1:PORT [USER_DATA_DIR]
// Prints `ok: NAME (… ms)` or `FAIL: NAME: reason` (plus the page's console), exits 0 or 1.
// .ci/peers/chromium.sh also bounds the whole process with `timeout`.
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { launch, openPage, withTimeout, DEFAULT_TIMEOUT_MS } from './lib.mjs';

const [file, base, userDataDir] = process.argv.slice(2);
if (!file || !base) {
  console.error('usage: node run.mjs TEST.mjs BASE_URL [USER_DATA_DIR]');
  process.exit(2);
}

const test = await import(pathToFileURL(resolve(file)).href);
const name = test.name ?? file;
const timeoutMs = test.timeoutMs ?? DEFAULT_TIMEOUT_MS;
const lines = [];
const log = (...args) => lines.push(args.join(' '));

const t0 = Date.now();
let browser;
let ok = false;
let reason = '';
let opened;

// `timeout` (in chromium.sh) or Ctrl-C: report, close Chromium (bounded), exit non-zero.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.once(signal, async () => {
    console.log(`FAIL: ${name}: ${signal} after ${Date.now() - t0} ms (test process timed out?)`);
    for (const l of lines) console.log(`  ${l}`);
    for (const l of opened?.consoleLines ?? []) console.log(`  [console] ${l}`);
    await withTimeout(browser?.close() ?? Promise.resolve(), 3000, 'closing chromium').catch(() => {});
    process.exit(1);
  });
}
try {
  browser = await withTimeout(launch({ userDataDir }), 30000, 'launching chromium');
  opened = await withTimeout(openPage(browser.context, base), 15000, `opening ${base}`);
  await withTimeout(
    test.run({ page: opened.page, base, consoleErrors: opened.consoleErrors, log }),
    timeoutMs,
    name,
  );
  if (opened.consoleErrors.length && !test.allowConsoleErrors) {
    throw new Error(`page logged errors: ${opened.consoleErrors.join(' | ')}`);
  }
  ok = true;
} catch (e) {
  reason = (e && e.message ? e.message : String(e)).split('\n')[0];
}
const elapsed = Date.now() - t0;
const version = browser?.version ? ` chromium ${browser.version}` : '';
if (ok) {
  console.log(`ok: ${name} (${elapsed} ms,${version})`);
  for (const l of lines) console.log(`  ${l}`);
} else {
  console.log(`FAIL: ${name}: ${reason} (${elapsed} ms,${version})`);
  for (const l of lines) console.log(`  ${l}`);
  for (const l of opened?.consoleLines ?? []) console.log(`  [console] ${l}`);
}
await withTimeout(browser?.close() ?? Promise.resolve(), 10000, 'closing chromium').catch((e) =>
  console.log(`  warning: ${e.message}`),
);
process.exit(ok ? 0 : 1);
