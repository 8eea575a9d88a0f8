// Page-side helpers for the browser client's tests (tests/client-*.mjs): the page imports the
// client the gateway serves (GET /client/streamgate.js), subscribes, and records every event id,
// notice, transport change and error; Node reads the record back.
import { assert, brief } from './lib.mjs';

/**
 * Subscribes in the page with `options` (plus `topics`); resolves once the subscription exists.
 * The record is `window.rec`: { t0, ids[], times[] (ms after subscribe), notices[], transports[],
 * errors[], firstEventMs }.
 */
export async function subscribeInPage(page, options) {
  await page.evaluate(async (options) => {
    const { subscribe } = await import('/client/streamgate.js');
    const rec = { ids: [], times: [], topics: {}, notices: [], transports: [], errors: [], firstEventMs: null, t0: 0 };
    window.rec = rec;
    rec.t0 = performance.now();
    const sub = subscribe(location.origin, options);
    window.sub = sub;
    sub.addEventListener('event', (e) => {
      if (rec.firstEventMs === null) rec.firstEventMs = performance.now() - rec.t0;
      rec.ids.push(e.detail.id);
      rec.times.push(Math.round(performance.now() - rec.t0));
      rec.topics[e.detail.topic] = (rec.topics[e.detail.topic] ?? 0) + 1;
    });
    sub.addEventListener('notice', (e) => rec.notices.push(e.detail));
    sub.addEventListener('transport', (e) => rec.transports.push({ ...e.detail, at: Math.round(performance.now() - rec.t0) }));
    sub.addEventListener('error', (e) => rec.errors.push(e.detail));
  }, options);
}

/** The record, plus the subscription's current transport and transport log. */
export function record(page, { ids = false } = {}) {
  return page.evaluate((ids) => ({
    ...window.rec,
    ids: ids ? window.rec.ids : undefined,
    times: ids ? window.rec.times : undefined,
    count: window.rec.ids.length,
    lastId: window.sub.lastId,
    transport: window.sub.transport,
    log: window.sub.transportLog,
    now: Math.round(performance.now() - window.rec.t0),
  }), ids);
}

/** Waits until the subscription delivered an event while on `transport`. */
export async function waitFirstEvent(page, ms = 20000) {
  try {
    await page.waitForFunction(() => window.rec.firstEventMs !== null, null, { timeout: ms });
  } catch {
    throw new Error(`no event within ${ms} ms: ${brief(await record(page), 1500)}`);
  }
  return record(page);
}

/** One transport-log entry, short, for log lines. */
export function entryText(e) {
  const times = [e.openMs != null && `open ${e.openMs} ms`, e.firstEventMs != null && `1st event ${e.firstEventMs} ms`, e.endMs != null && `end ${e.endMs} ms`];
  return `${e.transport}/${e.role} ${e.outcome} (${times.filter(Boolean).join(', ')})${e.reason ? `: ${e.reason}` : ''}`;
}

/** Asserts the fallback path: the log's connect attempts fail in `failed` order, then `to` opens. */
export function assertPath(rec, failed, to) {
  const connects = rec.log.filter((e) => e.role === 'connect');
  const got = connects.map((e) => `${e.transport}:${e.outcome}`);
  const want = [...failed.map((t) => `${t}:failed`), `${to}:open`];
  assert(
    JSON.stringify(got.slice(0, want.length)) === JSON.stringify(want),
    `fallback path ${got.join(' → ')}, want ${want.join(' → ')}: ${rec.log.map(entryText).join(' | ')}`,
  );
  assert(rec.transport === to, `on ${rec.transport}, want ${to}: ${rec.log.map(entryText).join(' | ')}`);
  assert(rec.errors.length === 0, `errors: ${brief(rec.errors)}`);
}
