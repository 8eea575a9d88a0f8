// The browser client when UDP is closed: `webtransport.public_url` names a UDP port where nothing
// listens (the browser's QUIC handshake meets ICMP port unreachable), so WebTransport fails and
// the client falls back to WebSocket, with the reason in its transport log. Prints the time to
// first event.
import { assert, brief } from '../lib.mjs';
import { subscribeInPage, waitFirstEvent, record, assertPath, entryText } from '../client.mjs';

export const name = 'client: UDP closed → websocket';
export const timeoutMs = 30000;
export const allowConsoleErrors = true; // the failed transports are network errors in the console
export const stack = { webtransport: 'closed' };

export async function run({ page, log }) {
  await subscribeInPage(page, { topics: ['demo'] });
  const first = await waitFirstEvent(page);
  await page.waitForTimeout(1500);
  const rec = await record(page);
  assertPath(rec, ['webtransport'], 'websocket');
  const wt = rec.log[0];
  assert(/session|handshake|answer|failed|closed/i.test(wt.reason), `webtransport's reason says nothing: ${entryText(wt)}`);
  const change = rec.transports.find((t) => t.to === 'websocket');
  assert(change && change.reason.includes('webtransport'), `the transport event gives no reason: ${brief(rec.transports)}`);
  assert(rec.count >= 30, `only ${rec.count} events: ${brief(rec)}`);
  log(`webtransport: ${entryText(wt)}`);
  log(`figure: UDP closed → websocket: first event after ${Math.round(first.firstEventMs)} ms`);
}
