// The faults of faultproxy.mjs are real for the browser's own transports (raw WebTransport,
// WebSocket, EventSource and fetch, no client library), so that the client-*.mjs fallback tests
// can rely on them: under `pass` each transport works through the proxy (WebTransport through its
// UDP relay); under its fault it fails the way a real network makes it fail, and the next
// transport still works. Logs the proxy's counters, so a failing fallback test can be told apart
// from a fault that did not happen.
import { assert, withTimeout } from '../lib.mjs';

export const name = 'faults: each fault of the proxy is real for the browser\'s own APIs';
export const timeoutMs = 60000;
export const allowConsoleErrors = true; // every fault is a failed connection in the console
// The stack's SSE streams keep `max_stream_duration = 0`: a stream the gateway ends would hand
// the buffering proxy its whole buffer and hide `buffer-sse`.
export const stack = { webtransport: 'relay', proxy: 'pass', gateway: { args: ['--demo-rate', '20'] } };

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


export async function run({ page, log, stack }) {
  const failures = [];
  for (const [faults, transport, expected] of checks) {
    stack.proxy.setMode(faults);
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
    const line = `${faults}: ${transport} ${expected === false ? 'fails' : 'works'}? ${result.why}`;
    log(`${good ? 'ok' : 'FAIL'}: ${line}`);
    if (!good) failures.push(line);
  }
  stack.proxy.setMode('pass');
  log(`proxy counters: ${JSON.stringify(stack.proxy.stats())}`);
  assert(failures.length === 0, `${failures.length} of ${checks.length} checks failed: ${failures.join(' | ')}`);
}
