// The browser client behind a proxy that strips `Upgrade` and buffers event streams
// (faultproxy.mjs strip-upgrade,buffer-sse), with UDP closed: WebTransport and WebSocket fail,
// SSE opens but shows nothing (not even the stream's preamble) within `timeouts.sse`, and the
// client settles on long polling. Prints the time to first event.
import { assert, brief } from '../lib.mjs';
import { subscribeInPage, waitFirstEvent, record, assertPath, entryText } from '../client.mjs';

export const name = 'client: SSE buffered (Upgrade stripped, UDP closed) → poll';
export const timeoutMs = 40000;
export const allowConsoleErrors = true; // the failed transports are network errors in the console
export const stack = { webtransport: 'closed', proxy: 'strip-upgrade,buffer-sse' };

export async function run({ page, log, stack }) {
  await subscribeInPage(page, { topics: ['demo'] });
  const first = await waitFirstEvent(page, 30000);
  await page.waitForTimeout(1500);
  const rec = await record(page);
  assertPath(rec, ['webtransport', 'websocket', 'sse'], 'poll');
  const sse = rec.log.find((e) => e.transport === 'sse');
  assert(/no answer within/.test(sse.reason), `sse's reason: ${entryText(sse)}`);
  const stats = stack.proxy.stats();
  assert(stats.buffered_responses >= 1, `the proxy buffered no event stream: ${brief(stats)}`);
  assert(rec.count >= 30, `only ${rec.count} events: ${brief(rec)}`);
  log(`sse: ${entryText(sse)}`);
  log(`figure: SSE buffered → poll: first event after ${Math.round(first.firstEventMs)} ms`);
}
