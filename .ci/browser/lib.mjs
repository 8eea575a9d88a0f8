// Shared launcher for the headless-Chromium peer tests (.ci/peers/chromium.sh runs them).
//
// Chromium is Debian's /usr/bin/chromium driven through playwright-core: nothing is downloaded at
// run time. A test is a module in tests/ that exports
//
//   export const name = 'what it checks';
//   export const timeoutMs = 30000;            // optional, default DEFAULT_TIMEOUT_MS
//   export const allowConsoleErrors = false;   // optional: console errors fail the test unless true
//   export async function run({ page, base, consoleErrors, log }) { ...throw on failure... }
//
// `page` is already open on a page served by the gateway (same origin as `base`), so code passed
// to `page.evaluate` can use relative URLs, `location.host` for ws:// URLs, and so on.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const DEFAULT_TIMEOUT_MS = 30000;
// Flags for running as root in a container. playwright adds --headless itself for headless: true,
// and passes --user-data-dir from the launchPersistentContext argument.
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/// Launches Chromium with a fresh profile in `userDataDir` (created here when not given, and then
/// removed by `close`). Returns { context, version, close }.
export async function launch({ userDataDir, args = [] } = {}) {
  const ownDir = !userDataDir;
  const dir = userDataDir || mkdtempSync(join(tmpdir(), 'streamgate-chromium-'));
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...args],
    timeout: 30000,
    // run.mjs handles signals itself: playwright's handler closes the browser but leaves the node
    // process running, so `timeout`'s SIGTERM would not end a hung test.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const version = context.browser()?.version() ?? (await versionFromPage(context));
  return {
    context,
    version,
    async close() {
      await context.close().catch(() => {});
      if (ownDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

async function versionFromPage(context) {
  const page = await context.newPage();
  try {
    return await page.evaluate(() => navigator.userAgent.match(/Chrome\/([\d.]+)/)?.[1] ?? '?');
  } finally {
    await page.close();
  }
}

/// Opens `base + path` (a page served by the gateway; `/healthz` answers 200 on every build) and
/// collects what the page reports: `consoleErrors` gets console.error lines and uncaught page
/// exceptions, `console` every console line (for the failure report).
export async function openPage(context, base, path = '/healthz') {
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleErrors = [];
  const consoleLines = [];
  page.on('console', (m) => {
    const where = m.location()?.url ?? '';
    const line = `${m.type()}: ${m.text()}${where ? ` (${where})` : ''}`;
    consoleLines.push(line);
    // Chromium asks for /favicon.ico on its own; the gateway's 404 for it is not a test failure.
    if (m.type() === 'error' && !where.endsWith('/favicon.ico')) consoleErrors.push(line);
  });
  page.on('pageerror', (e) => {
    consoleErrors.push(`uncaught: ${e.message}`);
    consoleLines.push(`uncaught: ${e.message}`);
  });
  page.setDefaultTimeout(15000);
  const response = await page.goto(base + path, { waitUntil: 'load' });
  if (!response || !response.ok()) {
    throw new Error(`opening ${base + path}: HTTP ${response ? response.status() : 'no response'}`);
  }
  return { page, consoleErrors, consoleLines };
}

/// Rejects with a clear message if `promise` takes longer than `ms`.
export function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// ---- helpers for assertions in tests ---------------------------------------------------------

export function assert(condition, message) {
  if (!condition) throw new Error(message);
}

/// Parses an event id `epoch:seq` (PROTOCOL.md §2); throws if it is not one.
export function parseId(id) {
  const m = typeof id === 'string' && /^([A-Za-z0-9]{1,32}):([0-9]+)$/.exec(id);
  if (!m) throw new Error(`not an event id (epoch:seq): ${JSON.stringify(id)}`);
  return { epoch: m[1], seq: BigInt(m[2]) };
}

/// Asserts that `events` (envelopes) have ids of one epoch with strictly increasing seq.
export function assertIncreasingIds(events, what) {
  let prev = null;
  for (const e of events) {
    const id = parseId(e.id);
    if (prev) {
      assert(id.epoch === prev.epoch, `${what}: epoch changed from ${prev.epoch} to ${id.epoch} at ${e.id}`);
      assert(id.seq > prev.seq, `${what}: id ${e.id} does not follow ${prev.epoch}:${prev.seq}`);
    }
    prev = id;
  }
}

/// Page-side WebSocket witnesses, for tests that compare what a transport delivered with what a
/// WebSocket open all along got: `await page.evaluate(installWitnesses)` defines
/// `window.witnesses` in the page, with `open(name, topics)` (resolves once the socket is open),
/// `all[name]` (its live record: `events`, `other` messages, `subscribed`, `closed`),
/// `snapshot(name)` (a copy to return from the page) and `close(name)`.
export function installWitnesses() {
  window.witnesses = {
    all: {},
    open(name, topics) {
      const w = { events: [], other: [], subscribed: null, closed: null };
      const ws = new WebSocket('ws://' + location.host + '/ws?topics=' + topics);
      w.ws = ws;
      ws.onmessage = (m) => {
        let msg;
        try {
          msg = JSON.parse(m.data);
        } catch {
          return w.other.push({ type: '(not JSON)' });
        }
        if (msg.type === 'event') w.events.push(msg);
        else if (msg.type === 'subscribed') w.subscribed = msg;
        else w.other.push(msg);
      };
      ws.onclose = (e) => { w.closed = { code: e.code, reason: e.reason }; };
      witnesses.all[name] = w;
      return new Promise((resolve, reject) => {
        ws.onopen = () => resolve();
        ws.onerror = () => reject(new Error(`witness ${topics}: WebSocket error before open`));
      });
    },
    snapshot(name) {
      const w = witnesses.all[name];
      return { events: w.events, other: w.other, subscribed: w.subscribed, closed: w.closed };
    },
    close(name) {
      witnesses.all[name].ws.close(1000, 'test done');
    },
  };
}

/// Short JSON for failure messages.
export function brief(value, max = 300) {
  const s = JSON.stringify(value) ?? String(value); // undefined (and functions) stringify to undefined
  return s.length > max ? s.slice(0, max) + '…' : s;
}
