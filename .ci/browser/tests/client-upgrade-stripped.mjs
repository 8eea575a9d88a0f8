// The browser client behind a proxy that strips `Upgrade` (faultproxy.mjs strip-upgrade; the page
// loads through it) with UDP closed as well: WebTransport fails, the WebSocket handshake fails
// before opening, and the client settles on SSE. Prints the time to first event.
import { assert, brief } from '../lib.mjs';
import { subscribeInPage, waitFirstEvent, record, assertPath, entryText } from '../client.mjs';

export const name = 'client: Upgrade stripped (and UDP closed) → sse';
export const timeoutMs = 30000;
export const allowConsoleErrors = true; // the failed transports are network errors in the console
export const stack = { webtransport: 'closed', proxy: 'strip-upgrade' };

export async function run({ page, log, stack }) {
  await subscribeInPage(page, { topics: ['demo'] });
  const first = await waitFirstEvent(page);
  await page.waitForTimeout(1500);
  const rec = await record(page);
  assertPath(rec, ['webtransport', 'websocket'], 'sse');
  const ws = rec.log.find((e) => e.transport === 'websocket');
  assert(/before opening/.test(ws.reason), `websocket's reason: ${entryText(ws)}`);
  const stats = stack.proxy.stats();
  assert(stats.stripped_upgrades >= 1, `the proxy stripped no upgrade: ${brief(stats)}`);
  assert(rec.count >= 30, `only ${rec.count} events: ${brief(rec)}`);
  log(`websocket: ${entryText(ws)}`);
  log(`figure: Upgrade stripped → sse: first event after ${Math.round(first.firstEventMs)} ms`);
}
