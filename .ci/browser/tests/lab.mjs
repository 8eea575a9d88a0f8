// The teaching lab (GET /lab) in a real browser:
//  1. the page loads, and all four panels (each a subscription of the streamgate client pinned
//     to one transport, showing its transport log) (WebSocket, SSE, long polling, WebTransport) receive
//     events, each with a latency figure and a bytes-per-event figure from its tap, a tap the
//     gateway issued to the page (POST /lab/api/taps), which it lists only when named;
//  2. "Publish an event" (POST /publish/lab) reaches all four panels;
//  3. "Drop connection" on each panel closes it, publishes one event while it is down, and the
//     panel resumes from its last id (WebSocket since=, SSE since= / Last-Event-ID, the long
//     poll's cursor, WebTransport since=) and shows "0 missing";
//  4. the wire inspector shows the WebSocket upgrade (101, Sec-WebSocket-Accept) and, after
//     "Publish over WebSocket", that client frame decoded: FIN, opcode, masking key and the
//     unmasked payload;
//  5. a screenshot of the page goes to target/lab.png (repository root);
//  and no stat label of a panel is cut short at 1100, 1400 or 1920 px.
import { mkdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { assert, brief } from '../lib.mjs';

export const name = 'lab: four live panels, drop and resume, wire inspector';
export const timeoutMs = 75000;

const PANELS = ['ws', 'sse', 'poll', 'wt'];
const SCREENSHOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../../target/lab.png');

export async function run({ page, base, log }) {
  await page.setViewportSize({ width: 1600, height: 1000 });
  const response = await page.goto(base + '/lab', { waitUntil: 'load' });
  assert(response && response.ok(), `GET /lab: HTTP ${response?.status()}`);

  const state = () =>
    page.evaluate(() => {
      const { lab } = window.streamgateLab;
      return Object.fromEntries(
        Object.entries(lab.panels).map(([key, p]) => [
          key,
          {
            count: p.count,
            state: p.f.state.textContent,
            latencies: p.latencies.length,
            p50: p.f.p50.textContent,
            bpe: p.f.bpe.textContent,
            resume: p.f.resume.textContent,
            reconnects: p.f.reconnects.textContent,
          },
        ]),
      );
    });

  // 1. every panel gets events, a latency and a bytes/event figure.
  try {
    await page.waitForFunction(
      (keys) =>
        keys.every((k) => {
          const p = window.streamgateLab?.lab.panels[k];
          return p && p.count >= 10 && p.latencies.length >= 5 && p.bytes !== null;
        }),
      PANELS,
      { timeout: 25000 },
    );
  } catch {
    throw new Error(`not every panel received events with latency and bytes/event: ${brief(await state(), 800)}`);
  }
  const first = await state();
  for (const key of PANELS) {
    assert(/ms|s$/.test(first[key].p50), `${key}: median latency not shown: ${brief(first[key])}`);
    assert(/B/.test(first[key].bpe), `${key}: bytes/event not shown: ${brief(first[key])}`);
  }
  // 1a. each panel is a subscription of the client (GET /client/streamgate.js) pinned to its
  //     transport, and shows its transport log.
  const logs = await page.evaluate((keys) => keys.map((k) => document.querySelector(`#panel-${k} [data-field="tlog"]`).textContent), PANELS);
  const names = { ws: 'websocket', sse: 'sse', poll: 'poll', wt: 'webtransport' };
  PANELS.forEach((k, i) => assert(logs[i].includes(names[k]) && logs[i].includes('open in'), `${k}: no transport log with an open attempt: ${brief(logs[i])}`));
  log(`live: ${PANELS.map((k) => `${k} ${first[k].count} events, median ${first[k].p50}, ${first[k].bpe}/event`).join('; ')}`);

  // 1a. no stat label is cut ("bytes/e…", "reconn…"), from a laptop's width to a wide screen.
  for (const width of [1400, 1100, 1920]) {
    await page.setViewportSize({ width, height: 1000 });
    const cut = await page.evaluate(() =>
      [...document.querySelectorAll('.stats dt')]
        .filter((dt) => dt.scrollWidth > dt.clientWidth)
        .map((dt) => `${dt.closest('.panel')?.dataset.transport}: ${dt.textContent}`),
    );
    assert(cut.length === 0, `at ${width} px these stat labels are cut: ${cut.join(', ')}`);
  }
  await page.setViewportSize({ width: 1600, height: 1000 });

  // 1b. the panels' taps were issued by the gateway (128 random bits, base64url), and the
  //     gateway lists no taps unless they are named.
  const ids = await page.evaluate(() => Object.values(window.streamgateLab.lab.panels).map((p) => p.tapId));
  assert(ids.every((id) => /^[A-Za-z0-9_-]{22}$/.test(id ?? '')), `the panels' tap ids were not issued by the gateway: ${brief(ids)}`);
  // From the test, not the page: the page's console must stay free of errors.
  const unnamed = (await page.request.get(base + '/lab/api/taps')).status();
  assert(unnamed === 400, `GET /lab/api/taps without ids answered ${unnamed}, not 400`);
  log(`taps: ${ids.length} issued by the gateway; none listed unnamed`);

  // 2. one event published over HTTP reaches every panel.
  await page.click('#publish-http');
  const published = await page.waitForFunction(() => window.streamgateLab.lab.published.at(-1)?.id, null, {
    timeout: 10000,
  });
  const id = await published.jsonValue();
  try {
    await page.waitForFunction(
      ([keys, id]) => keys.every((k) => window.streamgateLab.lab.panels[k].seenLab.has(id)),
      [PANELS, id],
      { timeout: 10000 },
    );
  } catch {
    throw new Error(`the published event ${id} did not reach every panel: ${brief(await state(), 800)}`);
  }
  log(`publish: ${id} reached all four panels`);

  // 3. drop each connection; it resumes from its last id with nothing missing.
  for (const key of PANELS) {
    await page.click(`#panel-${key} [data-action="drop"]`);
    try {
      await page.waitForFunction(
        (k) => document.querySelector(`#panel-${k} [data-field="resume"]`).classList.contains('ok') ||
          document.querySelector(`#panel-${k} [data-field="resume"]`).classList.contains('bad'),
        key,
        { timeout: 15000 },
      );
    } catch {
      throw new Error(`${key}: no resume verdict after drop: ${brief((await state())[key])}`);
    }
    const after = (await state())[key];
    assert(/0 missing/.test(after.resume), `${key}: resume check failed: ${after.resume}`);
    assert(Number(after.reconnects) >= 1, `${key}: reconnect counter is ${after.reconnects}`);
    log(`drop ${key}: ${after.resume} (reconnects ${after.reconnects})`);
  }

  // 4. the inspector decodes the WebSocket upgrade and a client frame.
  await page.click('#tab-ws');
  await page.click('#publish-ws');
  const marker = 'sent over WebSocket';
  try {
    await page.waitForFunction(
      (marker) =>
        [...document.querySelectorAll('#inspector-items li.item.in')].some((li) => li.textContent.includes(marker)),
      marker,
      { timeout: 15000 },
    );
  } catch {
    const items = await page.evaluate(() =>
      [...document.querySelectorAll('#inspector-items li.item')].slice(0, 10).map((li) => li.querySelector('summary').textContent),
    );
    throw new Error(`no decoded client frame in the inspector: ${brief(items, 800)}`);
  }
  // At the CI's 50 events/s the list moves fast: hold it still while reading.
  await page.click('#inspector-pause');
  const frame = page.locator('#inspector-items li.item.in', { hasText: marker }).first();
  const text = await frame.evaluate((li) => li.textContent);
  for (const want of ['FIN', 'opcode', 'MASK', 'masking key', 'unmasked payload', marker]) {
    assert(text.includes(want), `the client frame's notes lack "${want}": ${brief(text, 600)}`);
  }
  const opening = await page.locator('#inspector-opening').evaluate((ol) => ol.textContent);
  for (const want of ['GET /ws?', '101', 'Sec-WebSocket-Accept', 'SHA-1']) {
    assert(opening.includes(want), `the opening lacks "${want}": ${brief(opening, 600)}`);
  }
  log('inspector: the upgrade (101, Sec-WebSocket-Accept step by step) and a masked client frame, unmasked');

  // 5. a screenshot with that frame open at the top of the list, its payload's bytes lit up
  //    (focusing a field lights up its bytes, as hovering does).
  await frame.locator('summary').click();
  await page.mouse.move(0, 0); // hovering lights up bytes too: only the focused field should
  await frame.evaluate((li) => {
    const list = li.closest('#inspector-items');
    list.scrollTop = li.offsetTop - list.offsetTop;
    const payload = [...li.querySelectorAll('.note[data-range]')].find((n) => n.textContent.startsWith('unmasked payload'));
    payload?.focus({ preventScroll: true });
  });
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true });
  log(`screenshot: ${SCREENSHOT}`);
}
