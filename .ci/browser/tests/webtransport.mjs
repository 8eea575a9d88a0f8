// The browser's own WebTransport (HTTP/3, draft-02 in Chromium 156) against the gateway's
// WebTransport endpoint (transports/webtransport, docs/PROTOCOL.md §7):
//  1. GET /wt/cert-hash gives the bound session URL and the SHA-256 of the self-signed ECDSA P-256
//     certificate; `new WebTransport(url, {serverCertificateHashes})` opens a session;
//  2. mode=stream: the first incoming unidirectional stream carries length-prefixed messages:
//     `subscribed`, then demo events with strictly increasing ids;
//  3. publish: a length-prefixed `publish` on a bidirectional stream is answered there with
//     `published` (same ref), and the event comes back on the control stream with that id;
//  4. mode=datagram: demo events arrive as datagrams, one JSON envelope each.
import { assert, assertIncreasingIds, brief } from '../lib.mjs';

export const name = 'webtransport: stream mode, bidi publish, datagram mode';
export const timeoutMs = 40000;

export async function run({ page, log }) {
  const result = await page.evaluate(async () => {
    const out = { steps: [] };
    const step = (s) => out.steps.push(s);
    const doc = await (await fetch('/wt/cert-hash')).json();
    out.url = doc.url;
    const hashes = [{ algorithm: 'sha-256', value: new Uint8Array(doc.value) }];
    const enc = new TextEncoder();
    const dec = new TextDecoder();
    const framed = (obj) => {
      const body = enc.encode(JSON.stringify(obj));
      const buf = new Uint8Array(4 + body.length);
      new DataView(buf.buffer).setUint32(0, body.length);
      buf.set(body, 4);
      return buf;
    };
    // Reads length-prefixed JSON messages from a ReadableStream of bytes.
    const frames = (readable) => {
      const reader = readable.getReader();
      let pending = new Uint8Array(0);
      return {
        reader,
        async next() {
          for (;;) {
            if (pending.length >= 4) {
              const len = new DataView(pending.buffer, pending.byteOffset).getUint32(0);
              if (pending.length >= 4 + len) {
                const body = pending.slice(4, 4 + len);
                pending = pending.slice(4 + len);
                return body[0] === 1 ? { type: '(binary envelope)' } : JSON.parse(dec.decode(body));
              }
            }
            const { value, done } = await reader.read();
            if (done) return null;
            const joined = new Uint8Array(pending.length + value.length);
            joined.set(pending);
            joined.set(value, pending.length);
            pending = joined;
          }
        },
      };
    };
    const timeout = (ms, what) => new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms));
    const race = (p, what) => Promise.race([p, timeout(8000, what)]);
    try {
      // --- stream mode + publish over a bidirectional stream
      const wt = new WebTransport(doc.url + '?topics=demo,wtchat&mode=stream', { serverCertificateHashes: hashes });
      await race(wt.ready, 'session ready');
      step('ready');
      const uni = wt.incomingUnidirectionalStreams.getReader();
      const { value: controlStream } = await race(uni.read(), 'control stream');
      const control = frames(controlStream);
      out.subscribed = await race(control.next(), 'subscribed');
      out.streamEvents = [];
      while (out.streamEvents.length < 5) {
        const m = await race(control.next(), 'stream events');
        if (m.type === 'event' && m.topic === 'demo') out.streamEvents.push(m);
      }
      step('stream events');
      const bidi = await race(wt.createBidirectionalStream(), 'bidi stream');
      const writer = bidi.writable.getWriter();
      await writer.write(framed({ type: 'publish', topic: 'wtchat', content_type: 'text', data: 'hello from chromium', ref: 'b1' }));
      const replies = frames(bidi.readable);
      out.reply = await race(replies.next(), 'publish reply');
      for (;;) {
        const m = await race(control.next(), 'published event on the control stream');
        if (m.type === 'event' && m.topic === 'wtchat') { out.chatEvent = m; break; }
      }
      step('published');
      await writer.close();
      wt.close({ closeCode: 0, reason: 'done' });

      // --- datagram mode
      const wt2 = new WebTransport(doc.url + '?topics=demo&mode=datagram', { serverCertificateHashes: hashes });
      await race(wt2.ready, 'datagram session ready');
      const control2 = frames((await race(wt2.incomingUnidirectionalStreams.getReader().read(), 'control stream 2')).value);
      out.subscribed2 = await race(control2.next(), 'subscribed (datagram)');
      const dgrams = wt2.datagrams.readable.getReader();
      out.datagramEvents = [];
      while (out.datagramEvents.length < 5) {
        const { value } = await race(dgrams.read(), 'datagrams');
        out.datagramEvents.push(JSON.parse(dec.decode(value)));
      }
      step('datagrams');
      wt2.close({ closeCode: 0, reason: 'done' });
    } catch (e) {
      out.error = `${e && e.name}: ${e && e.message}${e && e.source ? ' source=' + e.source : ''}`;
    }
    return out;
  });
  log(`url ${result.url}; steps ${result.steps.join(', ')}`);
  assert(!result.error, `page failed after [${result.steps.join(', ')}]: ${result.error}`);
  assert(result.subscribed?.type === 'subscribed' && result.subscribed.mode === 'stream', `first message: ${brief(result.subscribed)}`);
  assertIncreasingIds(result.streamEvents, 'stream-mode demo events');
  assert(result.streamEvents.every((e) => e.data?.type === 'ris_message'), `demo events: ${brief(result.streamEvents[0])}`);
  assert(result.reply?.type === 'published' && result.reply.ref === 'b1', `publish reply: ${brief(result.reply)}`);
  assert(result.chatEvent?.id === result.reply.id && result.chatEvent.data === 'hello from chromium', `chat event: ${brief(result.chatEvent)}`);
  assert(result.subscribed2?.mode === 'datagram' && result.subscribed2.max_datagram_size > 0, `datagram subscribed: ${brief(result.subscribed2)}`);
  assert(result.datagramEvents.every((e) => e.type === 'event' && e.topic === 'demo'), `datagram events: ${brief(result.datagramEvents)}`);
  log(`stream events ${result.streamEvents.length}, published ${result.reply.id}, datagrams ${result.datagramEvents.length} (max_datagram_size ${result.subscribed2.max_datagram_size})`);
}
