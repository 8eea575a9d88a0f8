// Shows in headless Chromium that each fault of faultproxy.mjs is real for the browser's own
// transports (raw WebTransport, WebSocket, EventSource and fetch, no client library), so that
// the browser client's fallback tests can rely on them:
//
//   node .ci/browser/faults.mjs target/release/streamgate
//
// Prints `ok: <fault>: <what the page saw>` per check and `faults: N passed, M failed`.
// Each check: under `pass` the transport works through the proxy; under its fault it fails the
// way a real network makes it fail.
import { startRig } from './faultrig.mjs';
import { launch, openPage, withTimeout } from './lib.mjs';

const bin = process.argv[2] ?? process.env.STREAMGATE_BIN;
if (!bin) {
  console.error('usage: node faults.mjs path/to/streamgate');
  process.exit(2);
}

// In the page: try one transport for `ms`; resolves with what happened.
async function probe(page, transport, ms = 3000) {
  return page.evaluate(
    async ({ transport, ms }) => {
      const deadline = (what) => new Promise((r) => setTimeout(() => r({ ok: false, why: `${what} within ${ms} ms` }), ms));
      if (transport === 'webtransport') {
        const doc = await (await fetch('/wt/cert-hash')).json();
        const wt = new WebTransport(`${doc.url}?topics=demo`, {
          serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(doc.value) }],
        });
        const r = await Promise.race([
          wt.ready.then(() => ({ ok: true, why: `session ready at ${doc.url}` }), (e) => ({ ok: false, why: `ready rejected: ${e.message}` })),
          deadline('no session'),
        ]);
        try { wt.close(); } catch {}
        return r;
      }
      if (transport === 'websocket') {
        const ws = new WebSocket(`ws://${location.host}/ws?topics=demo`);
        const r = await Promise.race([
          new Promise((resolve) => {
            ws.onmessage = (m) => resolve({ ok: true, why: `open, first message ${String(m.data).slice(0, 40)}` });
            ws.onclose = (c) => resolve({ ok: false, why: `closed before a message: code ${c.code}` });
          }),
          deadline('no message'),
        ]);
        ws.close();
        return r;
      }
      if (transport === 'sse') {
        const es = new EventSource('/sse?topics=demo');
        let opened = false;
        es.onopen = () => { opened = true; };
        const r = await Promise.race([
          new Promise((resolve) => es.addEventListener('demo', (e) => resolve({ ok: true, why: `event ${e.lastEventId}` }))),
          deadline('no event').then((x) => ({ ...x, why: `${x.why} (open fired: ${opened})` })),
        ]);
        es.close();
        return r;
      }
      // long polling
      const res = await fetch('/poll?topics=demo&timeout=2');
      const body = await res.json();
      return { ok: res.ok, why: `HTTP ${res.status}, cursor ${body.cursor}` };
    },
    { transport, ms },
  );
}

const checks = [
  // [faults, transport, expected ok]
  ['pass', 'webtransport', true],
  ['pass', 'websocket', true],
  ['pass', 'sse', true],
  ['pass', 'poll', true],
  ['udp-drop', 'webtransport', false],
  ['udp-drop', 'websocket', true],
  ['strip-upgrade', 'websocket', false],
  ['strip-upgrade', 'sse', true],
  ['buffer-sse', 'sse', false],
  ['buffer-sse', 'poll', true],
  ['cut', 'websocket-cut', null],
];

const rig = await startRig({ bin });
let browser;
let passed = 0;
let failed = 0;
try {
  browser = await launch();
  const { page } = await openPage(browser.context, rig.base);
  for (const [faults, transport, expected] of checks) {
    rig.setFaults(faults);
    let result;
    if (transport === 'websocket-cut') {
      // A WebSocket that does receive events is closed (1006) 0.5–2 s after it opened.
      result = await withTimeout(
        page.evaluate(async () => {
          const t0 = performance.now();
          const ws = new WebSocket(`ws://${location.host}/ws?topics=demo`);
          let messages = 0;
          ws.onmessage = () => messages++;
          const code = await new Promise((r) => { ws.onclose = (c) => r(c.code); });
          const after = Math.round(performance.now() - t0);
          return { ok: after >= 400 && after <= 2600 && messages > 0, why: `closed ${code} after ${after} ms, ${messages} messages` };
        }),
        10000,
        'cut',
      );
    } else {
      result = await withTimeout(probe(page, transport), 10000, `${faults} ${transport}`);
    }
    const good = expected === null ? result.ok : result.ok === expected;
    console.log(`${good ? 'ok' : 'FAIL'}: ${faults}: ${transport} ${expected === false ? 'fails' : 'works'}? ${result.why}`);
    if (good) passed++;
    else failed++;
  }
  rig.setFaults('pass');
  console.log(`proxy counters: ${JSON.stringify(rig.stats())}`);
} catch (e) {
  failed++;
  console.log(`FAIL: ${e.message}`);
  console.log(rig.gatewayLog().split('\n').slice(-20).join('\n'));
} finally {
  await browser?.close();
  await rig.close();
}
console.log(`faults: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
