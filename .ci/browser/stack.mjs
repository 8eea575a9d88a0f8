// A test's own gateway (and fault proxy, and Redis), for the Chromium tests: run.mjs starts one
// for every test before Chromium opens the page and stops it after, as the test's `stack` export
// asks (the browser client's fallback tests), or its DEFAULT_STACK for a test without one.
//
//   export const stack = {
//     gateway: { config: 'toml text', args: ['--demo-rate', '50'],   // all optional
//                webtransport: 'idle_timeout = 30\n' },  // more keys of [webtransport], which
//                                                         // the stack writes (not in `config`)
//     webtransport: 'direct' | 'closed' | 'relay',  // default 'direct'
//     proxy: 'pass' | 'strip-upgrade,buffer-sse' | …, // a faultproxy.mjs in front (page loads through it)
//     redis: true,                                   // a redis-server on a free port, and --bus redis
//   };
//   export async function run({ page, base, log, stack }) { … }
//
// `base` is what the page uses: the proxy when there is one, else the gateway. `stack` has
// `gateway` (its own base URL, for publishing around the proxy), `proxy` (setMode, stats),
// `restartGateway()` (stops the process and starts it again on the same ports) and `close()`.
//
// WebTransport is HTTP/3 over UDP and never crosses the TCP proxy:
//   direct  the page connects to the gateway's own UDP port;
//   closed  `webtransport.public_url` names a UDP port where nothing listens, so the browser's
//           QUIC handshake meets ICMP port unreachable ("UDP closed", as a firewall that
//           rejects);
//   relay   the proxy relays UDP and `public_url` names the relay, so the proxy's `udp-drop`
//           fault blocks it (silently, as a firewall that drops) and `pass` lets it through.
// Every port is chosen here, before anything starts, so a restarted gateway comes back on the
// same ones.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFaultProxy } from './faultproxy.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export const freeTcpPort = () =>
  new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });

export const freeUdpPort = () =>
  new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    s.on('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

/** A child process whose output is kept (last 64 KiB) for failure reports. */
function child(cmd, args) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  p.output = '';
  const keep = (d) => {
    p.output = (p.output + d).slice(-65536);
  };
  p.stdout.on('data', keep);
  p.stderr.on('data', keep);
  p.exited = new Promise((resolve) => p.on('exit', resolve));
  return p;
}

async function stop(p, signal = 'SIGTERM') {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  p.kill(signal);
  const done = await Promise.race([p.exited.then(() => true), sleep(5000).then(() => false)]);
  if (!done) {
    p.kill('SIGKILL');
    await p.exited;
  }
}

async function waitHttp(url, p, what) {
  for (let i = 0; i < 150; i++) {
    if (p.exitCode !== null) break;
    if (await fetch(url).then((r) => r.ok, () => false)) return;
    await sleep(100);
  }
  throw new Error(`${what} did not answer ${url}:\n${p.output.slice(-3000)}`);
}

/** Starts what `spec` asks for; see the top of the file. */
export async function startStack(spec, { bin = process.env.STREAMGATE_BIN, log = () => {} } = {}) {
  if (!bin) throw new Error('this test starts its own gateway: STREAMGATE_BIN must name the binary (chromium.sh sets it)');
  const dir = mkdtempSync(join(tmpdir(), 'streamgate-stack-'));
  const wtMode = spec.webtransport ?? 'direct';
  const httpPort = await freeTcpPort();
  const tlsPort = await freeTcpPort();
  const wtPort = await freeUdpPort();
  const gatewayBase = `http://127.0.0.1:${httpPort}`;
  const stack = { gateway: gatewayBase, proxy: null, redis: null, dir };
  let gw = null;
  let redis = null;
  try {
    let publicUrl = null;
    if (wtMode === 'closed') publicUrl = `https://127.0.0.1:${await freeUdpPort()}/wt`;
    if (spec.proxy !== undefined || wtMode === 'relay') {
      stack.proxy = await startFaultProxy({
        upstream: `127.0.0.1:${httpPort}`,
        mode: spec.proxy ?? 'pass',
        udpUpstream: wtMode === 'relay' ? `127.0.0.1:${wtPort}` : null,
        log: (l) => log(`proxy: ${l}`),
      });
      if (wtMode === 'relay') publicUrl = `https://127.0.0.1:${stack.proxy.udpPort}/wt`;
    }
    const args = [];
    if (spec.redis) {
      const redisPort = await freeTcpPort();
      redis = child('redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
      for (let i = 0; ; i++) {
        if (redis.output.includes('Ready to accept connections')) break;
        if (redis.exitCode !== null || i > 100) throw new Error(`redis-server did not start:\n${redis.output}`);
        await sleep(100);
      }
      stack.redis = `redis://127.0.0.1:${redisPort}`;
      args.push('--bus', 'redis', '--bus-url', stack.redis);
    }
    const config = join(dir, 'gateway.toml');
    writeFileSync(
      config,
      `${spec.gateway?.config ?? ''}\n[webtransport]\nlisten = "127.0.0.1:${wtPort}"\n` +
        (publicUrl ? `public_url = "${publicUrl}"\n` : '') +
        (spec.gateway?.webtransport ?? ''),
    );
    const start = async () => {
      gw = child(bin, [
        'serve', '--config', config, '--listen', `127.0.0.1:${httpPort}`, '--tls-listen', `127.0.0.1:${tlsPort}`,
        ...args, ...(spec.gateway?.args ?? ['--demo-rate', '50']),
      ]);
      await waitHttp(`${gatewayBase}/healthz`, gw, 'the gateway');
    };
    await start();
    stack.base = stack.proxy ? `http://127.0.0.1:${stack.proxy.port}` : gatewayBase;
    stack.gatewayOutput = () => gw?.output ?? '';
    /**
     * Stops the gateway (SIGTERM: a graceful shutdown; SIGKILL: a crash) and starts it again on
     * the same ports; resolves when it answers.
     */
    stack.restartGateway = async ({ signal = 'SIGTERM', downMs = 0 } = {}) => {
      await stop(gw, signal);
      if (downMs) await sleep(downMs);
      await start();
    };
    stack.close = async () => {
      await stop(gw);
      await stack.proxy?.close().catch(() => {});
      await stop(redis);
      rmSync(dir, { recursive: true, force: true });
    };
    log(`stack: gateway ${gatewayBase}${stack.proxy ? `, proxy ${stack.base} (${stack.proxy.mode().join(',')})` : ''}, webtransport ${wtMode}${publicUrl ? ` (${publicUrl})` : ''}${stack.redis ? `, bus ${stack.redis}` : ''}`);
    return stack;
  } catch (e) {
    await stop(gw);
    await stack.proxy?.close().catch(() => {});
    await stop(redis);
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}
