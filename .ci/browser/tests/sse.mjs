// The browser's own EventSource against GET /sse (docs/PROTOCOL.md §4, §7 "Server-Sent Events"):
//  1. live: `new EventSource('/sse?topics=demo')` with addEventListener('demo') gets demo events:
//     `event:` = topic, `id:` = the envelope's id (MessageEvent.lastEventId), `data:` = the JSON
//     envelope (type, topic, id, ts, content_type, data);
//  2. resume after the server ends the stream: .ci/browser/gateway.toml sets
//     `[sse] max_stream_duration = 1.5` and `retry = 0.2`, so one EventSource, kept open, sees the
//     server end its stream at least twice (`error` with readyState CONNECTING, then `open` again)
//     and reconnects on its own with Last-Event-ID. Across the reconnects the ids must be exactly
//     those a witness WebSocket (/ws?topics=demo, open all along) got: none lost, none repeated,
//     no @gap / @reset / @lagged notice;
//  3. `?since=X` on a new EventSource starts right after X (the witness's next event).
import { assert, assertIncreasingIds, brief, installWitnesses, parseId } from '../lib.mjs';

export const name = 'sse: EventSource live, server-ended streams resumed with Last-Event-ID, since';
export const timeoutMs = 45000;

export async function run({ page, log }) {
  await page.evaluate(installWitnesses);
  await page.evaluate(() => {
    const now = () => performance.now();
    window.sg = {
      // EventSources by name; each records its demo events (with the connection they came on),
      // opens, errors (with readyState at that moment) and anything else it was sent.
      sources: {},
      openSource(name, url) {
        const rec = { url, events: [], opens: [], errors: [], notices: [], stopped: false, bad: [] };
        const es = new EventSource(url);
        rec.es = es;
        es.addEventListener('open', () => rec.opens.push(now()));
        es.addEventListener('error', () => rec.errors.push({ t: now(), readyState: es.readyState }));
        es.addEventListener('demo', (e) => {
          if (rec.stopped) return;
          let env = null;
          try {
            env = JSON.parse(e.data);
          } catch {
            rec.bad.push({ why: 'data is not JSON', data: String(e.data).slice(0, 200) });
          }
          rec.events.push({ conn: rec.opens.length, type: e.type, lastEventId: e.lastEventId, env, t: now() });
        });
        for (const n of ['@gap', '@reset', '@lagged', '@notice', 'message']) {
          es.addEventListener(n, (e) => rec.notices.push({ name: n, data: String(e.data).slice(0, 300) }));
        }
        sg.sources[name] = rec;
      },
      stopSource(name) {
        const rec = sg.sources[name];
        rec.stopped = true;
        rec.es.close();
        return sg.snapshot(name);
      },
      snapshot(name) {
        const r = sg.sources[name];
        return {
          events: r.events, opens: r.opens, errors: r.errors, notices: r.notices, bad: r.bad,
          readyState: r.es.readyState,
        };
      },
    };
  });

  const snapshot = (n) => page.evaluate((n) => sg.snapshot(n), n);
  const witness = () => page.evaluate(() => witnesses.snapshot('W'));
  const waitFor = async (fn, arg, ms, what, dump) => {
    try {
      await page.waitForFunction(fn, arg, { timeout: ms });
    } catch {
      throw new Error(`${what}: not within ${ms} ms; ${brief(await dump(), 600)}`);
    }
  };
  const checkEnvelopes = (events, what) => {
    for (const e of events) {
      const env = e.env;
      assert(env, `${what}: an event without a JSON envelope: ${brief(e)}`);
      assert(e.type === 'demo', `${what}: MessageEvent type ${e.type}, want demo (the event: line)`);
      assert(env.type === 'event', `${what}: envelope type ${env.type}: ${brief(env)}`);
      assert(env.topic === 'demo', `${what}: envelope topic ${env.topic}: ${brief(env)}`);
      assert(e.lastEventId === env.id, `${what}: lastEventId ${e.lastEventId} but envelope id ${env.id}`);
      parseId(env.id);
      assert(env.content_type === 'json', `${what}: content_type ${env.content_type}: ${brief(env)}`);
      assert(Number.isInteger(env.ts) && env.ts > 1.5e15, `${what}: ts is not microseconds: ${brief(env)}`);
      assert(env.data && env.data.type === 'ris_message', `${what}: data.type is not ris_message: ${brief(env)}`);
    }
    assertIncreasingIds(events.map((e) => e.env), what);
  };
  // Every id in `got` (envelopes) must be the witness's next one after the previous, starting
  // right after `afterId` (or at got[0] when afterId is null), with the same data.
  const matchWitness = (got, wEvents, afterId, what) => {
    let at;
    if (afterId === null) {
      at = wEvents.findIndex((e) => e.id === got[0].id);
      assert(at >= 0, `${what}: the witness never saw ${got[0].id} (it has ${wEvents[0]?.id} … ${wEvents.at(-1)?.id})`);
    } else {
      const i = wEvents.findIndex((e) => e.id === afterId);
      assert(i >= 0, `${what}: the witness never saw ${afterId}`);
      at = i + 1;
    }
    const want = wEvents.slice(at, at + got.length);
    assert(want.length === got.length, `${what}: the witness has only ${want.length} events from ${wEvents[at]?.id}, got ${got.length}`);
    for (let i = 0; i < got.length; i++) {
      if (got[i].id !== want[i].id) {
        const prev = i ? got[i - 1].id : afterId ?? '(start)';
        throw new Error(
          `${what}: after ${prev} came ${got[i].id}, the witness's next is ${want[i].id} ` +
            `(${parseId(got[i].id).seq > parseId(want[i].id).seq ? 'events lost' : 'event repeated or out of order'})`,
        );
      }
      assert(JSON.stringify(got[i].data) === JSON.stringify(want[i].data), `${what}: data of ${got[i].id} differs from the witness's`);
    }
  };

  // The witness first, subscribed before any EventSource, so it sees every event they see.
  await page.evaluate(() => witnesses.open('W', 'demo'));
  await waitFor(() => witnesses.all.W.subscribed || witnesses.all.W.events.length > 0, null, 10000, 'witness subscribed', witness);
  const w0 = await witness();
  const epoch = w0.subscribed?.epoch;

  // 1. live
  await page.evaluate(() => sg.openSource('A', '/sse?topics=demo'));
  await waitFor(() => sg.sources.A.events.length >= 5, null, 10000, 'five demo events over SSE', () => snapshot('A'));
  const first = await snapshot('A');
  assert(first.bad.length === 0, `live: ${brief(first.bad)}`);
  checkEnvelopes(first.events, 'live');
  if (epoch) assert(parseId(first.events[0].env.id).epoch === epoch, `live: id ${first.events[0].env.id}, witness epoch ${epoch}`);
  log(`live: ${first.events.length} demo events ${first.events[0].env.id} … ${first.events.at(-1).env.id}, envelopes right`);

  // 2. the same EventSource across at least two server-side stream ends (1.5 s each).
  await waitFor(
    () => {
      const a = sg.sources.A;
      return a.es.readyState === EventSource.CLOSED || (a.opens.length >= 3 && a.events.filter((e) => e.conn >= 3).length >= 5);
    },
    null,
    20000,
    'two server-side stream ends and 5 events after the second reconnect',
    async () => {
      const s = await snapshot('A');
      return { opens: s.opens.length, errors: s.errors, readyState: s.readyState, events: s.events.length, notices: s.notices };
    },
  );
  const a = await page.evaluate(() => sg.stopSource('A'));
  const last = a.events.at(-1).env.id;
  await waitFor(
    (lastSeq) => witnesses.all.W.events.some((e) => BigInt(e.id.split(':')[1]) >= BigInt(lastSeq)),
    String(parseId(last).seq),
    10000,
    `witness reaching ${last}`,
    witness,
  );
  let w = await witness();
  assert(w.other.length === 0, `witness got unexpected messages: ${brief(w.other)}`);
  assert(w.closed === null, `witness closed: ${brief(w.closed)}`);
  assert(a.bad.length === 0, `resume: ${brief(a.bad)}`);
  assert(a.notices.length === 0, `resume: unexpected notices or unnamed events: ${brief(a.notices)}`);
  assert(a.readyState === 2, `resume: readyState ${a.readyState} after close()`);
  // Each server-side end is an `error` while the EventSource stays CONNECTING, then an `open`.
  assert(a.opens.length >= 3, `resume: only ${a.opens.length} opens`);
  assert(a.errors.length >= a.opens.length - 1, `resume: ${a.opens.length} opens but ${a.errors.length} errors`);
  const reconnectMs = [];
  const streamMs = [];
  for (let i = 0; i < a.opens.length - 1; i++) {
    const err = a.errors[i];
    assert(err.readyState === 0, `resume: error #${i + 1} left readyState ${err.readyState} (CLOSED: no reconnect)`);
    streamMs.push(Math.round(err.t - a.opens[i]));
    reconnectMs.push(Math.round(a.opens[i + 1] - err.t));
  }
  // The server ends the stream after max_stream_duration (1.5 s), not earlier; the browser honours
  // `retry: 200` (its default is 3 s).
  for (const ms of streamMs) assert(ms >= 1200 && ms <= 6000, `resume: a stream lasted ${ms} ms (max_stream_duration is 1.5 s): ${streamMs}`);
  for (const ms of reconnectMs) assert(ms <= 2500, `resume: reconnecting took ${ms} ms, retry is 200 ms: ${reconnectMs}`);
  const events = a.events.map((e) => e.env);
  checkEnvelopes(a.events, 'resume');
  matchWitness(events, w.events, null, 'resume across server-side stream ends');
  const perConn = [];
  for (const e of a.events) perConn[e.conn - 1] = (perConn[e.conn - 1] ?? 0) + 1;
  const connsWithEvents = perConn.filter((n) => n > 0).length;
  assert(connsWithEvents >= 3, `resume: events came on ${connsWithEvents} connections only: ${perConn}`);
  // The first event of each later connection came from history (published while disconnected).
  const seams = [];
  for (let i = 1; i < a.events.length; i++) {
    if (a.events[i].conn !== a.events[i - 1].conn) seams.push(`${a.events[i - 1].env.id}→${a.events[i].env.id}`);
  }
  log(
    `resume: one EventSource, ${a.opens.length} connections (streams ${streamMs.join('/')} ms, reconnects ` +
      `${reconnectMs.join('/')} ms), ${events.length} events ${events[0].id} … ${last}, per connection ${perConn.join('/')}, ` +
      `seams ${seams.join(' ')}: identical to the witness, no notice`,
  );

  // 3. ?since= on a fresh EventSource: from an id in the middle of what A got.
  const since = events[Math.floor(events.length / 2)].id;
  await page.evaluate((url) => sg.openSource('B', url), `/sse?topics=demo&since=${encodeURIComponent(since)}`);
  await waitFor(() => sg.sources.B.events.length >= 10, null, 10000, 'ten events with ?since=', () => snapshot('B'));
  const b = await page.evaluate(() => sg.stopSource('B'));
  assert(b.notices.length === 0, `since: unexpected notices: ${brief(b.notices)}`);
  checkEnvelopes(b.events, 'since');
  const bLast = b.events.at(-1).env.id;
  await waitFor(
    (lastSeq) => witnesses.all.W.events.some((e) => BigInt(e.id.split(':')[1]) >= BigInt(lastSeq)),
    String(parseId(bLast).seq),
    10000,
    `witness reaching ${bLast}`,
    witness,
  );
  w = await witness();
  matchWitness(b.events.map((e) => e.env), w.events, since, `?since=${since}`);
  log(`since ${since}: ${b.events.length} events ${b.events[0].env.id} … ${bLast}, the witness's next ones`);
  await page.evaluate(() => witnesses.close('W'));
}
