// A gateway process behind faultproxy.mjs, wired so that every transport a page uses crosses
// the proxy: the page's origin is the proxy (HTTP, WebSocket, SSE, long polling) and
// `webtransport.public_url` names the proxy's UDP relay, so GET /wt/cert-hash sends the
// browser's WebTransport through it too. For the browser client's Chromium tests:
//
//   import { startRig } from './faultrig.mjs';
//   const rig = await startRig({ bin: 'target/release/streamgate', mode: 'udp-drop' });
//   // open rig.base in Chromium; rig.setFaults('strip-upgrade,buffer-sse'); rig.stats();
//   await rig.restartGateway();   // same ports, same config (with the Redis bus: same log)
//   await rig.close();
//
// `toml` adds configuration (e.g. `[bus]\nbackend = "redis"\n[bus.redis]\nurl = "…"`, or
// `[ws]\nenabled = false`); it must not repeat the tables the rig writes (`[server]`, `[tls]`,
// `[webtransport]`, `[demo]`): pass `demoRate` instead. SSE streams keep their default
// `max_stream_duration = 0`: a stream the gateway ends would hand a buffering proxy its
// whole buffer and hide the `buffer-sse` fault.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, openSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { startFaultProxy } from './faultproxy.mjs';

const freeTcpPort = () =>
  new Promise((ok, fail) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
    s.on('error', fail);
  });

const freeUdpPort = () =>
  new Promise((ok, fail) => {
    const s = dgram.createSocket('udp4');
    s.on('error', fail);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });

export async function startRig({ bin, mode = 'pass', toml = '', demoRate = 20, cutMinMs, cutMaxMs } = {}) {
  const binary = resolve(bin ?? process.env.STREAMGATE_BIN ?? 'target/release/streamgate');
  const work = mkdtempSync(join(tmpdir(), 'streamgate-faultrig-'));
  const httpPort = await freeTcpPort();
  const wtPort = await freeUdpPort();
  const proxy = await startFaultProxy({
    upstream: `127.0.0.1:${httpPort}`,
    udpUpstream: `127.0.0.1:${wtPort}`,
    mode,
    ...(cutMinMs != null ? { cutMinMs } : {}),
    ...(cutMaxMs != null ? { cutMaxMs } : {}),
  });
  const config = join(work, 'gateway.toml');
  writeFileSync(
    config,
    `# written by .ci/browser/faultrig.mjs
[server]
listen = "127.0.0.1:${httpPort}"
[tls]
enabled = false
[webtransport]
listen = "127.0.0.1:${wtPort}"
# The browser is sent to the proxy's UDP relay, which forwards to the listener above.
public_url = "https://127.0.0.1:${proxy.udpPort}/wt"
[demo]
enabled = ${demoRate > 0}
rate = ${demoRate > 0 ? demoRate : 1}
${toml}
`,
  );
  const base = `http://127.0.0.1:${proxy.port}`;
  const log = join(work, 'gateway.log');
  let child = null;

  const up = async () => {
    const out = openSync(log, 'a');
    child = spawn(binary, ['serve', '--config', config], { stdio: ['ignore', out, out] });
    const exited = new Promise((r) => child.once('exit', (code) => r(code)));
    for (let i = 0; i < 100; i++) {
      const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 100))]);
      if (code !== undefined) throw new Error(`the gateway exited (${code}):\n${readFileSync(log, 'utf8')}`);
      try {
        const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`);
        if (res.ok) return;
      } catch {
        // not listening yet
      }
    }
    throw new Error(`the gateway did not answer /healthz:\n${readFileSync(log, 'utf8')}`);
  };
  const down = async (signal = 'SIGTERM') => {
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill(signal);
    await exited;
  };
  await up();

  return {
    base,
    proxy,
    httpPort,
    wtPort,
    gatewayLog: () => readFileSync(log, 'utf8'),
    setFaults: (m) => proxy.setMode(m),
    stats: () => proxy.stats(),
    /// Stops the gateway (SIGTERM, or SIGKILL for a crash) and starts it again on the same
    /// ports with the same configuration.
    async restartGateway({ signal = 'SIGTERM', downMs = 0 } = {}) {
      await down(signal);
      if (downMs) await new Promise((r) => setTimeout(r, downMs));
      await up();
    },
    async close() {
      await down();
      await proxy.close();
      rmSync(work, { recursive: true, force: true });
    },
  };
}
