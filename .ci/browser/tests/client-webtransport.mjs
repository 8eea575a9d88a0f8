// The browser client (GET /client/streamgate.js) with every transport available: it subscribes
// over WebTransport (its first choice) and stays there. Prints the time to first event.
import { assert, brief } from '../lib.mjs';
import { subscribeInPage, waitFirstEvent, record, assertPath, entryText } from '../client.mjs';

export const name = 'client: all transports available → webtransport';
export const timeoutMs = 30000;
export const stack = { webtransport: 'direct' };

export async function run({ page, log }) {
  await subscribeInPage(page, { topics: ['demo'] });
  const first = await waitFirstEvent(page);
  await page.waitForTimeout(2000);
  const rec = await record(page);
  assertPath(rec, [], 'webtransport');
  assert(rec.log.length === 1, `more than one attempt: ${rec.log.map(entryText).join(' | ')}`);
  assert(rec.count >= 50, `only ${rec.count} demo events in 2 s: ${brief(rec)}`);
  assert(rec.notices.length === 0, `notices: ${brief(rec.notices)}`);
  log(`figure: webtransport: first event after ${Math.round(first.firstEventMs)} ms (${entryText(first.log[0])})`);
}
