// The `eventsource` npm package (a WHATWG EventSource for Node, pinned in package.json) as a real
// SSE peer of the gateway binary; .ci/peers/eventsource.sh starts the gateways and runs this:
//   node eventsource.mjs BASE_A BASE_B
// BASE_A: demo at 50/s and nothing else published, `[sse] max_stream_duration = 1.5`, `retry = 0.2`.
// BASE_B: no demo, `--history-events 5`; this script is its only publisher (POST /publish/es).
// Prints `ok: CHECK` / `FAIL: CHECK: reason` per check, then `eventsource: N passed, M failed`.
//
// Witness: on BASE_A only `demo` publishes, so its ids have consecutive seq (checked against
// GET /topics: demo's published count equals the seq of its newest id); "nothing lost or
// repeated" is then "each seq is the previous + 1". On BASE_B the witness is the ids that
// POST /publish answered.
import { EventSource } from 'eventsource';

const [baseA, baseB] = process.argv.slice(2);
if (!baseA || !baseB) {
  console.error('usage: node eventsource.mjs BASE_A BASE_B');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const brief = (v, max = 300) => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > max ? s.slice(0, max) + '…' : s;
};
function assert(cond, message) {
  if (!cond) throw new Error(message);
}
function parseId(id) {
  const m = typeof id === 'string' && /^([A-Za-z0-9]{1,32}):([0-9]+)$/.exec(id);
  if (!m) throw new Error(`not an event id (epoch:seq): ${brief(id)}`);
  return { epoch: m[1], seq: Number(m[2]) };
}
async function until(pred, ms, what, dump = () => '') {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms ${dump()}`);
    await sleep(10);
  }
}

// An EventSource that records events of `topics`, notices, opens and errors. `lastEventId`, when
// given, is sent as the Last-Event-ID header of the first request (the package's documented way to
// set request headers: its `fetch` option); later reconnects send the package's own.
function open(url, { topics, lastEventId } = {}) {
  const rec = { events: [], notices: [], opens: [], errors: [], other: [] };
  const init = lastEventId
    ? {
        fetch: (input, init) => {
          const headers = { ...init.headers };
          if (!rec.opens.length && !rec.errors.length) headers['Last-Event-ID'] = lastEventId;
          return fetch(input, { ...init, headers });
        },
      }
    : {};
  const es = new EventSource(url, init);
  rec.es = es;
  es.addEventListener('open', () => rec.opens.push(Date.now()));
  es.addEventListener('error', (e) =>
    rec.errors.push({ t: Date.now(), readyState: es.readyState, code: e.code, message: e.message }),
  );
  for (const topic of topics) {
    es.addEventListener(topic, (e) => {
      let env = null;
      try {
        env = JSON.parse(e.data);
      } catch {
        rec.other.push({ why: 'data is not JSON', data: String(e.data).slice(0, 200) });
      }
      rec.events.push({ type: e.type, lastEventId: e.lastEventId, env, conn: rec.opens.length });
    });
  }
  for (const n of ['@gap', '@reset', '@lagged', '@notice']) {
    es.addEventListener(n, (e) => {
      let env = null;
      try {
        env = JSON.parse(e.data);
      } catch {}
      rec.notices.push({ name: n, env, lastEventId: e.lastEventId, before: rec.events.length });
    });
  }
  es.addEventListener('message', (e) => rec.other.push({ why: 'unnamed event', data: String(e.data).slice(0, 200) }));
  rec.close = () => es.close();
  rec.dump = () =>
    brief({ readyState: es.readyState, opens: rec.opens.length, errors: rec.errors, events: rec.events.length, notices: rec.notices, other: rec.other }, 600);
  return rec;
}

function checkEnvelope(e, topic, what) {
  const env = e.env;
  assert(env, `${what}: event without a JSON envelope`);
  assert(e.type === topic, `${what}: event name ${e.type}, want ${topic}`);
  assert(env.type === 'event' && env.topic === topic, `${what}: envelope ${brief(env)}`);
  assert(e.lastEventId === env.id, `${what}: lastEventId ${e.lastEventId}, envelope id ${env.id}`);
  parseId(env.id);
  assert(Number.isInteger(env.ts) && env.ts > 1.5e15, `${what}: ts is not microseconds: ${brief(env)}`);
  assert(['json', 'text', 'binary'].includes(env.content_type), `${what}: content_type ${env.content_type}`);
}

// Each seq is the previous + 1, starting right after `afterSeq` (if given).
function checkConsecutive(events, afterSeq, what) {
  let prev = afterSeq;
  for (const e of events) {
    const seq = parseId(e.env.id).seq;
    if (prev !== undefined && seq !== prev + 1) {
      throw new Error(`${what}: after seq ${prev} came ${e.env.id} (${seq > prev + 1 ? `${seq - prev - 1} lost` : 'repeated or out of order'})`);
    }
    prev = seq;
  }
}

async function getJson(url, headers = {}) {
  const r = await fetch(url, { headers, signal: AbortSignal.timeout(5000) });
  const text = await r.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {}
  return { status: r.status, body, text };
}

async function publish(topic, payload) {
  const r = await fetch(`${baseB}/publish/${topic}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(payload),
    signal: AbortSignal.timeout(5000),
  });
  const body = await r.json();
  assert(r.status === 200 && typeof body.id === 'string', `POST /publish/${topic}: ${r.status} ${brief(body)}`);
  return body.id;
}

// ---- the checks -------------------------------------------------------------------------------
const results = [];
const open_ = [];
async function check(name, ms, fn) {
  const t0 = Date.now();
  let timer;
  try {
    const note = await Promise.race([
      fn(),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms); }),
    ]);
    console.log(`ok: ${name} (${Date.now() - t0} ms)${note ? `\n  ${note}` : ''}`);
    results.push(true);
  } catch (e) {
    console.log(`FAIL: ${name}: ${e?.message ?? e} (${Date.now() - t0} ms)`);
    results.push(false);
  } finally {
    clearTimeout(timer);
    while (open_.length) open_.pop().close();
  }
}
const track = (rec) => (open_.push(rec), rec);

// Preconditions for the consecutive-seq witness on A: only demo publishes there.
async function demoIsAlone(lastSeq) {
  const t = await getJson(`${baseA}/topics`);
  assert(t.status === 200 && Array.isArray(t.body?.topics), `GET /topics: ${t.status} ${t.text.slice(0, 200)}`);
  const busy = t.body.topics.filter((x) => x.published > 0);
  assert(busy.length === 1 && busy[0].topic === 'demo', `GET /topics: more than demo publishes on A: ${brief(busy)}`);
  const newest = parseId(busy[0].history.last_id).seq;
  assert(busy[0].published === newest, `GET /topics: demo published ${busy[0].published} but its newest id is seq ${newest}`);
  if (lastSeq !== undefined) assert(newest >= lastSeq, `GET /topics: newest seq ${newest} is behind ours ${lastSeq}`);
}

let live; // what check 1 left for check 2: { lastId }

await check('live: /sse?topics=demo, 20 events, envelopes, consecutive ids', 15000, async () => {
  await demoIsAlone();
  const a = track(open(`${baseA}/sse?topics=demo`, { topics: ['demo'] }));
  await until(() => a.events.length >= 20 || a.es.readyState === 2, 10000, '20 demo events', a.dump);
  a.close();
  const events = a.events.slice(0, 20);
  assert(a.notices.length === 0 && a.other.length === 0, `unexpected: ${a.dump()}`);
  for (const e of events) {
    checkEnvelope(e, 'demo', 'live');
    assert(e.env.content_type === 'json' && e.env.data?.type === 'ris_message', `live: data ${brief(e.env.data)}`);
  }
  checkConsecutive(events, undefined, 'live');
  const last = events.at(-1).env.id;
  await demoIsAlone(parseId(last).seq);
  live = { lastId: last };
  return `${events.length} events ${events[0].env.id} … ${last}`;
});

await check('resume: close, reconnect with Last-Event-ID = last id, nothing lost or repeated', 15000, async () => {
  assert(live, 'no live stream to resume (the live check failed)');
  await sleep(400); // about 20 demo events go by while disconnected
  const b = track(open(`${baseA}/sse?topics=demo`, { topics: ['demo'], lastEventId: live.lastId }));
  await until(() => b.events.length >= 40 || b.es.readyState === 2, 10000, '40 events after resuming', b.dump);
  b.close();
  assert(b.notices.length === 0 && b.other.length === 0, `unexpected: ${b.dump()}`);
  b.events.forEach((e) => checkEnvelope(e, 'demo', 'resume'));
  checkConsecutive(b.events, parseId(live.lastId).seq, `resume after ${live.lastId}`);
  await demoIsAlone(parseId(b.events.at(-1).env.id).seq);
  return `Last-Event-ID ${live.lastId} → ${b.events[0].env.id} … ${b.events.at(-1).env.id} (${b.events.length} events, consecutive)`;
});

await check('server-ended streams (max_stream_duration 1.5 s): the package reconnects with Last-Event-ID', 20000, async () => {
  const c = track(open(`${baseA}/sse?topics=demo`, { topics: ['demo'] }));
  await until(
    () => c.es.readyState === 2 || (c.opens.length >= 3 && c.events.some((e) => e.conn >= 3)),
    15000,
    'two stream ends and an event after the second reconnect',
    c.dump,
  );
  await sleep(200);
  c.close();
  assert(c.notices.length === 0 && c.other.length === 0, `unexpected: ${c.dump()}`);
  assert(c.opens.length >= 3, `only ${c.opens.length} opens: ${c.dump()}`);
  const streams = [];
  const reconnects = [];
  for (let i = 0; i < c.opens.length - 1; i++) {
    const err = c.errors[i];
    assert(err, `open #${i + 2} without an error before it: ${c.dump()}`);
    assert(err.readyState === 0, `error #${i + 1} with readyState ${err.readyState} (${err.message}): no reconnect`);
    streams.push(err.t - c.opens[i]);
    reconnects.push(c.opens[i + 1] - err.t);
  }
  for (const ms of streams) assert(ms >= 1200 && ms <= 6000, `a stream lasted ${ms} ms; max_stream_duration is 1.5 s (${streams})`);
  for (const ms of reconnects) assert(ms <= 2500, `reconnecting took ${ms} ms; retry is 200 ms (${reconnects})`);
  c.events.forEach((e) => checkEnvelope(e, 'demo', 'reconnects'));
  checkConsecutive(c.events, undefined, 'across server-side stream ends');
  await demoIsAlone(parseId(c.events.at(-1).env.id).seq);
  const per = [];
  for (const e of c.events) per[e.conn - 1] = (per[e.conn - 1] ?? 0) + 1;
  return `${c.opens.length} connections (streams ${streams.join('/')} ms, reconnects ${reconnects.join('/')} ms), ` +
    `${c.events.length} events ${c.events[0].env.id} … ${c.events.at(-1).env.id}, per connection ${per.join('/')}, consecutive`;
});

// ---- B: history 5, no demo, our own publishes --------------------------------------------------
const B = { ids: [] }; // ids[i] = id of the (i+1)-th publish to `es`
const pub = async (n) => {
  for (let i = 0; i < n; i++) B.ids.push(await publish('es', { n: B.ids.length + 1 }));
};
const esIds = (rec) => rec.events.map((e) => e.env.id);
const sameIds = (got, want, what) =>
  assert(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${brief(got, 500)}, want ${brief(want, 500)}`);

await check('B: live, then resume with Last-Event-ID inside history (5 events kept)', 15000, async () => {
  const h = await getJson(`${baseB}/healthz`);
  B.epoch = h.body?.bus?.epoch;
  assert(B.epoch, `GET /healthz on B: ${h.text.slice(0, 200)}`);
  const a = track(open(`${baseB}/sse?topics=es`, { topics: ['es'] }));
  await until(() => a.opens.length >= 1 || a.es.readyState === 2, 5000, 'open', a.dump);
  await pub(3);
  await until(() => a.events.length >= 3, 5000, 'the 3 published events', a.dump);
  a.close();
  a.events.forEach((e) => checkEnvelope(e, 'es', 'B live'));
  sameIds(esIds(a), B.ids.slice(0, 3), 'B live');
  for (const [i, e] of a.events.entries()) assert(e.env.data?.n === i + 1, `B live: data ${brief(e.env.data)}`);
  await pub(3); // 4..6 while disconnected
  const b = track(open(`${baseB}/sse?topics=es`, { topics: ['es'], lastEventId: B.ids[2] }));
  await until(() => b.events.length >= 3, 5000, 'events 4..6 after resuming', b.dump);
  await pub(1); // 7, live
  await until(() => b.events.length >= 4, 5000, 'event 7 live', b.dump);
  await sleep(100);
  b.close();
  assert(b.notices.length === 0 && b.other.length === 0, `unexpected: ${b.dump()}`);
  sameIds(esIds(b), B.ids.slice(3, 7), `B resume after ${B.ids[2]}`);
  return `live ${B.ids[0]}…${B.ids[2]}; Last-Event-ID ${B.ids[2]} → ${esIds(b).join(', ')}`;
});

await check('B: Last-Event-ID evicted from history → @gap (after, lost_through), then the kept events', 15000, async () => {
  assert(B.ids.length === 7, 'the previous check did not publish 7 events');
  await pub(10); // 8..17; history keeps 13..17
  const g = track(open(`${baseB}/sse?topics=es`, { topics: ['es'], lastEventId: B.ids[6] }));
  await until(() => g.events.length >= 5, 5000, 'the 5 kept events', g.dump);
  await sleep(100);
  g.close();
  assert(g.other.length === 0, `unexpected: ${g.dump()}`);
  assert(g.notices.length === 1 && g.notices[0].name === '@gap', `want one @gap, got ${brief(g.notices)}`);
  const gap = g.notices[0];
  assert(gap.before === 0, `@gap came after ${gap.before} events`);
  const want = { type: 'gap', topic: 'es', after: B.ids[6], lost_through: B.ids[11] };
  assert(JSON.stringify(gap.env) === JSON.stringify(want), `@gap data ${brief(gap.env)}, want ${brief(want)}`);
  sameIds(esIds(g), B.ids.slice(12, 17), 'after the @gap');
  assert(g.es.readyState === 2, 'closed');
  return `@gap ${brief(gap.env)}, then ${esIds(g)[0]} … ${esIds(g).at(-1)}`;
});

await check('B: Last-Event-ID of another epoch → @reset, then every kept event', 15000, async () => {
  assert(B.ids.length === 17, 'the previous checks did not publish 17 events');
  const other = B.epoch === 'otherepoch0' ? 'otherepoch1' : 'otherepoch0';
  const r = track(open(`${baseB}/sse?topics=es`, { topics: ['es'], lastEventId: `${other}:3` }));
  await until(() => r.events.length >= 5, 5000, 'the 5 kept events', r.dump);
  await sleep(100);
  r.close();
  assert(r.other.length === 0, `unexpected: ${r.dump()}`);
  // PROTOCOL.md §4: another epoch → "a reset notice, then every kept event" (§3.1: "delivery
  // restarts with the oldest kept event"): no @gap for what the current epoch evicted before.
  assert(
    r.notices.length === 1 && r.notices[0].name === '@reset' && r.notices[0].before === 0,
    `want one @reset, first, and no other notice (§4), got ${r.notices.map((n) => `${n.name} ${brief(n.env)}`).join(' then ')}`,
  );
  const want = { type: 'reset', requested: `${other}:3`, epoch: B.epoch };
  assert(JSON.stringify(r.notices[0].env) === JSON.stringify(want), `@reset data ${brief(r.notices[0].env)}, want ${brief(want)}`);
  sameIds(esIds(r), B.ids.slice(12, 17), 'after the @reset');
  return `@reset ${brief(r.notices[0].env)}, then ${esIds(r).length} kept events`;
});

await check('B: ?since= resumes the first connection; Last-Event-ID wins over ?since=', 15000, async () => {
  const s = track(open(`${baseB}/sse?topics=es&since=${encodeURIComponent(B.ids[13])}`, { topics: ['es'] }));
  await until(() => s.events.length >= 3, 5000, '3 events after since', s.dump);
  await sleep(100);
  s.close();
  sameIds(esIds(s), B.ids.slice(14, 17), `?since=${B.ids[13]}`);
  const both = track(open(`${baseB}/sse?topics=es&since=${encodeURIComponent(B.ids[12])}`, { topics: ['es'], lastEventId: B.ids[15] }));
  await until(() => both.events.length >= 1, 5000, 'an event', both.dump);
  await sleep(150);
  both.close();
  sameIds(esIds(both), B.ids.slice(16, 17), `Last-Event-ID ${B.ids[15]} with ?since=${B.ids[12]}`);
  assert(s.notices.length + both.notices.length === 0, 'unexpected notices');
  return `since ${B.ids[13]} → ${esIds(s).join(', ')}; header ${B.ids[15]} beats since ${B.ids[12]} → ${esIds(both)}`;
});

await check('B: Last-Event-ID ahead of the newest id (cursor_ahead) or malformed (bad_cursor) → 400, no reconnect', 15000, async () => {
  const notes = [];
  for (const [value, code] of [[`${B.epoch}:999999`, 'cursor_ahead'], ['not-an-id', 'bad_cursor']]) {
    const x = track(open(`${baseB}/sse?topics=es`, { topics: ['es'], lastEventId: value }));
    await until(() => x.errors.length >= 1, 5000, `error event for Last-Event-ID ${value}`, x.dump);
    await sleep(500); // a reconnect (there must be none) would show as another error or an open
    assert(x.es.readyState === 2, `Last-Event-ID ${value}: readyState ${x.es.readyState}, want CLOSED (2): ${x.dump()}`);
    assert(x.errors[0].code === 400, `Last-Event-ID ${value}: error code ${x.errors[0].code} (${x.errors[0].message}), want 400`);
    assert(x.opens.length === 0 && x.events.length === 0 && x.errors.length === 1, `Last-Event-ID ${value}: ${x.dump()}`);
    const r = await getJson(`${baseB}/sse?topics=es`, { 'Last-Event-ID': value });
    assert(r.status === 400 && r.body?.error?.code === code, `GET /sse with Last-Event-ID ${value}: ${r.status} ${r.text.slice(0, 200)}`);
    notes.push(`${value} → 400 ${code}`);
  }
  return notes.join('; ');
});

const passed = results.filter(Boolean).length;
const failed = results.length - passed;
console.log(`eventsource: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
