// Runs one browser test module against a running gateway, in a fresh Chromium:
//   node run.mjs tests/websocket.mjs http://127.0.0.1:PORT [USER_DATA_DIR]
// Prints `ok: NAME (… ms)` or `FAIL: NAME: reason` (plus the page's console), exits 0 or 1.
// .ci/peers/chromium.sh also bounds the whole process with `timeout`.
//
// A test module that exports `stack` (stack.mjs) gets its own gateway, fault proxy or Redis,
// started here from $STREAMGATE_BIN before the page opens and stopped after; the page then
// opens on that stack (through the proxy when there is one) and BASE_URL is not used.
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { launch, openPage, withTimeout, DEFAULT_TIMEOUT_MS } from './lib.mjs';
import { startStack } from './stack.mjs';

const [file, sharedBase, userDataDir] = process.argv.slice(2);
if (!file || !sharedBase) {
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
let stack;
let base = sharedBase;

// `timeout` (in chromium.sh) or Ctrl-C: report, close Chromium (bounded), exit non-zero.
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.once(signal, async () => {
    console.log(`FAIL: ${name}: ${signal} after ${Date.now() - t0} ms (test process timed out?)`);
    for (const l of lines) console.log(`  ${l}`);
    for (const l of opened?.consoleLines ?? []) console.log(`  [console] ${l}`);
    await withTimeout(browser?.close() ?? Promise.resolve(), 3000, 'closing chromium').catch(() => {});
    await withTimeout(stack?.close() ?? Promise.resolve(), 6000, 'stopping the stack').catch(() => {});
    process.exit(1);
  });
}
try {
  if (test.stack) {
    stack = await withTimeout(startStack(test.stack, { log }), 30000, 'starting the stack');
    base = stack.base;
  }
  browser = await withTimeout(launch({ userDataDir }), 30000, 'launching chromium');
  opened = await withTimeout(openPage(browser.context, base), 15000, `opening ${base}`);
  await withTimeout(
    test.run({ page: opened.page, base, consoleErrors: opened.consoleErrors, log, stack }),
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
  if (stack) for (const l of stack.gatewayOutput().split('\n').slice(-20)) console.log(`  [gateway] ${l}`);
}
await withTimeout(browser?.close() ?? Promise.resolve(), 10000, 'closing chromium').catch((e) =>
  console.log(`  warning: ${e.message}`),
);
await withTimeout(stack?.close() ?? Promise.resolve(), 10000, 'stopping the stack').catch((e) =>
  console.log(`  warning: ${e.message}`),
);
process.exit(ok ? 0 : 1);
