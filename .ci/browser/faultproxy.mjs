// A fault-injecting proxy in front of the gateway, for the browser client's Chromium tests
// (issue 20): the page is loaded *through* the proxy, so /sse, /poll, ws://…/ws and
// /wt/cert-hash all cross it, and each fault is a real one on the wire, not a switch in the
// client. Node built-ins only.
//
//   node faultproxy.mjs --upstream 127.0.0.1:8080 [--listen 0] [--mode pass]
//                       [--udp-upstream 127.0.0.1:4433 --udp-listen 0]
//                       [--cut-min-ms 500 --cut-max-ms 2000] [--buffer-bytes 1048576]
//
// prints one JSON line `{"port":…,"udp_port":…}` when it listens, then serves until killed.
// Or in-process: `const proxy = await startFaultProxy({ upstream: '127.0.0.1:8080' })`.
//
// Faults (any combination; `pass` is none of them), chosen at start (`--mode a,b`) or at any
// moment with `POST /__fault` on the proxy's own port, body `{"mode":"strip-upgrade,buffer-sse"}`
// (or `["cut"]`, or `?mode=cut`); `GET /__fault` returns the faults and counters (connections,
// cuts, stripped upgrades, buffered responses, UDP datagrams relayed and dropped), so a test can
// assert its fault really happened. A change applies to every request from then on, and `cut`
// also to connections already open.
//
//   pass           plain TCP pass-through.
//   strip-upgrade  a request carrying `Upgrade: websocket` loses its `Upgrade` and `Connection`
//                  headers before it is forwarded, as a proxy that does not know WebSocket
//                  does (hop-by-hop headers): the gateway answers 400, the browser's handshake
//                  fails before `open`.
//   buffer-sse     a response with `Content-Type: text/event-stream` has its head forwarded
//                  and its body held until the upstream closes or `--buffer-bytes` (1 MiB)
//                  accumulate, as nginx with `proxy_buffering on` does: the page's EventSource
//                  opens and then receives nothing, not even a heartbeat.
//   cut            every live connection (TCP; not the control requests) is reset at a random
//                  moment `--cut-min-ms`..`--cut-max-ms` (0.5–2 s) after it opens (or after
//                  `cut` was switched on, for one already open). A UDP flow through the relay
//                  (one client address and port: one WebTransport session) is black-holed at
//                  such a moment instead, for good: UDP has no reset, so the browser learns it
//                  only from its own deadline or QUIC's idle timeout.
//   udp-drop       the UDP relay (below) drops every datagram both ways, as a firewall that
//                  blocks UDP does: WebTransport gets no answer and times out.
//
// Every request other than a WebSocket upgrade is forwarded with `Connection: close`, so each
// connection carries one request and each request meets the faults current when it starts
// (a keep-alive connection opened under `pass` would otherwise carry later requests past a
// fault switched on meanwhile).
//
// WebTransport is HTTP/3 over UDP, so it cannot cross an HTTP proxy. With `--udp-upstream` the
// proxy also relays UDP (one upstream socket per client address, QUIC does not mind), and the
// gateway's `webtransport.public_url` points pages at the relay:
// `public_url = "https://127.0.0.1:<udp_port>/wt"` makes GET /wt/cert-hash (served through the
// proxy) hand the browser the relay's port with the gateway's real certificate hash. `udp-drop`
// then makes "UDP closed" real and switchable. Without a relay, a `public_url` on a UDP port
// where nothing listens does the same for a whole run (the browser gets ICMP port unreachable
// and fails at once rather than timing out). See README.md.
import net from 'node:net';
import dgram from 'node:dgram';
import { pathToFileURL } from 'node:url';

export const FAULTS = ['strip-upgrade', 'buffer-sse', 'cut', 'udp-drop'];
const MAX_HEAD = 64 * 1024;

/// Parses `pass`, `a,b`, or an array of fault names into a sorted array (throws on an unknown
/// name).
export function parseMode(mode) {
  const names = (Array.isArray(mode) ? mode : String(mode ?? '').split(','))
    .map((s) => String(s).trim())
    .filter((s) => s && s !== 'pass');
  for (const n of names) {
    if (!FAULTS.includes(n)) throw new Error(`unknown fault ${JSON.stringify(n)} (known: pass, ${FAULTS.join(', ')})`);
  }
  return [...new Set(names)].sort();
}

function hostPort(text) {
  const s = String(text);
  const i = s.lastIndexOf(':');
  if (i < 0) throw new Error(`need HOST:PORT, got ${JSON.stringify(s)}`);
  return { host: s.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(s.slice(i + 1)) };
}

/// Splits a head (`\r\n`-separated, without the final blank line) into its first line and
/// headers `[name, value]`, order and case kept.
function parseHead(text) {
  const [first, ...lines] = text.split('\r\n');
  const headers = lines.filter(Boolean).map((l) => {
    const i = l.indexOf(':');
    return i < 0 ? [l, ''] : [l.slice(0, i), l.slice(i + 1).trim()];
  });
  return { first, headers };
}

const headerValue = (headers, name) =>
  headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v).join(', ');

const serializeHead = (first, headers) =>
  `${first}\r\n${headers.map(([n, v]) => `${n}: ${v}`).join('\r\n')}${headers.length ? '\r\n' : ''}\r\n`;

/// Starts the proxy. Returns { port, udpPort, mode(), setMode(m), stats(), close() }.
export async function startFaultProxy({
  upstream,
  listen = 0,
  host = '127.0.0.1',
  mode = 'pass',
  udpUpstream = null,
  udpListen = 0,
  cutMinMs = 500,
  cutMaxMs = 2000,
  bufferBytes = 1024 * 1024,
  log = () => {},
} = {}) {
  const target = hostPort(upstream);
  let faults = parseMode(mode);
  const has = (f) => faults.includes(f);
  const counters = {
    connections: 0, live: 0, cut: 0, stripped_upgrades: 0, buffered_responses: 0,
    buffer_flushes: 0, control: 0, udp_relayed: 0, udp_dropped: 0, udp_flows_cut: 0,
  };
  const cutDelay = () => cutMinMs + Math.random() * (cutMaxMs - cutMinMs);
  const live = new Set(); // { client, upstream, timer }
  const relays = new Map(); // UDP flows: "addr:port" -> { key, socket, last, dead, cutAt }

  const cutLater = (conn) => {
    if (conn.timer || conn.done) return;
    const ms = cutDelay();
    conn.timer = setTimeout(() => {
      conn.timer = null;
      if (conn.done) return;
      counters.cut++;
      log(`cut ${conn.what} after ${Math.round(Date.now() - conn.opened)} ms`);
      conn.upstream?.destroy();
      if (typeof conn.client.resetAndDestroy === 'function') conn.client.resetAndDestroy();
      else conn.client.destroy();
    }, ms);
  };

  const setMode = (m) => {
    faults = parseMode(m);
    for (const conn of live) {
      if (has('cut')) cutLater(conn);
      else if (conn.timer) {
        clearTimeout(conn.timer);
        conn.timer = null;
      }
    }
    for (const relay of relays.values()) {
      if (has('cut') && !relay.dead) relay.cutAt ??= Date.now() + cutDelay();
      else if (!has('cut')) relay.cutAt = null;
    }
    log(`faults: ${faults.length ? faults.join(', ') : 'pass'}`);
    return faults;
  };

  const state = () => ({ mode: faults.length ? faults : ['pass'], ...counters, live: live.size });

  /// `GET` or `POST /__fault`, answered by the proxy itself.
  const control = (client, first, headers, rest) => {
    counters.control++;
    const [method, target] = first.split(' ');
    const length = Number(headerValue(headers, 'content-length') || 0);
    let body = rest;
    const reply = (status, value) => {
      const text = JSON.stringify(value);
      client.end(
        `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\n` +
          `cache-control: no-store\r\nconnection: close\r\n\r\n${text}`,
      );
    };
    const finish = () => {
      if (method === 'GET') return reply('200 OK', state());
      if (method !== 'POST') return reply('405 Method Not Allowed', { error: 'use GET or POST' });
      try {
        const query = new URL(target, 'http://proxy').searchParams.get('mode');
        const text = body.subarray(0, length).toString();
        const asked = query ?? (text.trim() ? JSON.parse(text).mode : undefined);
        if (asked === undefined) throw new Error('say {"mode": "pass" | "a,b" | ["a", "b"]}');
        setMode(asked);
        reply('200 OK', state());
      } catch (e) {
        reply('400 Bad Request', { error: e.message });
      }
    };
    if (body.length >= length) return finish();
    client.on('data', (chunk) => {
      body = Buffer.concat([body, chunk]);
      if (body.length >= length) finish();
    });
  };

  const server = net.createServer((client) => {
    client.setNoDelay(true);
    let pending = Buffer.alloc(0);
    const onHead = (chunk) => {
      pending = Buffer.concat([pending, chunk]);
      const end = pending.indexOf('\r\n\r\n');
      if (end < 0) {
        if (pending.length > MAX_HEAD) client.destroy();
        return;
      }
      client.off('data', onHead);
      client.pause();
      const head = parseHead(pending.subarray(0, end).toString('latin1'));
      const rest = pending.subarray(end + 4);
      const path = head.first.split(' ')[1] ?? '';
      if (path === '/__fault' || path.startsWith('/__fault?')) {
        client.resume();
        return control(client, head.first, head.headers, rest);
      }
      forward(client, head, rest);
    };
    client.on('data', onHead);
    client.on('error', () => {});
  });

  const forward = (client, { first, headers }, rest) => {
    counters.connections++;
    const upgrade = /\bwebsocket\b/i.test(headerValue(headers, 'upgrade'));
    let out = headers;
    const strip = upgrade && has('strip-upgrade');
    if (strip) counters.stripped_upgrades++;
    if (!upgrade || strip) {
      // One request per connection (see the top of the file); a stripped upgrade loses the
      // hop-by-hop headers a WebSocket-unaware proxy drops.
      out = headers.filter(([n]) => !['connection', 'keep-alive', 'upgrade'].includes(n.toLowerCase()));
      out.push(['Connection', 'close']);
    }
    const conn = { client, upstream: null, timer: null, done: false, opened: Date.now(), what: first };
    live.add(conn);
    const finish = () => {
      if (conn.done) return;
      conn.done = true;
      if (conn.timer) clearTimeout(conn.timer);
      live.delete(conn);
    };
    client.on('close', () => {
      finish();
      conn.upstream?.destroy();
    });
    if (has('cut')) cutLater(conn);
    const buffering = !upgrade && has('buffer-sse');
    const up = net.connect(target.port, target.host);
    conn.upstream = up;
    up.setNoDelay(true);
    up.on('error', () => client.destroy());
    up.on('close', (hadError) => {
      finish();
      // A clean end reaches the client through the pipe (or the flush below), after what is
      // still queued for it; only a failed upstream is passed on as a reset.
      if (hadError) client.destroy();
    });
    up.on('connect', () => {
      up.write(serializeHead(first, out));
      if (rest.length) up.write(rest);
      client.pipe(up);
      client.resume();
      if (!buffering) {
        up.pipe(client);
        return;
      }
      // buffer-sse: read the response head; an event stream's body is held.
      let head = Buffer.alloc(0);
      let held = [];
      let heldBytes = 0;
      let sse = null;
      const flush = () => {
        if (heldBytes && !client.destroyed) {
          counters.buffer_flushes++;
          client.write(Buffer.concat(held));
        }
        held = [];
        heldBytes = 0;
      };
      up.on('data', (chunk) => {
        if (sse === null) {
          head = Buffer.concat([head, chunk]);
          const end = head.indexOf('\r\n\r\n');
          if (end < 0) return;
          const { headers: response } = parseHead(head.subarray(0, end).toString('latin1'));
          sse = /text\/event-stream/i.test(headerValue(response, 'content-type'));
          if (sse) counters.buffered_responses++;
          client.write(head.subarray(0, end + 4));
          chunk = head.subarray(end + 4);
          if (!chunk.length) return;
        }
        if (!sse) return void client.write(chunk);
        held.push(chunk);
        heldBytes += chunk.length;
        if (heldBytes >= bufferBytes) flush();
      });
      const done = () => {
        flush();
        if (!client.destroyed) client.end();
      };
      up.on('end', done);
      up.on('close', done);
    });
  };

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen, host, resolve);
  });

  // --- the UDP relay (WebTransport)
  let udp = null;
  let sweep = null;
  // Whether a flow is (now) cut: black-holed for good once its moment has passed.
  const flowCut = (relay) => {
    if (!relay.dead && relay.cutAt != null && Date.now() >= relay.cutAt) {
      relay.dead = true;
      counters.udp_flows_cut++;
      log(`cut UDP flow ${relay.key}`);
    }
    return relay.dead;
  };
  if (udpUpstream) {
    const udpTarget = hostPort(udpUpstream);
    udp = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
    udp.on('message', (msg, from) => {
      if (has('udp-drop')) return void counters.udp_dropped++;
      const key = `${from.address}:${from.port}`;
      let relay = relays.get(key);
      if (!relay) {
        const socket = dgram.createSocket(net.isIPv6(udpTarget.host) ? 'udp6' : 'udp4');
        relay = { key, socket, last: Date.now(), dead: false, cutAt: has('cut') ? Date.now() + cutDelay() : null };
        socket.on('message', (back) => {
          relay.last = Date.now();
          if (has('udp-drop') || flowCut(relay)) return void counters.udp_dropped++;
          counters.udp_relayed++;
          udp.send(back, from.port, from.address);
        });
        socket.on('error', () => {});
        relays.set(key, relay);
      }
      relay.last = Date.now();
      if (flowCut(relay)) return void counters.udp_dropped++;
      counters.udp_relayed++;
      relay.socket.send(msg, udpTarget.port, udpTarget.host);
    });
    udp.on('error', (e) => log(`udp: ${e.message}`));
    await new Promise((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(udpListen, host, resolve);
    });
    sweep = setInterval(() => {
      for (const [key, relay] of relays) {
        if (Date.now() - relay.last > 120_000) {
          relay.socket.close();
          relays.delete(key);
        }
      }
    }, 10_000);
    sweep.unref();
  }

  return {
    port: server.address().port,
    udpPort: udp ? udp.address().port : null,
    mode: () => (faults.length ? [...faults] : ['pass']),
    setMode,
    stats: state,
    async close() {
      if (sweep) clearInterval(sweep);
      for (const conn of live) {
        if (conn.timer) clearTimeout(conn.timer);
        conn.upstream?.destroy();
        conn.client.destroy();
      }
      for (const relay of relays.values()) relay.socket.close();
      udp?.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

// --- command line
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const opts = {};
  const names = {
    '--upstream': 'upstream', '--listen': 'listen', '--host': 'host', '--mode': 'mode',
    '--udp-upstream': 'udpUpstream', '--udp-listen': 'udpListen', '--cut-min-ms': 'cutMinMs',
    '--cut-max-ms': 'cutMaxMs', '--buffer-bytes': 'bufferBytes',
  };
  const numeric = new Set(['listen', 'udpListen', 'cutMinMs', 'cutMaxMs', 'bufferBytes']);
  for (let i = 0; i < args.length; i++) {
    const key = names[args[i]];
    if (!key || i + 1 >= args.length) {
      console.error(`usage: node faultproxy.mjs --upstream HOST:PORT [--listen PORT] [--mode pass|${FAULTS.join('|')}[,…]]
                      [--udp-upstream HOST:PORT [--udp-listen PORT]] [--cut-min-ms 500] [--cut-max-ms 2000]
                      [--buffer-bytes 1048576]   (unknown or incomplete: ${args[i]})`);
      process.exit(2);
    }
    opts[key] = numeric.has(key) ? Number(args[++i]) : args[++i];
  }
  if (!opts.upstream) {
    console.error('faultproxy: --upstream HOST:PORT is required');
    process.exit(2);
  }
  const quiet = process.env.FAULTPROXY_QUIET === '1';
  const proxy = await startFaultProxy({ ...opts, log: quiet ? () => {} : (l) => console.error(`faultproxy: ${l}`) });
  console.log(JSON.stringify({ port: proxy.port, udp_port: proxy.udpPort, mode: proxy.mode() }));
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, async () => {
      await proxy.close();
      process.exit(0);
    });
  }
}
