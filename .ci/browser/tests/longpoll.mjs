// The browser's fetch against the long-polling transport (docs/PROTOCOL.md §3.2, §4, §7):
//  1. cursor: `GET /poll?topics=demo&timeout=0` answers at once with `{"cursor":…,"messages":[…]}`;
//  2. loop: `GET /poll?topics=demo&cursor=C&timeout=5`, each time with the cursor of the previous
//     answer, for at least 8 cycles: the cursor advances to the last event's id, every envelope is a
//     demo event, and the events of all the answers together are exactly what a witness WebSocket
//     (/ws?topics=demo, open all along) got after the first cursor: none lost, none repeated;
//  3. hold: a poll on a silent topic with timeout=1 is held about 1 s and answers no messages;
//  4. publish: `POST /poll` with a `publish` message to `chat` answers `published` (with our ref),
//     and a poll on `chat` that was already waiting answers that event, with the same id and data;
//  5. burst: 1100 events published with `POST /poll` to `lpburst` while a poll loop on
//     `demo,lpburst` follows, starting 300 events behind; the loop (full batches of 100 events
//     while catching up, each resumed from the last cursor) delivers every published id once, in
//     order, and exactly the witness's events of those topics over the whole range (more than
//     1000 consecutive ids), with no notice.
import { assert, assertIncreasingIds, brief, installWitnesses, parseId } from '../lib.mjs';

export const name = 'longpoll: cursor loop, hold, POST /poll publish, 1100-event burst';
export const timeoutMs = 75000;

const BURST = 1100;

export async function run({ page, log }) {
  await page.evaluate(installWitnesses);
  await page.evaluate(() => {
    window.sg = {
      // One GET /poll; returns status, headers that matter, parsed body and how long it took.
      async poll(query) {
        const t0 = performance.now();
        const res = await fetch('/poll?' + query, { cache: 'no-store' });
        const text = await res.text();
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {}
        return {
          status: res.status, contentType: res.headers.get('content-type'), cacheControl: res.headers.get('cache-control'),
          body, text: body ? undefined : text.slice(0, 300), ms: performance.now() - t0,
        };
      },
      async publish(message) {
        const res = await fetch('/poll', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(message) });
        const text = await res.text();
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {}
        return { status: res.status, body, text: body ? undefined : text.slice(0, 300) };
      },
      burst: { published: [], failures: [], done: false },
      // Publishes n events to `topic` with POST /poll, `parallel` at a time, never more than
      // `ahead` events beyond sg.burst.readCount (the follower's progress), so history (1000 events
      // per topic) always reaches back to the follower's cursor.
      async runBurst(topic, n, parallel, ahead) {
        const b = sg.burst;
        let next = 0;
        const worker = async () => {
          while (next < n) {
            const i = next++;
            while (i - b.readCount > ahead) await new Promise((r) => setTimeout(r, 5));
            const ref = 'b' + i;
            const r = await sg.publish({ type: 'publish', topic, content_type: 'json', data: { i }, ref });
            if (r.status === 200 && r.body?.type === 'published' && r.body.ref === ref) b.published.push({ i, id: r.body.id });
            else b.failures.push({ i, r });
          }
        };
        await Promise.all(Array.from({ length: parallel }, worker));
        b.done = true;
      },
    };
    sg.burst.readCount = 0;
  });

  const witness = (n) => page.evaluate((n) => witnesses.snapshot(n), n);
  const waitWitness = async (n, seq) => {
    try {
      await page.waitForFunction(
        ([n, seq]) => witnesses.all[n].events.some((e) => BigInt(e.id.split(':')[1]) >= BigInt(seq)),
        [n, String(seq)],
        { timeout: 10000 },
      );
    } catch {
      const w = await witness(n);
      throw new Error(`witness ${n} did not reach seq ${seq} in 10 s (last ${w.events.at(-1)?.id})`);
    }
    const w = await witness(n);
    assert(w.other.length === 0, `witness ${n}: unexpected messages ${brief(w.other)}`);
    assert(w.closed === null, `witness ${n}: closed ${brief(w.closed)}`);
    return w;
  };
  const openWitness = async (n, topics) => {
    await page.evaluate(([n, topics]) => witnesses.open(n, topics), [n, topics]);
    await page.waitForFunction((n) => witnesses.all[n].subscribed || witnesses.all[n].events.length, n, { timeout: 10000 });
  };
  const checkAnswer = (r, what) => {
    assert(r.status === 200, `${what}: HTTP ${r.status}: ${r.text ?? brief(r.body)}`);
    assert(/^application\/json/.test(r.contentType ?? ''), `${what}: content-type ${r.contentType}`);
    assert(r.body && typeof r.body.cursor === 'string' && Array.isArray(r.body.messages), `${what}: body ${r.text ?? brief(r.body)}`);
    parseId(r.body.cursor);
  };
  const checkEnvelope = (e, topic, what) => {
    assert(e.type === 'event', `${what}: a ${e.type} message: ${brief(e)}`);
    assert(e.topic === topic, `${what}: topic ${e.topic}, want ${topic}: ${brief(e)}`);
    parseId(e.id);
    assert(Number.isInteger(e.ts) && e.ts > 1.5e15, `${what}: ts is not microseconds: ${brief(e)}`);
    assert(e.content_type === 'json', `${what}: content_type ${e.content_type}: ${brief(e)}`);
    if (topic === 'demo') assert(e.data && e.data.type === 'ris_message', `${what}: data.type is not ris_message: ${brief(e)}`);
  };
  // `got` must be exactly the witness's events with afterSeq < seq <= got's last seq.
  const matchWitness = (got, wEvents, afterSeq, what) => {
    const lastSeq = got.length ? parseId(got.at(-1).id).seq : afterSeq;
    const want = wEvents.filter((e) => {
      const s = parseId(e.id).seq;
      return s > afterSeq && s <= lastSeq;
    });
    for (let i = 0; i < Math.max(got.length, want.length); i++) {
      const g = got[i];
      const x = want[i];
      if (g?.id !== x?.id) {
        const prev = i ? got[i - 1].id : `seq ${afterSeq}`;
        const why = !g ? 'missing at the end' : !x || parseId(g.id).seq > parseId(x.id).seq ? 'lost' : 'repeated or out of order';
        throw new Error(`${what}: after ${prev} came ${g?.id ?? '(nothing)'}, the witness's next is ${x?.id ?? '(nothing)'} (${why})`);
      }
      assert(JSON.stringify(g.data) === JSON.stringify(x.data), `${what}: data of ${g.id} differs from the witness's`);
    }
    return want.length;
  };

  // The witness first, so it sees everything the polls can.
  await openWitness('W', 'demo');
  const epoch = (await witness('W')).subscribed?.epoch;

  // 1. the first cursor, without waiting
  const r0 = await page.evaluate(() => sg.poll('topics=demo&timeout=0'));
  checkAnswer(r0, 'first poll (timeout=0)');
  assert(r0.ms < 2000, `first poll (timeout=0) took ${Math.round(r0.ms)} ms`);
  const c0 = r0.body.cursor;
  if (epoch) assert(parseId(c0).epoch === epoch, `first cursor ${c0}, witness epoch ${epoch}`);
  for (const m of r0.body.messages) checkEnvelope(m, 'demo', 'first poll');
  log(`first poll: cursor ${c0}, ${r0.body.messages.length} messages, ${Math.round(r0.ms)} ms, cache-control ${r0.cacheControl}`);

  // 2. the loop
  let cursor = r0.body.messages.length ? r0.body.messages.at(-1).id : c0;
  const events = [...r0.body.messages];
  const cycles = [];
  for (let i = 0; i < 60 && (cycles.length < 8 || events.length < 30); i++) {
    const r = await page.evaluate((q) => sg.poll(q), `topics=demo&cursor=${encodeURIComponent(cursor)}&timeout=5`);
    const what = `poll #${i + 1} (cursor ${cursor})`;
    checkAnswer(r, what);
    const msgs = r.body.messages;
    for (const m of msgs) checkEnvelope(m, 'demo', what);
    assertIncreasingIds(msgs, what);
    const next = parseId(r.body.cursor);
    assert(next.epoch === parseId(cursor).epoch, `${what}: cursor epoch changed to ${r.body.cursor}`);
    if (msgs.length) {
      assert(r.body.cursor === msgs.at(-1).id, `${what}: cursor ${r.body.cursor} is not the last event's id ${msgs.at(-1).id}`);
      assert(next.seq > parseId(cursor).seq, `${what}: cursor ${r.body.cursor} did not advance`);
    } else {
      assert(next.seq >= parseId(cursor).seq, `${what}: cursor went back to ${r.body.cursor}`);
    }
    events.push(...msgs);
    cycles.push({ n: msgs.length, ms: Math.round(r.ms) });
    cursor = r.body.cursor;
  }
  assert(cycles.length >= 8 && events.length >= 30, `loop: ${cycles.length} polls, ${events.length} events`);
  assertIncreasingIds(events, 'loop');
  let w = await waitWitness('W', parseId(events.at(-1).id).seq);
  matchWitness(events, w.events, parseId(c0).seq, 'poll loop');
  log(
    `loop: ${cycles.length} polls (events ${cycles.map((c) => c.n).join(',')}; ms ${cycles.map((c) => c.ms).join(',')}), ` +
      `${events.length} events ${events[0].id} … ${events.at(-1).id}: identical to the witness`,
  );

  // 3. a held poll on a silent topic
  const rq0 = await page.evaluate(() => sg.poll('topics=lpquiet&timeout=0'));
  checkAnswer(rq0, 'silent topic, timeout=0');
  const rq = await page.evaluate((c) => sg.poll(`topics=lpquiet&cursor=${encodeURIComponent(c)}&timeout=1`), rq0.body.cursor);
  checkAnswer(rq, 'silent topic, timeout=1');
  assert(rq.body.messages.length === 0, `silent topic: messages ${brief(rq.body.messages)}`);
  assert(rq.ms >= 900 && rq.ms < 4000, `silent topic, timeout=1: answered after ${Math.round(rq.ms)} ms`);
  assert(parseId(rq.body.cursor).seq >= parseId(rq0.body.cursor).seq, `silent topic: cursor went back to ${rq.body.cursor}`);
  log(`hold: silent topic with timeout=1 answered after ${Math.round(rq.ms)} ms, no messages, cursor ${rq.body.cursor}`);

  // 4. POST /poll publish, received by a poll that was already waiting
  const rc0 = await page.evaluate(() => sg.poll('topics=chat&timeout=0'));
  checkAnswer(rc0, 'chat, timeout=0');
  const message = { type: 'publish', topic: 'chat', content_type: 'json', data: { hello: 'from chromium long-poll', n: [1, 2] }, ref: 'lp1' };
  const both = await page.evaluate(
    async ([c, message]) => {
      const waiting = sg.poll(`topics=chat&cursor=${encodeURIComponent(c)}&timeout=10`);
      await new Promise((r) => setTimeout(r, 300));
      const pub = await sg.publish(message);
      const got = await waiting;
      return { pub, got, heldMs: got.ms };
    },
    [rc0.body.cursor, message],
  );
  const pub = both.pub;
  assert(pub.status === 200, `POST /poll publish: HTTP ${pub.status}: ${pub.text ?? brief(pub.body)}`);
  assert(pub.body?.type === 'published' && pub.body.ref === 'lp1', `POST /poll publish: answer ${brief(pub.body)}`);
  const pid = parseId(pub.body.id);
  if (epoch) assert(pid.epoch === epoch, `POST /poll publish: id ${pub.body.id}, epoch ${epoch}`);
  checkAnswer(both.got, 'waiting chat poll');
  const chat = both.got.body.messages;
  assert(chat.length === 1, `waiting chat poll: want the one chat event, got ${brief(chat)}`);
  checkEnvelope(chat[0], 'chat', 'waiting chat poll');
  assert(chat[0].id === pub.body.id, `waiting chat poll: event id ${chat[0].id}, published id ${pub.body.id}`);
  assert(JSON.stringify(chat[0].data) === JSON.stringify(message.data), `waiting chat poll: data ${brief(chat[0].data)}`);
  assert(both.got.body.cursor === pub.body.id, `waiting chat poll: cursor ${both.got.body.cursor}, want ${pub.body.id}`);
  assert(both.heldMs >= 250, `waiting chat poll answered after ${Math.round(both.heldMs)} ms, before the publish`);
  log(`publish: POST /poll → published ${pub.body.id} (ref lp1); the waiting chat poll (held ${Math.round(both.heldMs)} ms) got it with the same id and data`);

  // 5. burst: POST /poll publishes and a follower loop at the same time
  await openWitness('W2', 'demo,lpburst');
  const rb0 = await page.evaluate(() => sg.poll('topics=demo,lpburst&timeout=0'));
  checkAnswer(rb0, 'burst: first poll');
  const b0 = parseId(rb0.body.cursor).seq;
  const t0 = Date.now();
  const burst = await page.evaluate(
    async ([c, n]) => {
      const answers = [];
      let cursor = c;
      const pub = sg.runBurst('lpburst', n, 4, 500);
      // Let 300 publishes go first, so the follower starts behind and catches up from history
      // in full batches.
      while (sg.burst.published.length < 300 && !sg.burst.failures.length && !sg.burst.done) {
        await new Promise((r) => setTimeout(r, 5));
      }
      const end = performance.now() + 40000;
      let burstSeen = 0;
      let lastSeen = 0n;
      const lastPublished = () => sg.burst.published.reduce((m, p) => (BigInt(p.id.split(':')[1]) > m ? BigInt(p.id.split(':')[1]) : m), 0n);
      // Follow until the follower is past the last published event (or the deadline).
      while (performance.now() < end && !(sg.burst.done && lastSeen >= lastPublished())) {
        const r = await sg.poll(`topics=demo,lpburst&cursor=${encodeURIComponent(cursor)}&timeout=5`);
        answers.push({ status: r.status, cursor: r.body?.cursor, messages: r.body?.messages, text: r.text, ms: Math.round(r.ms) });
        if (r.status !== 200 || !r.body) break;
        cursor = r.body.cursor;
        for (const m of r.body.messages) {
          if (m.topic === 'lpburst') burstSeen++;
          if (m.type === 'event') lastSeen = BigInt(m.id.split(':')[1]);
        }
        sg.burst.readCount = burstSeen;
        if (sg.burst.failures.length) break;
      }
      sg.burst.readCount = Infinity;
      await pub;
      return { answers, published: sg.burst.published, failures: sg.burst.failures };
    },
    [rb0.body.cursor, BURST],
  );
  const burstMs = Date.now() - t0;
  assert(burst.failures.length === 0, `burst: ${burst.failures.length} publishes failed, first ${brief(burst.failures[0])}`);
  assert(burst.published.length === BURST, `burst: ${burst.published.length} of ${BURST} published`);
  const got = [];
  let prevCursor = rb0.body.cursor;
  let maxBatch = 0;
  for (const [i, r] of burst.answers.entries()) {
    const what = `burst poll #${i + 1} (cursor ${prevCursor})`;
    assert(r.status === 200 && Array.isArray(r.messages), `${what}: HTTP ${r.status}: ${r.text ?? brief(r.messages)}`);
    const notices = r.messages.filter((m) => m.type !== 'event');
    assert(notices.length === 0, `${what}: notices ${brief(notices)}`);
    for (const m of r.messages) checkEnvelope(m, m.topic === 'demo' ? 'demo' : 'lpburst', what);
    if (r.messages.length) assert(r.cursor === r.messages.at(-1).id, `${what}: cursor ${r.cursor}, last event ${r.messages.at(-1).id}`);
    maxBatch = Math.max(maxBatch, r.messages.length);
    got.push(...r.messages);
    prevCursor = r.cursor;
  }
  assertIncreasingIds(got, 'burst');
  // The follower started 300 events behind: a catch-up batch is full (max_batch_events = 100).
  assert(maxBatch === 100, `burst: the largest batch had ${maxBatch} events; catching up 300 events behind, want full batches of 100 (max_batch_events)`);
  // Every published id exactly once, in publication order (ids are sorted: the bus orders them).
  const publishedIds = burst.published.map((p) => p.id).sort((x, y) => (parseId(x).seq < parseId(y).seq ? -1 : 1));
  const burstGot = got.filter((e) => e.topic === 'lpburst');
  const gotIds = new Set(burstGot.map((e) => e.id));
  const missing = publishedIds.filter((id) => !gotIds.has(id));
  assert(
    missing.length === 0,
    `burst: ${missing.length} published events never came back from /poll: ${missing.slice(0, 10).join(', ')}` +
      ` (${missing.slice(0, 10).map((id) => `seq ${parseId(id).seq}`).join(', ')})`,
  );
  assert(burstGot.length === publishedIds.length, `burst: ${burstGot.length} lpburst events for ${publishedIds.length} published`);
  for (const e of burstGot) {
    assert(e.data && Number.isInteger(e.data.i), `burst: data of ${e.id} is ${brief(e.data)}`);
  }
  const lastSeq = parseId(got.at(-1).id).seq;
  w = await waitWitness('W2', lastSeq);
  const compared = matchWitness(got, w.events, b0, 'burst vs witness on demo,lpburst');
  const span = lastSeq - b0;
  log(
    `burst: ${BURST} POST /poll publishes and ${burst.answers.length} polls in ${burstMs} ms; ${got.length} events ` +
      `(${burstGot.length} lpburst, largest batch ${maxBatch}) over seq ${b0 + 1n}…${lastSeq} (${span} ids): ` +
      `identical to the witness (${compared} events), every published id once`,
  );
  await page.evaluate(() => { witnesses.close('W'); witnesses.close('W2'); });
}
