// Against a real gateway: STREAMGATE_BIN=path/to/streamgate npm test. Starts it on free loopback
// ports with the demo source (topic `demo`, 50 events/s), then subscribes over SSE and long
// polling (fetch), WebSocket (when this Node has a global WebSocket: Node 22+, or Node 20 with
// --experimental-websocket), and through a local proxy that buffers /sse like a misconfigured
// reverse proxy, to see the fallback to long polling and the move back.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer, request } from 'node:http';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { subscribe, parseId } from '../streamgate.js';

const bin = process.env.STREAMGATE_BIN;
const skip = bin ? false : 'STREAMGATE_BIN is not set (point it at a built streamgate binary to run these)';
if (skip) console.log(`# integration tests skipped: ${skip}`);
const noWs = typeof globalThis.WebSocket === 'function' ? false
  : 'this Node has no global WebSocket (Node 20: run with --experimental-websocket)';
if (!skip && noWs) console.log(`# websocket integration tests skipped: ${noWs}`);

let gateway;
let base;
let dir;

const freePort = () => new Promise((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = /** @type {any} */ (s.address());
    s.close(() => resolve(port));
  });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), 'streamgate-jsclient-'));
  const config = join(dir, 'gateway.toml');
  // WebTransport on a free UDP port: nothing else on the machine is disturbed.
  writeFileSync(config, '[webtransport]\nlisten = "127.0.0.1:0"\n');
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  gateway = spawn(bin, ['serve', '--config', config, '--listen', `127.0.0.1:${port}`, '--tls-listen', '127.0.0.1:0', '--demo-rate', '50'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  gateway.stderr.on('data', (d) => { log += d; });
  for (let i = 0; i < 100; i++) {
    if (gateway.exitCode != null) break;
    if (await fetch(`${base}/healthz`).then((r) => r.ok, () => false)) return;
    await sleep(100);
  }
  throw new Error(`the gateway did not answer ${base}/healthz\n${log}`);
});

after(() => {
  gateway?.kill();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Collects `n` events from a subscription (or fails after `ms`). */
function take(sub, n, ms = 10000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${n} events in ${ms} ms (transport ${sub.transport}, log ${JSON.stringify(sub.transportLog)})`)), ms);
    sub.addEventListener('event', function on(e) {
      got.push(e.detail);
      if (got.length === n) {
        clearTimeout(timer);
        sub.removeEventListener('event', on);
        resolve(got);
      }
    });
  });
}

function assertIncreasing(events) {
  for (let i = 1; i < events.length; i++) {
    const a = parseId(events[i - 1].id);
    const b = parseId(events[i].id);
    assert.equal(a.epoch, b.epoch);
    assert.ok(b.seq > a.seq, `${events[i].id} after ${events[i - 1].id}`);
  }
}

for (const transport of ['sse', 'poll', 'websocket']) {
  test(`${transport}: live demo events, in order, once`, { skip: skip || (transport === 'websocket' && noWs) }, async () => {
    const sub = subscribe(base, { topics: ['demo'], transports: [transport] });
    try {
      const events = await take(sub, 20);
      assertIncreasing(events);
      assert.equal(sub.transport, transport);
      assert.equal(sub.lastId, events.at(-1).id);
      assert.equal(events[0].topic, 'demo');
      const entry = sub.transportLog[0];
      console.log(`# ${transport}: open after ${entry.openMs} ms, first event after ${entry.firstEventMs} ms`);
    } finally {
      sub.close();
    }
  });
}

test('default order in Node: webtransport unsupported, then the next transport', { skip }, async () => {
  const sub = subscribe(base, { topics: ['demo'] });
  try {
    const seen = new Promise((r) => sub.addEventListener('transport', (e) => r(/** @type {CustomEvent} */ (e).detail), { once: true }));
    const detail = await seen;
    assert.equal(detail.to, noWs ? 'sse' : 'websocket');
    assert.match(detail.reason, /webtransport: unsupported: no WebTransport in this runtime/);
    await take(sub, 3);
  } finally {
    sub.close();
  }
});

test('publish (POST, or over the WebSocket) and resume on another transport from lastId', { skip }, async () => {
  const topic = `it${Date.now()}`;
  const first = subscribe(base, { topics: [topic], transports: noWs ? ['sse'] : ['websocket'] });
  await new Promise((r) => first.addEventListener('transport', r, { once: true }));
  const got = take(first, 5);
  const ids = [];
  for (let i = 0; i < 5; i++) ids.push((await first.publish(topic, { i })).id);
  assert.deepEqual((await got).map((e) => e.id), ids);
  assert.deepEqual((await got).map((e) => e.data), [0, 1, 2, 3, 4].map((i) => ({ i })));
  const since = first.lastId;
  first.close();
  // Published while nobody is subscribed: a resume from lastId must get exactly these.
  const later = [];
  for (let i = 5; i < 10; i++) later.push((await first.publish(topic, `t${i}`, { contentType: 'text' })).id);
  const second = subscribe(base, { topics: [topic], transports: ['poll'], since });
  try {
    const events = await take(second, 5);
    assert.deepEqual(events.map((e) => e.id), later);
    assert.equal(events[0].data, 't5');
  } finally {
    second.close();
  }
});

test('a proxy that buffers SSE: fallback to long polling, then back to SSE once it streams, nothing lost or repeated', { skip, timeout: 30000 }, async () => {
  let buffering = true;
  const target = new URL(base);
  // A reverse proxy that, while `buffering`, answers /sse with headers and then holds every
  // byte (as nginx with proxy_buffering on does); everything else passes through.
  const proxy = createServer((req, res) => {
    const held = buffering && req.url.startsWith('/sse');
    const up = request({ host: target.hostname, port: target.port, path: req.url, method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode, r.headers);
      if (held) res.flushHeaders();
      else r.pipe(res);
    });
    // An upstream failure (the gateway closing a reused keep-alive connection, or the test
    // ending) is this request's failure, not an uncaught exception of the test process.
    up.on('error', () => res.destroy());
    req.pipe(up);
    res.on('close', () => up.destroy());
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${/** @type {any} */ (proxy.address()).port}`;
  const sub = subscribe(url, { topics: ['demo'], transports: ['sse', 'poll'], timeouts: { sse: 1000 }, backoff: { base: 500, max: 2000 } });
  const transports = [];
  sub.addEventListener('transport', (e) => transports.push(/** @type {CustomEvent} */ (e).detail));
  try {
    const onPoll = await take(sub, 10);
    assert.equal(sub.transport, 'poll');
    assert.match(transports[0].reason, /sse: no answer within 1000 ms, not even the stream preamble/);
    buffering = false;
    const t0 = Date.now();
    const more = await take(sub, 150, 20000);
    const switched = transports.find((t) => t.to === 'sse');
    assert.ok(switched, `moved back to sse: ${JSON.stringify(transports)}`);
    assert.equal(sub.transport, 'sse');
    assertIncreasing([...onPoll, ...more]);
    const entry = sub.transportLog.find((e) => e.role === 'probe' && e.outcome === 'open');
    console.log(`# buffered SSE → poll: ${JSON.stringify(transports[0])}; back to sse within ${Date.now() - t0} ms (${switched.reason}); probe opened after ${entry?.openMs} ms`);
  } finally {
    sub.close();
    proxy.closeAllConnections();
    proxy.close();
  }
});
