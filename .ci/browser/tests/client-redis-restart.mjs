// The browser client across a gateway restart on the Redis bus: a redis-server on a free port,
// the gateway on `--bus redis`, Node publishing 100 events/s straight to the gateway. Mid-stream
// the gateway process is stopped and started again on the same ports (HTTP and UDP), once
// gracefully (SIGTERM) and once as a crash (SIGKILL); publishes
// refused while it is down are not counted. The page must receive every accepted id exactly
// once, in order, with no notice (the epoch and history live in Redis), and be back on
// WebTransport. Prints how long the page went without events, and bounds it: after the crash
// nothing closes the browser's QUIC connection, so the client notices only when QUIC's idle
// timeout fires — the gateway's `webtransport.idle_timeout` (10 s by default; the effective one
// is the smaller of the two ends', and the gateway keeps a live session busy with PINGs every
// `keep_alive_interval`, 3 s) — then resumes from lastId: events again within that, plus the
// restart, plus a little.
import { assert, brief, parseId } from '../lib.mjs';
import { subscribeInPage, waitFirstEvent, record, entryText } from '../client.mjs';

export const name = 'client: gateway restart on the Redis bus → resumes with nothing lost';
export const timeoutMs = 70000;
export const allowConsoleErrors = true; // the restart fails connections, in the console
export const stack = { webtransport: 'direct', redis: true, gateway: { args: ['--no-demo'] } };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// The gateway's default `webtransport.idle_timeout` (transports/webtransport/src/config.rs).
const QUIC_IDLE_MS = 10000;
const SLACK_MS = 3000; // the reconnect, the first event, a busy CI machine

export async function run({ page, log, stack, consoleErrors }) {
  await subscribeInPage(page, { topics: ['restart'] });
  await page.waitForFunction(() => window.sub.transport === 'webtransport', null, { timeout: 15000 });

  const ids = [];
  let refused = 0;
  let stopping = false;
  const publisher = (async () => {
    for (let i = 0; !stopping; i++) {
      const r = await fetch(`${stack.gateway}/publish/restart`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ i }),
      }).then(async (res) => (res.ok ? (await res.json()).id : null), () => null);
      if (r) ids.push(r);
      else refused++;
      await sleep(10);
    }
  })();

  // A graceful restart (SIGTERM), then a crash (SIGKILL), each mid-stream.
  const restarts = [];
  for (const signal of ['SIGTERM', 'SIGKILL']) {
    await sleep(3000);
    const t = Date.now();
    const at = (await record(page)).now;
    await stack.restartGateway({ signal });
    restarts.push({ signal, at, downMs: Date.now() - t });
  }
  const before = ids.length;
  await sleep(3000);
  stopping = true;
  await publisher;
  assert(ids.length > before + 50, `few publishes after the restarts: ${ids.length - before}`);

  const last = ids.at(-1);
  try {
    await page.waitForFunction((last) => window.rec.ids.includes(last), last, { timeout: QUIC_IDLE_MS + 10000, polling: 100 });
  } catch {
    const r = await record(page);
    throw new Error(`the last published id ${last} never arrived: ${r.count}/${ids.length} events, on ${r.transport}; ` +
      `log: ${r.log.slice(-6).map(entryText).join(' | ')}; gateway: ${stack.gatewayOutput().slice(-800)}`);
  }
  await page.waitForFunction(() => window.sub.transport === 'webtransport', null, { timeout: 20000 }).catch(() => {});
  const rec = await record(page, { ids: true });
  const got = rec.ids;
  assert(got.length - new Set(got).size === 0, 'ids delivered twice');
  for (let i = 1; i < got.length; i++) {
    const a = parseId(got[i - 1]);
    const b = parseId(got[i]);
    assert(a.epoch === b.epoch && b.seq > a.seq, `out of order or a new epoch: ${got[i - 1]} then ${got[i]}`);
  }
  const missing = ids.filter((id) => !got.includes(id));
  assert(missing.length === 0, `${missing.length} accepted ids never delivered: ${missing.slice(0, 10).join(', ')}`);
  assert(got.length === ids.length, `${got.length} delivered, ${ids.length} published`);
  assert(rec.notices.length === 0, `notices: ${brief(rec.notices)}`);
  assert(rec.transport === 'webtransport', `on ${rec.transport} after the restart: ${rec.log.slice(-6).map(entryText).join(' | ')}`);
  assert(!consoleErrors.some((l) => l.startsWith('uncaught')), `uncaught errors: ${consoleErrors.join(' | ')}`);

  log(`restarts (down and up again): ${restarts.map((r) => `${r.signal} ${r.downMs} ms`).join(', ')}; ${ids.length} accepted (${refused} refused while down), ` +
    `all delivered once, in order, same epoch; attempts: ${rec.log.map((e) => `${e.transport}:${e.outcome}`).join(' → ')}`);
  // For each restart: the longest time without an event in the page, from the restart to the
  // next one (or the end), counted from the last event before it.
  restarts.forEach((r, k) => {
    const until = restarts[k + 1]?.at ?? Infinity;
    let gap = 0;
    for (let i = 1; i < rec.times.length; i++) {
      if (rec.times[i] > r.at && rec.times[i - 1] < until) gap = Math.max(gap, rec.times[i] - rec.times[i - 1]);
    }
    log(`figure: gateway ${r.signal === 'SIGKILL' ? 'crash (SIGKILL)' : 'restart (SIGTERM)'}, down ${r.downMs} ms → no event in the page for ${gap} ms`);
    r.gap = gap;
  });
  // A graceful restart closes the sessions itself (1001): the client reconnects at once.
  const [graceful, crash] = restarts;
  assert(graceful.gap <= graceful.downMs + SLACK_MS, `no event for ${graceful.gap} ms after a graceful restart (down ${graceful.downMs} ms)`);
  const bound = QUIC_IDLE_MS + crash.downMs + SLACK_MS;
  assert(crash.gap <= bound, `no event for ${crash.gap} ms after the crash: over QUIC's idle timeout + the restart (${bound} ms)`);
}
