// The browser client through a proxy that cuts every live connection at random 0.5–2 s after it
// opens (faultproxy.mjs `cut`) and drops all UDP (`udp-drop`: WebTransport goes through the
// proxy's UDP relay), while Node publishes 2 000 events at 200/s straight to the gateway
// (POST /publish/cuts, around the proxy). Then the faults stop (`pass`). The page must receive
// every published id exactly once and in id order, and end on the best transport, WebTransport.
// Prints how long the client took to move back to WebTransport after the faults stopped.
//
// The gateway keeps 5 000 events per topic (history_events) so that a resume always finds
// history even after the client's backoff; a gap would be surfaced as a notice and fail the
// test. The subscription is to `cuts` only, so the page's ids are exactly the published ones.
import { assert, brief, parseId } from '../lib.mjs';
import { subscribeInPage, waitFirstEvent, record, entryText } from '../client.mjs';

export const name = 'client: random cuts while 2000 events at 200/s → every id once, in order; back to webtransport';
export const timeoutMs = 75000;
export const allowConsoleErrors = true; // every cut is a failed connection in the console
export const stack = {
  webtransport: 'relay',
  proxy: 'pass',
  gateway: { config: '[bus]\nhistory_events = 5000\n', args: ['--no-demo'] },
};

const N = 2000;
const RATE = 200;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function run({ page, log, stack, consoleErrors }) {
  // The subscription starts after a marker event (since), so that it is owed every event
  // published from then on, whenever its first transport works. The faults start before it:
  // its first WebTransport attempt gets no answer.
  const marker = await (await fetch(`${stack.gateway}/publish/cuts`, { method: 'POST', body: '"marker"', headers: { 'content-type': 'application/json' } })).json();
  stack.proxy.setMode('cut,udp-drop');
  await subscribeInPage(page, { topics: ['cuts'], since: marker.id });
  // Publishing starts once a transport carries the subscription, so that all 10 s of it are
  // under the cuts.
  await page.waitForFunction(() => window.sub.transport !== null, null, { timeout: 15000 });

  // Publish N events at RATE/s, straight to the gateway.
  const ids = new Array(N);
  const failures = [];
  const t0 = Date.now();
  const inflight = [];
  for (let i = 0; i < N; i++) {
    const wait = t0 + (i * 1000) / RATE - Date.now();
    if (wait > 0) await sleep(wait);
    inflight.push(
      fetch(`${stack.gateway}/publish/cuts`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ i }) })
        .then(async (r) => {
          const body = await r.json();
          if (r.ok) ids[i] = body.id;
          else failures.push(`${i}: ${r.status} ${brief(body)}`);
        }, (e) => failures.push(`${i}: ${e.message}`)),
    );
  }
  await Promise.all(inflight);
  const publishMs = Date.now() - t0;
  assert(failures.length === 0, `publishing failed: ${failures.slice(0, 5).join('; ')}`);
  const during = await record(page);
  const stats = stack.proxy.stats();
  log(`faults: ${N} published in ${publishMs} ms; proxy cut ${stats.cut} connections, dropped ${stats.udp_dropped} datagrams; ` +
    `${during.log.length} attempts so far, ${during.count} events delivered, on ${during.transport}`);
  // The faults did happen. How many cuts fit in the 10 s depends on how long each WebTransport
  // attempt (4 s, UDP dropped) keeps the client off TCP: 4–7 seen, so at least 3.
  assert(stats.cut >= 3, `the proxy cut only ${stats.cut} connections: ${brief(stats)}`);

  // The faults stop: every event arrives, and the client moves back to WebTransport.
  stack.proxy.setMode('pass');
  const passAt = (await record(page)).now;
  const want = ids.map((id) => parseId(id)).sort((a, b) => (a.seq < b.seq ? -1 : 1));
  const lastWanted = `${want.at(-1).epoch}:${want.at(-1).seq}`;
  try {
    await page.waitForFunction(
      (last) => window.sub.transport === 'webtransport' && window.rec.ids.includes(last),
      lastWanted,
      { timeout: 45000, polling: 100 },
    );
  } catch {
    const r = await record(page);
    throw new Error(`not back on webtransport with every event 45 s after the faults stopped: on ${r.transport}, ` +
      `${r.count}/${N} events; log: ${r.log.slice(-8).map(entryText).join(' | ')}`);
  }
  const rec = await record(page, { ids: true });
  const backAt = [...rec.transports].reverse().find((t) => t.to === 'webtransport').at;

  // Exactly the published ids, once each, in id order.
  const got = rec.ids;
  const dupes = got.length - new Set(got).size;
  assert(dupes === 0, `${dupes} ids delivered twice`);
  for (let i = 1; i < got.length; i++) {
    const a = parseId(got[i - 1]);
    const b = parseId(got[i]);
    assert(a.epoch === b.epoch && b.seq > a.seq, `out of order: ${got[i - 1]} then ${got[i]}`);
  }
  const published = new Set(ids);
  const missing = ids.filter((id) => !got.includes(id));
  const extra = got.filter((id) => !published.has(id));
  assert(missing.length === 0, `${missing.length} published ids never delivered: ${missing.slice(0, 10).join(', ')}`);
  assert(extra.length === 0, `ids delivered that were not published: ${extra.slice(0, 10).join(', ')}`);
  assert(rec.notices.length === 0, `notices: ${brief(rec.notices)}`);
  assert(rec.errors.length === 0, `errors: ${brief(rec.errors)}`);
  assert(!consoleErrors.some((l) => l.startsWith('uncaught')), `uncaught errors: ${consoleErrors.filter((l) => l.startsWith('uncaught')).join(' | ')}`);

  const used = {};
  for (const e of rec.log) used[e.transport] = (used[e.transport] ?? 0) + 1;
  log(`delivered: all ${N} ids once each, in order; ${rec.log.length} attempts (${Object.entries(used).map(([t, n]) => `${t} ${n}`).join(', ')}); ` +
    `transport changes: ${rec.transports.map((t) => t.to ?? '∅').join(' → ')}`);
  log(`figure: faults stopped → back on webtransport after ${backAt - passAt} ms`);
}
