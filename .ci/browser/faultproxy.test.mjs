// Self-test of faultproxy.mjs against a trivial local server (no gateway, no browser):
//   node --test .ci/browser/faultproxy.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import dgram from 'node:dgram';
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { startFaultProxy, parseMode } from './faultproxy.mjs';

let upstream;
let upstreamPort;
let udpEcho;
const seen = []; // request heads the upstream received
const upgraded = new Set(); // sockets the upstream took over after a 101

before(async () => {
  upstream = http.createServer((req, res) => {
    seen.push({ url: req.url, headers: req.headers });
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/plain') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 });
      return res.end('hello');
    }
    if (url.pathname === '/ws') {
      res.writeHead(400, { 'content-type': 'text/plain' });
      return res.end('not a WebSocket upgrade');
    }
    if (url.pathname === '/sse') {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      res.flushHeaders();
      const count = Number(url.searchParams.get('count') ?? 1e9);
      if (url.searchParams.get('big')) res.write(`: ${'x'.repeat(1200 * 1024)}\n\n`);
      let n = 0;
      const timer = setInterval(() => {
        res.write(`data: ${n}\n\n`);
        if (++n >= count) {
          clearInterval(timer);
          res.end();
        }
      }, 50);
      res.on('close', () => clearInterval(timer));
      return;
    }
    if (url.pathname === '/stream') {
      // Long-lived, not an event stream: never buffered.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.write('first');
      const timer = setInterval(() => res.write('.'), 50);
      res.on('close', () => clearInterval(timer));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  upstream.on('upgrade', (req, socket) => {
    seen.push({ url: req.url, headers: req.headers });
    const accept = createHash('sha1')
      .update(`${req.headers['sec-websocket-key']}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`)
      .digest('base64');
    socket.write(
      `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\n\r\n`,
    );
    socket.on('data', (d) => socket.write(d)); // echo raw bytes
    socket.on('end', () => socket.end());
    socket.on('error', () => {});
    upgraded.add(socket);
    socket.on('close', () => upgraded.delete(socket));
  });
  upstream.listen(0, '127.0.0.1');
  await once(upstream, 'listening');
  upstreamPort = upstream.address().port;
  udpEcho = dgram.createSocket('udp4');
  udpEcho.on('message', (msg, from) => udpEcho.send(msg, from.port, from.address));
  await new Promise((resolve) => udpEcho.bind(0, '127.0.0.1', resolve));
});

after(async () => {
  for (const socket of upgraded) socket.destroy();
  upstream.closeAllConnections?.();
  await new Promise((resolve) => upstream.close(resolve));
  udpEcho.close();
});

const proxyFor = (opts = {}) =>
  startFaultProxy({
    upstream: `127.0.0.1:${upstreamPort}`,
    udpUpstream: `127.0.0.1:${udpEcho.address().port}`,
    ...opts,
  });

/// A raw HTTP/1.1 exchange: sends `head`, collects every byte until the connection ends (or
/// `untilMs`), with the time of each chunk.
async function raw(port, head, { untilMs = 5000, onChunk } = {}) {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const t0 = Date.now();
  const chunks = [];
  socket.on('data', (c) => {
    chunks.push({ at: Date.now() - t0, data: c });
    onChunk?.(c, socket);
  });
  socket.write(head);
  const ended = new Promise((resolve) => socket.on('close', () => resolve('closed')));
  socket.on('error', () => {});
  const how = await Promise.race([ended, new Promise((r) => setTimeout(() => r('timeout'), untilMs))]);
  socket.destroy();
  const text = Buffer.concat(chunks.map((c) => c.data)).toString('latin1');
  return { how, text, chunks, elapsed: Date.now() - t0 };
}

const get = (path, extra = '') => `GET ${path} HTTP/1.1\r\nHost: test\r\n${extra}\r\n`;
const upgradeHead = (path = '/ws') =>
  get(path, 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n');

async function control(port, method, body) {
  const res = await fetch(`http://127.0.0.1:${port}/__fault`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}

test('modes parse', () => {
  assert.deepEqual(parseMode('pass'), []);
  assert.deepEqual(parseMode('cut,strip-upgrade'), ['cut', 'strip-upgrade']);
  assert.deepEqual(parseMode(['buffer-sse', 'buffer-sse']), ['buffer-sse']);
  assert.throws(() => parseMode('explode'), /unknown fault/);
});

test('pass: requests, upgrades and bodies go through unchanged, one request per connection', async () => {
  const proxy = await proxyFor();
  try {
    const plain = await raw(proxy.port, get('/plain', 'Connection: keep-alive\r\n'));
    assert.equal(plain.how, 'closed', 'Connection: close was forwarded');
    assert.match(plain.text, /^HTTP\/1\.1 200/);
    assert.match(plain.text, /hello$/);
    assert.equal(seen.at(-1).headers.connection, 'close');
    const ws = await raw(proxy.port, upgradeHead(), {
      untilMs: 500,
      onChunk: (c, s) => c.toString().startsWith('HTTP/1.1 101') && s.write('ping'),
    });
    assert.match(ws.text, /^HTTP\/1\.1 101/);
    assert.match(ws.text, /ping$/, 'bytes after the upgrade are relayed both ways');
    assert.equal(seen.at(-1).headers.upgrade, 'websocket');
  } finally {
    await proxy.close();
  }
});

test('strip-upgrade: the upstream sees no Upgrade or Connection: upgrade and refuses', async () => {
  const proxy = await proxyFor({ mode: 'strip-upgrade' });
  try {
    const ws = await raw(proxy.port, upgradeHead());
    assert.match(ws.text, /^HTTP\/1\.1 400/);
    const heard = seen.at(-1).headers;
    assert.equal(heard.upgrade, undefined);
    assert.equal(heard.connection, 'close');
    assert.equal(heard['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==', 'end-to-end headers stay');
    // Other requests are untouched.
    assert.match((await raw(proxy.port, get('/plain'))).text, /hello$/);
    assert.equal(proxy.stats().stripped_upgrades, 1);
  } finally {
    await proxy.close();
  }
});

test('buffer-sse: an event stream arrives only when the upstream ends; other responses flow', async () => {
  const proxy = await proxyFor({ mode: 'buffer-sse' });
  try {
    const sse = await raw(proxy.port, get('/sse?count=10'));
    assert.equal(sse.how, 'closed');
    const head = sse.chunks.findIndex((c) => c.data.toString('latin1').includes('\r\n\r\n'));
    assert.ok(head >= 0, 'the head came');
    const firstData = sse.chunks.find((c) => c.data.toString('latin1').includes('data: 0'));
    // 10 events 50 ms apart: the first cannot be released before the stream ended (~500 ms).
    assert.ok(firstData.at >= 400, `first event released at ${firstData.at} ms`);
    for (let i = 0; i < 10; i++) assert.ok(sse.text.includes(`data: ${i}\n`), `event ${i}`);
    // Not an event stream: streamed as it comes.
    const stream = await raw(proxy.port, get('/stream'), { untilMs: 300 });
    assert.match(stream.text, /first\r\n1\r\n\.\r\n/, 'streamed, not held');
    assert.equal(proxy.stats().buffered_responses, 1);
  } finally {
    await proxy.close();
  }
});

test('buffer-sse: 1 MiB held is released while the stream stays open', async () => {
  const proxy = await proxyFor({ mode: 'buffer-sse' });
  try {
    const sse = await raw(proxy.port, get('/sse?big=1'), { untilMs: 800 });
    assert.equal(sse.how, 'timeout', 'the stream is still open');
    assert.ok(sse.text.length > 1024 * 1024, `${sse.text.length} bytes through`);
    assert.ok(proxy.stats().buffer_flushes >= 1);
  } finally {
    await proxy.close();
  }
});

test('cut: a live connection is reset 0.5–2 s after it opens; switching cut off spares the rest', async () => {
  const proxy = await proxyFor({ mode: 'cut' });
  try {
    const runs = await Promise.all([1, 2, 3].map(() => raw(proxy.port, get('/stream'), { untilMs: 4000 })));
    for (const r of runs) {
      assert.equal(r.how, 'closed');
      assert.ok(r.elapsed >= 450 && r.elapsed <= 2300, `cut after ${r.elapsed} ms`);
      assert.match(r.text, /first/);
    }
    assert.equal(proxy.stats().cut, 3);
    // Mid-run: switch cut off over the control endpoint; a new stream then lives on.
    assert.equal((await control(proxy.port, 'POST', { mode: 'pass' })).status, 200);
    const spared = await raw(proxy.port, get('/stream'), { untilMs: 2500 });
    assert.equal(spared.how, 'timeout');
    // And on again: an already open connection gets its cut too.
    const pending = raw(proxy.port, get('/stream'), { untilMs: 4000 });
    await new Promise((r) => setTimeout(r, 200));
    await control(proxy.port, 'POST', { mode: ['cut'] });
    const late = await pending;
    assert.equal(late.how, 'closed');
    assert.ok(late.elapsed >= 650 && late.elapsed <= 2500, `cut after ${late.elapsed} ms`);
  } finally {
    await proxy.close();
  }
});

test('control endpoint: state, mode changes, refusals', async () => {
  const proxy = await proxyFor();
  try {
    let r = await control(proxy.port, 'GET');
    assert.deepEqual(r.json.mode, ['pass']);
    r = await control(proxy.port, 'POST', { mode: 'strip-upgrade,buffer-sse' });
    assert.deepEqual(r.json.mode, ['buffer-sse', 'strip-upgrade']);
    assert.deepEqual(proxy.mode(), ['buffer-sse', 'strip-upgrade']);
    r = await control(proxy.port, 'POST', { mode: 'nonsense' });
    assert.equal(r.status, 400);
    assert.match(r.json.error, /unknown fault/);
    const byQuery = await fetch(`http://127.0.0.1:${proxy.port}/__fault?mode=pass`, { method: 'POST' });
    assert.deepEqual((await byQuery.json()).mode, ['pass']);
    assert.equal((await control(proxy.port, 'PUT', {})).status, 405);
  } finally {
    await proxy.close();
  }
});

test('udp: datagrams are relayed both ways, and dropped under udp-drop', async () => {
  const proxy = await proxyFor();
  const client = dgram.createSocket('udp4');
  await new Promise((resolve) => client.bind(0, '127.0.0.1', resolve));
  const roundTrip = (text, ms = 300) =>
    new Promise((resolve) => {
      const timer = setTimeout(() => resolve(null), ms);
      client.once('message', (m) => {
        clearTimeout(timer);
        resolve(m.toString());
      });
      client.send(text, proxy.udpPort, '127.0.0.1');
    });
  try {
    assert.equal(await roundTrip('one'), 'one');
    proxy.setMode('udp-drop');
    assert.equal(await roundTrip('two'), null);
    assert.ok(proxy.stats().udp_dropped >= 1);
    proxy.setMode('pass');
    assert.equal(await roundTrip('three'), 'three');
  } finally {
    client.close();
    await proxy.close();
  }
});

test('cut on UDP: a flow is black-holed 0.5–2 s after it starts; a new flow gets through', async () => {
  const proxy = await proxyFor({ mode: 'cut' });
  const sockets = [];
  const flow = async () => {
    const s = dgram.createSocket('udp4');
    sockets.push(s);
    await new Promise((resolve) => s.bind(0, '127.0.0.1', resolve));
    return (text, ms = 300) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => resolve(null), ms);
        s.once('message', (m) => {
          clearTimeout(timer);
          resolve(m.toString());
        });
        s.send(text, proxy.udpPort, '127.0.0.1');
      });
  };
  try {
    const first = await flow();
    const t0 = Date.now();
    assert.equal(await first('a'), 'a');
    let answered = 'a';
    while (answered !== null && Date.now() - t0 < 3000) answered = await first('b', 100);
    const lived = Date.now() - t0;
    assert.equal(answered, null, 'the flow was cut');
    assert.ok(lived >= 400 && lived <= 2400, `cut after about ${lived} ms`);
    assert.equal(await first('c'), null, 'for good');
    assert.equal(proxy.stats().udp_flows_cut, 1);
    proxy.setMode('pass');
    const second = await flow();
    assert.equal(await second('d'), 'd');
  } finally {
    for (const s of sockets) s.close();
    await proxy.close();
  }
});
