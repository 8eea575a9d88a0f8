// examples/browser/index.html as examples/README.md says to open it: from another origin (a
// static file server, here node's http in this process, like `python3 -m http.server 8000`),
// with the gateway configured for that origin (`[ws.origins] allow`, `[http] cors_origins`).
// `?autostart` starts its five panels; every panel must print events: the automatic one (on the
// best transport, WebTransport) and the four pinned to one transport each.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { assert, brief } from '../lib.mjs';
import { freeTcpPort } from '../stack.mjs';

export const name = 'examples/browser/index.html from another origin: every panel prints events';
export const timeoutMs = 30000;

const page = readFileSync(fileURLToPath(new URL('../../../examples/browser/index.html', import.meta.url)));
const port = await freeTcpPort();
const origin = `http://127.0.0.1:${port}`;
export const stack = {
  gateway: {
    config: `[ws.origins]\nallow = ["${origin}"]\n[http]\ncors_origins = ["${origin}"]\n`,
    args: ['--demo-rate', '50'],
  },
};

export async function run({ page: tab, log, stack }) {
  const server = createServer((req, res) => {
    if (req.url.split('?')[0] === '/' || req.url.startsWith('/index.html')) {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(page);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  try {
    const url = `${origin}/?autostart&gateway=${encodeURIComponent(stack.gateway)}`;
    await tab.goto(url);
    const panels = () =>
      tab.$$eval('section.panel', (els) =>
        els.map((el) => ({
          title: el.querySelector('h2').textContent,
          status: el.querySelector('.status').textContent,
          lines: [...el.querySelectorAll('pre > div')].map((d) => d.textContent),
        })),
      );
    const enough = (p) => /— (\d+) events/.exec(p.status)?.[1] >= 5;
    try {
      await tab.waitForFunction(
        () => [...document.querySelectorAll('section.panel .status')].every((s) => Number(/— (\d+) events/.exec(s.textContent)?.[1] ?? 0) >= 5),
        null,
        { timeout: 15000, polling: 200 },
      );
    } catch {
      throw new Error(`not every panel printed 5 events: ${brief(await panels(), 2000)}`);
    }
    const got = await panels();
    assert(got.length === 5, `${got.length} panels`);
    for (const p of got) {
      assert(enough(p), `${p.title}: ${p.status}`);
      const events = p.lines.filter((l) => /^\S+:\d+ demo /.test(l));
      assert(events.length >= 5, `${p.title} printed no event lines: ${brief(p.lines.slice(-5))}`);
      assert(!p.lines.some((l) => /^error|^cannot load/.test(l)), `${p.title}: ${brief(p.lines.filter((l) => /error|cannot/.test(l)))}`);
    }
    const auto = got[0];
    assert(/^on webtransport/.test(auto.status), `the automatic panel is not on webtransport: ${auto.status}`);
    for (const p of got) log(`${p.title}: ${p.status}`);
  } finally {
    server.close();
  }
}
