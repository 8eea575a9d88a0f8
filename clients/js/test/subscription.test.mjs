// The public Subscription (EventTarget, async iterator, publish routing) over fake transports,
// and the adapters against a fake fetch / WebSocket / WebTransport.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subscribe, ADAPTERS, DEFAULT_TIMEOUTS, parseMessage } from '../streamgate.js';
import { FakeClock, FakeNet } from './fakes.mjs';

function fakeSub(opts = {}) {
  const clock = new FakeClock();
  const net = new FakeNet();
  const sub = subscribe('http://gw.test:8080', { topics: ['t'], clock, connect: net.connect, ...opts });
  const seen = { event: [], notice: [], transport: [], error: [], close: 0 };
  for (const type of ['event', 'notice', 'transport', 'error']) sub.addEventListener(type, (e) => seen[type].push(e.detail));
  sub.addEventListener('close', () => seen.close++);
  return { clock, net, sub, seen };
}

test('Subscription: EventTarget events and properties', () => {
  const { net, sub, seen } = fakeSub({ transports: ['websocket', 'poll'], since: 'e:3' });
  assert.equal(net.last('websocket').since, 'e:3');
  net.last('websocket').fail('refused');
  net.last('poll').open().events(4, 5).notice({ type: 'gap', topic: 't', after: 'e:5', lost_through: 'e:8' });
  assert.deepEqual(seen.event.map((d) => d.id), ['e:4', 'e:5']);
  assert.deepEqual(seen.event[0], { id: 'e:4', topic: 't', data: { n: 'e:4' }, contentType: 'json', ts: 1 });
  assert.equal(seen.notice[0].type, 'gap');
  assert.deepEqual(seen.transport, [{ from: null, to: 'poll', reason: 'websocket: refused' }]);
  assert.equal(sub.transport, 'poll');
  assert.equal(sub.lastId, 'e:5');
  assert.deepEqual(sub.transportLog.map((e) => [e.transport, e.role, e.outcome, e.reason]), [
    ['websocket', 'connect', 'failed', 'refused'], ['poll', 'connect', 'open', ''],
  ]);
  sub.close();
  assert.equal(seen.close, 1);
});

test('Subscription: async iteration yields events in order and ends at close()', async () => {
  const { net, sub } = fakeSub({ transports: ['sse'] });
  const got = [];
  const done = (async () => {
    for await (const e of sub) got.push(e.id);
  })();
  const sse = net.last('sse').open();
  sse.events(1, 2);
  await new Promise((r) => setImmediate(r));
  sse.events(2, 3);
  await new Promise((r) => setImmediate(r));
  sub.close();
  await done;
  assert.deepEqual(got, ['e:1', 'e:2', 'e:3']);
  assert.ok(sse.closed);
});

test('Subscription: binary events arrive as bytes', () => {
  const { net, seen } = fakeSub({ transports: ['poll'] });
  net.last('poll').open().notice({ type: 'event', topic: 't', id: 'e:1', ts: 1, content_type: 'binary', data: 'AAEC/w==' });
  assert.deepEqual(seen.event[0].data, new Uint8Array([0, 1, 2, 255]));
});

test('publish goes over the live WebSocket or WebTransport, else POST /publish', async (t) => {
  const { clock, net, sub } = fakeSub({ transports: ['websocket', 'poll'], token: 'tok' });
  const ws = net.last('websocket').open();
  assert.deepEqual(await sub.publish('news', { a: 1 }), { id: 'e:99' });
  assert.deepEqual(ws.published, [{ type: 'publish', topic: 'news', content_type: 'json', data: { a: 1 } }]);
  await sub.publish('bin', new Uint8Array([1, 2]));
  assert.deepEqual(ws.published[1], { type: 'publish', topic: 'bin', content_type: 'binary', data: 'AQI=' });

  const calls = [];
  t.mock.method(globalThis, 'fetch', async (url, init) => {
    calls.push([String(url), init]);
    return Response.json({ id: 'e:100', topic: 'news' });
  });
  ws.fail('gone'); // now reconnecting: no live bidirectional transport
  assert.equal(sub.transport, null);
  assert.equal((await sub.publish('news', 'hi', { contentType: 'text' })).id, 'e:100');
  assert.equal(calls[0][0], 'http://gw.test:8080/publish/news?content_type=text');
  assert.equal(calls[0][1].method, 'POST');
  assert.equal(calls[0][1].body, 'hi');
  assert.equal(calls[0][1].headers.authorization, 'Bearer tok');
  // SSE and long polling cannot publish: POST too.
  clock.advance(1000); // it dropped at once: the retry waits a backoff
  net.last('websocket').fail('refused');
  net.last('poll').open();
  await sub.publish('news', { b: 2 });
  assert.equal(calls[1][1].body, '{"b":2}');
  sub.close();
});

test('publish errors reject with the gateway code', async (t) => {
  const { sub } = fakeSub({ transports: ['poll'] });
  t.mock.method(globalThis, 'fetch', async () => Response.json({ error: { code: 'rate_limited', reason: 'slow down' } }, { status: 429 }));
  await assert.rejects(sub.publish('x', 1), /HTTP 429 rate_limited: slow down/);
  sub.close();
});

// --- adapters

function ctx(extra = {}) {
  const log = [];
  const sink = {
    open: () => log.push(['open']),
    message: (m) => log.push(['message', m]),
    activity: () => log.push(['activity']),
    close: (reason, flags) => log.push(['close', reason, flags]),
  };
  return { log, ctx: { base: new URL('http://gw.test:8080'), topics: ['a', 'b'], since: null, sink, timeouts: DEFAULT_TIMEOUTS, token: async () => undefined, params: () => ({}), ...extra } };
}
/** Sets a global for one test (Node 20 has no t.mock.property). */
function withGlobal(t, name, value) {
  const had = Object.getOwnPropertyDescriptor(globalThis, name);
  Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
  t.after(() => (had ? Object.defineProperty(globalThis, name, had) : delete globalThis[name]));
}
const settle = () => new Promise((r) => setTimeout(r, 10));

test('sse adapter: URL, chunks split anywhere, comments as liveness, HTTP errors', async (t) => {
  const chunks = ['retry: 3000\n\n: streamgate epoch e\n\n', 'id: e:5\nevent: a\nda', 'ta: {"type":"event","topic":"a","id":"e:5","ts":1,"content_type":"text","data":"x"}\n',
    '\nevent: @gap\ndata: {"type":"gap","topic":"a","after":"e:5","lost_through":"e:7"}\n\n: heartbeat\n\n'];
  let url;
  t.mock.method(globalThis, 'fetch', async (u) => {
    url = String(u);
    const enc = new TextEncoder();
    return new Response(new ReadableStream({ start(c) { for (const s of chunks) c.enqueue(enc.encode(s)); c.close(); } }), { headers: { 'content-type': 'text/event-stream' } });
  });
  const { log, ctx: c } = ctx({ since: 'e:4' });
  ADAPTERS.sse(c);
  await settle();
  assert.equal(url, 'http://gw.test:8080/sse?topics=a%2Cb&since=e%3A4');
  assert.deepEqual(log[0], ['open']);
  const messages = log.filter((l) => l[0] === 'message').map((l) => l[1]);
  assert.deepEqual(messages.map((m) => [m.type, m.id ?? m.lost_through]), [['event', 'e:5'], ['gap', 'e:7']]);
  assert.equal(log.filter((l) => l[0] === 'activity').length, 4);
  assert.deepEqual(log.at(-1), ['close', 'the stream ended', undefined]);

  t.mock.method(globalThis, 'fetch', async () => Response.json({ error: { code: 'not_found', reason: 'no such route' } }, { status: 404 }));
  const r404 = ctx();
  ADAPTERS.sse(r404.ctx);
  await settle();
  assert.deepEqual(r404.log, [['close', 'HTTP 404 not_found: no such route', { fatal: false, code: 'not_found' }]]);
});

test('poll adapter: first poll at timeout=0, then the cursor of each answer', async (t) => {
  const urls = [];
  const answers = [
    { cursor: 'e:9', messages: [] },
    { cursor: 'e:11', messages: [{ type: 'event', topic: 'a', id: 'e:10', content_type: 'json', data: 1 }, { type: 'event', topic: 'b', id: 'e:11', content_type: 'json', data: 2 }] },
  ];
  let handle;
  t.mock.method(globalThis, 'fetch', async (u, init) => {
    urls.push(String(u));
    if (!answers.length) {
      handle.close();
      throw new DOMException('aborted', 'AbortError');
    }
    assert.equal(init.headers.authorization, 'Bearer tok');
    return Response.json(answers.shift());
  });
  const { log, ctx: c } = ctx({ token: async () => 'tok' });
  handle = ADAPTERS.poll(c);
  await settle();
  assert.deepEqual(urls, [
    'http://gw.test:8080/poll?topics=a%2Cb&timeout=0',
    'http://gw.test:8080/poll?topics=a%2Cb&cursor=e%3A9&timeout=25',
    'http://gw.test:8080/poll?topics=a%2Cb&cursor=e%3A11&timeout=25',
  ]);
  const types = log.map((l) => (l[0] === 'message' ? `${l[1].type} ${l[1].id}` : l[0]));
  assert.deepEqual(types.slice(0, 6), ['open', 'cursor e:9', 'open', 'event e:10', 'event e:11', 'cursor e:11']);
});

test('websocket adapter: refused before opening; subscribed; publish replies by ref', async (t) => {
  class FakeWS {
    static last;
    constructor(url, protocols) {
      this.url = String(url); this.protocols = protocols; this.readyState = 0; this.sent = [];
      FakeWS.last = this;
    }
    send(s) { this.sent.push(JSON.parse(s)); }
    close() { this.readyState = 3; }
  }
  withGlobal(t, 'WebSocket', FakeWS);
  const refused = ctx({ since: 'e:1', token: async () => 'tok' });
  ADAPTERS.websocket(refused.ctx);
  await settle();
  assert.equal(FakeWS.last.url, 'ws://gw.test:8080/ws?topics=a%2Cb&since=e%3A1&token=tok');
  assert.deepEqual(FakeWS.last.protocols, ['streamgate.v1']);
  FakeWS.last.onclose({ code: 1006, reason: '' });
  assert.deepEqual(refused.log, [['close', 'closed before opening (code 1006): refused, or a proxy stripped Upgrade', undefined]]);

  const ok = ctx();
  const h = ADAPTERS.websocket(ok.ctx);
  await settle();
  const s = FakeWS.last;
  s.readyState = 1;
  s.onopen();
  s.onmessage({ data: '{"type":"subscribed","topics":["a","b"],"epoch":"e"}' });
  const reply = h.publish({ type: 'publish', topic: 'a', content_type: 'json', data: 1 });
  assert.equal(s.sent[0].ref, 'c-1');
  s.onmessage({ data: '{"type":"published","ref":"c-1","id":"e:3"}' });
  assert.equal((await reply).id, 'e:3');
  assert.deepEqual(ok.log.map((l) => l[1]?.type), ['subscribed'], 'replies are not passed on as messages');
});

test('webtransport adapter: unsupported runtime; certificate hash unavailable', async (t) => {
  const none = ctx();
  ADAPTERS.webtransport(none.ctx);
  await settle();
  assert.deepEqual(none.log, [['close', 'unsupported: no WebTransport in this runtime', { permanent: true }]]);

  withGlobal(t, 'WebTransport', class {});
  t.mock.method(globalThis, 'fetch', async () => new Response('no', { status: 404 }));
  const nohash = ctx();
  ADAPTERS.webtransport(nohash.ctx);
  await settle();
  assert.deepEqual(nohash.log, [['close', 'certificate hash unavailable: HTTP 404', undefined]]);
});

test('parseMessage: the binary envelope of §3.3 and JSON', () => {
  const topic = 'ab';
  const id = 'e:7';
  const payload = [1, 2, 3];
  const b = new Uint8Array([1, 1, 2, topic.length, ...Buffer.from(topic), id.length, ...Buffer.from(id), 0, 0, 0, 0, 0, 0, 0, 42, ...payload]);
  assert.deepEqual(parseMessage(b), { type: 'event', topic, id, ts: 42, content_type: 'binary', data: new Uint8Array(payload) });
  assert.deepEqual(parseMessage(new TextEncoder().encode('{"type":"available"}')), { type: 'available' });
  const broken = parseMessage(new TextEncoder().encode('{"type":"event","topic":"a","id":"e:8","data":'));
  assert.equal(broken.type, 'undecodable');
  assert.equal(broken.id, 'e:8');
});

test('a fatal refusal closes the Subscription: error, then close; iterators end', async () => {
  const { net, sub, seen } = fakeSub({ transports: ['sse', 'poll'] });
  const ended = (async () => { for await (const _ of sub); })();
  net.last('sse').fail('HTTP 403 forbidden: topic t', { fatal: true, code: 'forbidden' });
  await ended;
  assert.deepEqual(seen.error, [{ code: 'forbidden', reason: 'sse: HTTP 403 forbidden: topic t' }]);
  assert.equal(seen.close, 1);
  assert.ok(sub.closed);
});
