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
  let paused = false;
  const publisher = (async () => {
    for (let i = 0; !stopping; i++) {
      if (paused) {
        await sleep(10);
        continue;
      }
      const r = await fetch(`${stack.gateway}/publish/restart`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ i }),
      }).then(async (res) => (res.ok ? (await res.json()).id : null), () => null);
      if (r) ids.push(r);
      else refused++;
      await sleep(10);
    }
  })();

  // A graceful restart (SIGTERM) mid-stream, then a crash (SIGKILL). Before the crash the
  // publisher pauses for a second, so that the browser has nothing to acknowledge while the
  // gateway is down: a packet it sent to the closed UDP port would come back as ICMP port
  // unreachable and end the session at once, hiding the case this bounds — a dead gateway that
  // says nothing, noticed only through QUIC's idle timeout.
  const restarts = [];
  for (const signal of ['SIGTERM', 'SIGKILL']) {
    await sleep(3000);
    if (signal === 'SIGKILL') {
      paused = true;
      await sleep(1000);
    }
    const t = Date.now();
    const at = (await record(page)).now;
    await stack.restartGateway({ signal });
    restarts.push({ signal, at, downMs: Date.now() - t });
    paused = false;
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
  // For each restart: the time without an event in the page, from the last event before it to
  // the first after it, and from the restart to the first event after it.
  for (const r of restarts) {
    r.again = rec.times.find((t) => t > r.at);
    const lastBefore = rec.times.filter((t) => t <= r.at).at(-1);
    log(`figure: gateway ${r.signal === 'SIGKILL' ? 'crash (SIGKILL, the publisher paused 1 s before)' : 'restart (SIGTERM)'}, down ${r.downMs} ms → ` +
      `no event in the page for ${r.again - lastBefore} ms, events again ${r.again - r.at} ms after the ${r.signal === 'SIGKILL' ? 'crash' : 'restart'}`);
  }
  // The bound: the first event after the crash comes within QUIC's idle timeout, the restart
  // and a little (the idle timer runs from the last packet of the dead gateway, before the crash).
  const crash = restarts[1];
  const again = crash.again;
  const bound = QUIC_IDLE_MS + crash.downMs + SLACK_MS;
  assert(again !== undefined && again - crash.at <= bound, `events again ${again - crash.at} ms after the crash: over QUIC's idle timeout + the restart (${bound} ms)`);
}
