// The browser's own WebSocket against GET /ws (docs/PROTOCOL.md §3, §4, §7):
//  1. live: `?topics=demo` delivers demo events (ris_message) with strictly increasing ids;
//  2. resume: a socket closed after event X and reopened with `?since=X` gets exactly the events a
//     witness socket, open all along, got after X — same ids, same data, no gap/reset notice;
//  3. publish: `{"type":"publish",…,"ref":"r1"}` on a `?topics=chat` socket is answered with
//     `published` (ref r1) and comes back as the chat event with that id and data; the demo-only
//     witness never sees it.
import { assert, assertIncreasingIds, brief, parseId } from '../lib.mjs';

export const name = 'websocket: live, resume with since, publish';
export const timeoutMs = 40000;

const NOTICES = ['gap', 'reset', 'lagged', 'error'];

export async function run({ page, log }) {
  // In the page: named sockets that record every message (parsed JSON) until stopped.
  await page.evaluate(() => {
    window.sg = {
      open(name, path) {
        const rec = { messages: [], closed: null, stopped: false, errored: false };
        const ws = new WebSocket('ws://' + location.host + path);
        rec.ws = ws;
        ws.onmessage = (m) => {
          if (rec.stopped) return;
          if (typeof m.data !== 'string') return rec.messages.push({ type: '(binary frame)' });
          try {
            rec.messages.push(JSON.parse(m.data));
          } catch {
            rec.messages.push({ type: '(not JSON)', text: m.data.slice(0, 200) });
          }
        };
        ws.onerror = () => { rec.errored = true; };
        ws.onclose = (e) => { rec.closed = { code: e.code, reason: e.reason }; };
        sg[name] = rec;
        return new Promise((resolve, reject) => {
          ws.addEventListener('open', () => resolve());
          ws.addEventListener('close', (e) => reject(new Error(`${path}: closed before open (code ${e.code})`)));
        });
      },
      events(name) {
        return sg[name].messages.filter((m) => m.type === 'event');
      },
      // Stop recording and close; returns what was recorded up to now.
      stop(name) {
        const rec = sg[name];
        rec.stopped = true;
        rec.ws.close(1000, 'test done');
        return { messages: rec.messages, closed: rec.closed, errored: rec.errored };
      },
      snapshot(name) {
        const rec = sg[name];
        return { messages: rec.messages, closed: rec.closed, errored: rec.errored };
      },
    };
  });
  const open = (n, path) => page.evaluate(([n, path]) => sg.open(n, path), [n, path]);
  const waitEvents = async (n, count, what) => {
    try {
      await page.waitForFunction(([n, count]) => sg.events(n).length >= count || sg[n].closed, [n, count], {
        timeout: 10000,
      });
    } catch (e) {
      throw new Error(`${what}: fewer than ${count} events in 10 s: ${brief(await snapshot(n))}`);
    }
    const s = await snapshot(n);
    assert(!s.closed, `${what}: socket closed (${brief(s.closed)}); got ${brief(s.messages)}`);
  };
  const snapshot = (n) => page.evaluate((n) => sg.snapshot(n), n);
  const stop = (n) => page.evaluate((n) => sg.stop(n), n);
  const eventsOf = (s) => s.messages.filter((m) => m.type === 'event');
  const noNotices = (s, what) => {
    const bad = s.messages.filter((m) => NOTICES.includes(m.type) || m.type.startsWith('('));
    assert(bad.length === 0, `${what}: unexpected messages ${brief(bad)}`);
  };
  const checkDemo = (events, what) => {
    for (const e of events) {
      assert(e.topic === 'demo', `${what}: event of topic ${e.topic}: ${brief(e)}`);
      assert(e.content_type === 'json', `${what}: content_type ${e.content_type}: ${brief(e)}`);
      assert(e.data && e.data.type === 'ris_message', `${what}: data.type is not ris_message: ${brief(e)}`);
      assert(Number.isInteger(e.ts) && e.ts > 1.5e15, `${what}: ts is not microseconds: ${brief(e)}`);
    }
    assertIncreasingIds(events, what);
  };

  // 1. live demo events: a witness W stays open throughout; A is the socket that will resume.
  await open('W', '/ws?topics=demo');
  await open('A', '/ws?topics=demo');
  await waitEvents('A', 5, 'live demo (A)');
  const a = await stop('A');
  const aEvents = eventsOf(a);
  noNotices(a, 'live demo (A)');
  checkDemo(aEvents, 'live demo (A)');
  const subscribed = a.messages.find((m) => m.type === 'subscribed');
  if (subscribed) {
    assert(
      Array.isArray(subscribed.topics) && subscribed.topics.includes('demo'),
      `subscribed reply does not name demo: ${brief(subscribed)}`,
    );
  }
  const x = aEvents[aEvents.length - 1];
  const epoch = parseId(x.id).epoch;
  if (subscribed) assert(subscribed.epoch === epoch, `subscribed.epoch ${subscribed.epoch} but ids are ${x.id}`);
  log(`live: ${aEvents.length} demo events ${aEvents[0].id} … ${x.id}` + (subscribed ? ', subscribed reply first' : ''));

  // 2. resume from X after ~15 events went by (50/s demo rate).
  await page.waitForTimeout(300);
  await open('B', `/ws?topics=demo&since=${encodeURIComponent(x.id)}`);
  await waitEvents('B', 25, 'resume (B)');
  const bNow = eventsOf(await snapshot('B'));
  const lastSeq = parseId(bNow[bNow.length - 1].id).seq;
  await page.waitForFunction(
    ([lastSeq]) => sg.events('W').some((e) => BigInt(e.id.split(':')[1]) >= BigInt(lastSeq)),
    [String(lastSeq)],
    { timeout: 10000 },
  );
  const b = await stop('B');
  const bEvents = eventsOf(b);
  noNotices(b, 'resume (B)');
  checkDemo(bEvents, 'resume (B)');
  const first = bEvents[0];
  assert(parseId(first.id).epoch === epoch, `resume: first id ${first.id} is not of epoch ${epoch}`);
  assert(parseId(first.id).seq > parseId(x.id).seq, `resume: first id ${first.id} is not after ${x.id}`);

  const w = await snapshot('W');
  const wEvents = eventsOf(w);
  noNotices(w, 'witness (W)');
  checkDemo(wEvents, 'witness (W)');
  const at = wEvents.findIndex((e) => e.id === x.id);
  assert(at >= 0, `witness never saw ${x.id} (saw ${wEvents[0]?.id} … ${wEvents[wEvents.length - 1]?.id})`);
  const expected = wEvents.slice(at + 1, at + 1 + bEvents.length);
  assert(
    expected.length === bEvents.length,
    `witness has ${expected.length} events after ${x.id}, the resumed socket ${bEvents.length}`,
  );
  for (let i = 0; i < bEvents.length; i++) {
    const got = bEvents[i];
    const want = expected[i];
    assert(
      got.id === want.id,
      `resume: event #${i + 1} after ${x.id} is ${got.id}, the witness has ${want.id} (lost or repeated events)`,
    );
    assert(JSON.stringify(got.data) === JSON.stringify(want.data), `resume: data of ${got.id} differs from the witness's`);
  }
  log(`resume since ${x.id}: ${bEvents.length} events ${first.id} … ${bEvents[bEvents.length - 1].id}, identical to the witness`);

  // 3. publish from the browser on a chat socket.
  await open('C', '/ws?topics=chat');
  const message = { type: 'publish', topic: 'chat', content_type: 'json', data: { hello: 'from chromium' }, ref: 'r1' };
  await page.evaluate((m) => sg.C.ws.send(JSON.stringify(m)), message);
  try {
    await page.waitForFunction(
      () =>
        sg.C.closed ||
        (sg.C.messages.some((m) => m.type === 'published') && sg.C.messages.some((m) => m.type === 'event')) ||
        sg.C.messages.some((m) => m.type === 'error'),
      null,
      { timeout: 10000 },
    );
  } catch {
    throw new Error(`publish: no published reply and chat event in 10 s: ${brief(await snapshot('C'))}`);
  }
  const c = await stop('C');
  noNotices(c, 'publish (C)');
  const published = c.messages.filter((m) => m.type === 'published');
  const chat = eventsOf(c);
  assert(published.length === 1, `publish: want one published reply, got ${brief(c.messages)}`);
  assert(published[0].ref === 'r1', `publish: reply ref is ${brief(published[0].ref)}, want "r1"`);
  const pid = parseId(published[0].id);
  assert(pid.epoch === epoch, `publish: id ${published[0].id} is not of epoch ${epoch}`);
  assert(chat.length === 1, `publish: want one chat event, got ${brief(chat)}`);
  const ev = chat[0];
  assert(ev.topic === 'chat', `publish: event topic ${ev.topic}`);
  assert(ev.id === published[0].id, `publish: event id ${ev.id} but published id ${published[0].id}`);
  assert(ev.content_type === 'json', `publish: event content_type ${ev.content_type}`);
  assert(
    JSON.stringify(ev.data) === JSON.stringify(message.data),
    `publish: event data ${brief(ev.data)}, want ${brief(message.data)}`,
  );
  log(`publish: published ${published[0].id} (ref r1), chat event with the same id and data`);

  // The demo-only witness must not have received the chat event.
  await page.waitForTimeout(100);
  const w2 = await stop('W');
  noNotices(w2, 'witness (W)');
  const foreign = eventsOf(w2).filter((e) => e.topic !== 'demo');
  assert(foreign.length === 0, `witness subscribed to demo got ${brief(foreign)}`);
  checkDemo(eventsOf(w2), 'witness (W)');
  log(`witness: ${eventsOf(w2).length} demo events, none of another topic`);
}
