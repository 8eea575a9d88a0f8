// Runs one browser test module in a fresh Chromium, against a gateway of its own:
//   STREAMGATE_BIN=target/release/streamgate node run.mjs tests/websocket.mjs [USER_DATA_DIR]
// Prints `ok: NAME (… ms)` or `FAIL: NAME: reason` (plus the page's console and the gateway's
// last lines), exits 0 or 1. .ci/peers/chromium.sh also bounds the whole process with `timeout`.
//
// The gateway (and fault proxy, and Redis) is started here through stack.mjs before the page
// opens, and stopped after: what the test's `stack` export asks for, or DEFAULT_STACK for a test
// without one. The page opens on that stack (through the proxy when there is one).
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
import { launch, openPage, withTimeout, DEFAULT_TIMEOUT_MS } from './lib.mjs';
import { startStack } from './stack.mjs';

/** gateway.toml's settings (short SSE streams, fast reconnects) and 50 demo events a second. */
const DEFAULT_STACK = {
  gateway: { config: readFileSync(new URL('./gateway.toml', import.meta.url), 'utf8'), args: ['--demo-rate', '50'] },
};

const [file, userDataDir] = process.argv.slice(2);
if (!file) {
  console.error('usage: STREAMGATE_BIN=path/to/streamgate node run.mjs TEST.mjs [USER_DATA_DIR]');
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
let base;

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
  stack = await withTimeout(startStack(test.stack ?? DEFAULT_STACK, { log }), 30000, 'starting the stack');
  base = stack.base;
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
