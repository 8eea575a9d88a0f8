// Smoke test: the browser reaches the gateway and a same-origin fetch from the page works.
import { assert, brief } from '../lib.mjs';

export const name = 'healthz from the page';
export const timeoutMs = 15000;

export async function run({ page }) {
  const r = await page.evaluate(async () => {
    const res = await fetch('/healthz', { cache: 'no-store' });
    return { status: res.status, contentType: res.headers.get('content-type'), body: await res.json() };
  });
  assert(r.status === 200, `GET /healthz answered ${r.status}: ${brief(r.body)}`);
  assert(r.body && r.body.status === 'ok', `GET /healthz body has no "status":"ok": ${brief(r.body)}`);
  assert(/json/.test(r.contentType ?? ''), `GET /healthz content-type is ${r.contentType}`);
}
