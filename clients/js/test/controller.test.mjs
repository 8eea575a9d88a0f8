// The sans-IO core, driven by a fake clock and fake transports.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Controller, Cursor, backoff, DEFAULT_BACKOFF, parseId } from '../streamgate.js';
import { FakeClock, FakeNet, recorder } from './fakes.mjs';

function setup(opts = {}) {
  const clock = new FakeClock();
  const net = new FakeNet();
  const rec = recorder();
  const ctrl = new Controller({ clock, connect: net.connect, emit: rec.emit, ...opts });
  return { clock, net, rec, ctrl };
}

test('fallback in the default order, with a reason for every step', () => {
  const { clock, net, rec, ctrl } = setup();
  net.unsupported.add('webtransport');
  ctrl.start();
  assert.deepEqual(net.conns.map((c) => c.name), ['webtransport', 'websocket']);
  net.last('websocket').fail('closed before opening (code 1006): refused, or a proxy stripped Upgrade');
  assert.equal(net.conns.at(-1).name, 'sse');
  clock.advance(3999);
  assert.equal(net.conns.length, 3, 'sse still has time');
  clock.advance(1);
  assert.ok(net.last('sse').closed, 'a silent SSE attempt is closed at its deadline');
  assert.equal(net.conns.at(-1).name, 'poll');
  net.last('poll').open();
  assert.equal(ctrl.transport, 'poll');
  assert.equal(rec.transports.length, 1);
  const { from, to, reason } = rec.transports[0];
  assert.equal(from, null);
  assert.equal(to, 'poll');
  assert.match(reason, /webtransport: unsupported: no webtransport/);
  assert.match(reason, /websocket: closed before opening \(code 1006\)/);
  assert.match(reason, /sse: no answer within 4000 ms, not even the stream preamble \(a buffering proxy\?\)/);
  assert.deepEqual(ctrl.log.map((e) => [e.transport, e.outcome]), [
    ['webtransport', 'failed'], ['websocket', 'failed'], ['sse', 'failed'], ['poll', 'open'],
  ]);
  assert.equal(ctrl.log[2].endMs, 4000);
  assert.equal(ctrl.log[3].openMs, 0);
});

test('a transport that is unsupported is never tried again; one that failed is probed with backoff', () => {
  const { clock, net, ctrl } = setup();
  net.unsupported.add('webtransport');
  ctrl.start();
  net.last('websocket').fail('refused');
  net.last('sse').open();
  // websocket failed at t=0: probed at t=1000 (backoff(0) with no jitter), never webtransport.
  clock.advance(999);
  assert.equal(net.conns.length, 3);
  clock.advance(1);
  assert.equal(net.conns.at(-1).name, 'websocket');
  assert.equal(net.conns.filter((c) => c.name === 'webtransport').length, 1);
});

test('backoff: base doubling to the cap, with jitter', () => {
  const o = { base: 1000, max: 30000, jitter: 0.25 };
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6, 40].map((n) => backoff(n, o, () => 0.5)), [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  assert.equal(backoff(0, o, () => 0), 750);
  assert.equal(backoff(0, o, () => 1), 1250);
  assert.equal(backoff(2, DEFAULT_BACKOFF, () => 0.5), 4000);
});

test('probes of a better transport that keeps failing back off exponentially', () => {
  const { clock, net, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  net.last('poll').open();
  const times = [];
  for (let i = 0; i < 5; i++) {
    const before = net.conns.length;
    while (net.conns.length === before) clock.advance(1);
    times.push(clock.now());
    net.last('websocket').fail('refused');
  }
  // failed at 0 → probe at 1000; fails → +2000; → +4000; → +8000; → +16000
  assert.deepEqual(times, [1000, 3000, 7000, 15000, 31000]);
  assert.equal(ctrl.transport, 'poll', 'the working transport carries on meanwhile');
  assert.deepEqual(ctrl.log.filter((e) => e.role === 'probe').map((e) => e.outcome), Array(5).fill('failed'));
});

test('switch back once the better transport caught up: no loss, no repetition, the worse one closed', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'sse', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  const sse = net.last('sse').open().events(1, 2);
  clock.advance(1000);
  const ws = net.last('websocket');
  assert.equal(ws.since, 'e:2', 'the probe resumes from lastId');
  sse.events(3);
  ws.open();
  assert.equal(ctrl.transport, 'sse', 'not caught up yet: the probe subscribed before e:3');
  ws.events(3);
  assert.equal(ctrl.transport, 'websocket');
  assert.ok(sse.closed);
  sse.events(4); // late, from the closed transport: ignored
  ws.events(4, 5);
  assert.deepEqual(rec.events, ['e:1', 'e:2', 'e:3', 'e:4', 'e:5']);
  assert.deepEqual(rec.transports.map((t) => [t.from, t.to]), [[null, 'sse'], ['sse', 'websocket']]);
  assert.match(rec.transports[1].reason, /caught up at e:3/);
  assert.equal(ctrl.log.find((e) => e.transport === 'sse').outcome, 'replaced');
  assert.equal(clock.pending(), 0, 'on the best transport nothing more is planned');
});

test('overlapping transports: every id once, in order, whichever delivers first', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  const poll = net.last('poll').open().events(1);
  clock.advance(1000);
  const ws = net.last('websocket');
  poll.events(2, 3);
  ws.open().events(2); // behind: duplicate
  poll.events(4);
  ws.events(3); // still behind
  assert.equal(ctrl.transport, 'poll');
  poll.events(5);
  ws.events(4, 5); // caught up at e:5
  assert.equal(ctrl.transport, 'websocket');
  ws.events(6);
  assert.deepEqual(rec.events, ['e:1', 'e:2', 'e:3', 'e:4', 'e:5', 'e:6']);

  // The other way round: the probe runs ahead of the active transport.
  const s2 = setup({ order: ['websocket', 'poll'] });
  s2.ctrl.start();
  s2.net.last('websocket').fail('refused');
  const p2 = s2.net.last('poll').open().events(1, 2);
  s2.clock.advance(1000);
  const w2 = s2.net.last('websocket');
  p2.events(3);
  s2.ctrl.timeouts.catchUp = 1e9;
  w2.open();
  p2.events(4);
  w2.events(2, 3, 4, 5); // e:5 first from the probe: delivered, and it is caught up
  p2.events(5);
  assert.deepEqual(s2.rec.events, ['e:1', 'e:2', 'e:3', 'e:4', 'e:5']);
  assert.equal(s2.ctrl.transport, 'websocket');
});

test('a probe that subscribed but does not catch up takes over at the catch-up deadline', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  const poll = net.last('poll').open().events(1);
  clock.advance(1000);
  poll.events(2);
  net.last('websocket').open();
  clock.advance(4999);
  assert.equal(ctrl.transport, 'poll');
  clock.advance(1);
  assert.equal(ctrl.transport, 'websocket');
  assert.match(rec.transports.at(-1).reason, /subscribed 5000 ms ago/);
});

test('a probe whose since is still lastId takes over as soon as it is subscribed (idle stream)', () => {
  const { clock, net, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  net.last('poll').open().events(7);
  clock.advance(1000);
  net.last('websocket').open();
  assert.equal(ctrl.transport, 'websocket');
});

test('after a drop the same transport reconnects from lastId, then the next one takes over from lastId', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'sse', 'poll'] });
  ctrl.start();
  const ws = net.last('websocket').open().events(1, 2, 3);
  clock.advance(5000);
  ws.fail('closed (code 1006)');
  assert.equal(ctrl.transport, null);
  const again = net.conns.at(-1);
  assert.equal(again.name, 'websocket');
  assert.equal(again.since, 'e:3');
  again.fail('closed before opening (code 1006): refused, or a proxy stripped Upgrade');
  const sse = net.conns.at(-1);
  assert.equal(sse.name, 'sse');
  assert.equal(sse.since, 'e:3');
  sse.open().events(3, 4);
  assert.deepEqual(rec.events, ['e:1', 'e:2', 'e:3', 'e:4']);
  assert.deepEqual(rec.transports.map((t) => [t.from, t.to]), [[null, 'websocket'], ['websocket', 'sse']]);
  assert.match(rec.transports[1].reason, /websocket dropped: closed \(code 1006\); websocket: closed before opening/);
});

test('a connection that keeps dropping right after it opens is retried with backoff', () => {
  const { clock, net, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').open().fail('closed (code 1008: token expired)');
  assert.equal(net.conns.length, 1, 'not at once: it dropped within `stable`');
  clock.advance(1000);
  assert.equal(net.conns.length, 2);
  net.last('websocket').open().fail('again');
  clock.advance(1999);
  assert.equal(net.conns.length, 2);
  clock.advance(1);
  assert.equal(net.conns.length, 3);
  assert.equal(ctrl.transport, null);
});

test('when every transport fails the chain starts over from the best after a backoff', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').open();
  clock.advance(2000);
  net.last('websocket').fail('gateway gone');
  net.last('websocket').fail('refused');
  net.last('poll').fail('fetch failed');
  assert.deepEqual(rec.transports.at(-1), {
    from: 'websocket', to: null,
    reason: 'every transport failed (websocket dropped: gateway gone; websocket: refused; poll: fetch failed); retrying in 1000 ms',
  });
  const n = net.conns.length;
  clock.advance(1000);
  assert.equal(net.conns.length, n + 1);
  assert.equal(net.conns.at(-1).name, 'websocket');
  net.last('websocket').fail('refused');
  net.last('poll').fail('fetch failed');
  clock.advance(1999);
  assert.equal(net.conns.length, n + 2, 'second round waits 2000 ms');
  clock.advance(1);
  assert.equal(net.conns.length, n + 3);
});

test('an SSE stream silent past sseIdle is dropped; comments keep it alive', () => {
  const { clock, net, ctrl } = setup({ order: ['sse', 'poll'] });
  ctrl.start();
  const sse = net.last('sse').open();
  clock.advance(44000);
  sse.sink.activity(); // a heartbeat comment
  clock.advance(44000);
  assert.equal(ctrl.transport, 'sse');
  clock.advance(1000);
  assert.ok(sse.closed);
  assert.equal(ctrl.log[0].reason, 'nothing received for 45000 ms, not even a heartbeat');
  assert.equal(net.conns.at(-1).name, 'sse', 'it had worked: one more try');
});

test('gap, reset, lagged, unavailable/available surfaced once each, even from overlapping transports', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  const poll = net.last('poll').open().events(1);
  clock.advance(1000);
  poll.events(2); // so the probe (since e:1) is behind and both stay open
  ctrl.timeouts.catchUp = 1e9;
  const ws = net.last('websocket').open();
  assert.equal(ctrl.transport, 'poll');
  const gap = { type: 'gap', topic: 't', after: 'e:2', lost_through: 'e:9' };
  poll.notice(gap);
  ws.notice({ ...gap });
  poll.notice({ type: 'lagged', last_delivered: 'e:1' });
  poll.notice({ type: 'unavailable', reason: 'redis' });
  ws.notice({ type: 'unavailable', reason: 'redis' });
  ws.notice({ type: 'available' });
  poll.notice({ type: 'available' });
  assert.deepEqual(rec.notices.map((n) => n.type), ['gap', 'lagged', 'unavailable', 'available']);
  poll.events(10);
  // A gap that another transport already delivered past is no loss.
  ws.notice({ type: 'gap', topic: 't', after: 'e:1', lost_through: 'e:5' });
  assert.equal(rec.notices.length, 4);
  ws.notice({ type: 'reset', requested: 'e:10', epoch: 'f' });
  poll.notice({ type: 'reset', requested: 'e:10', epoch: 'f' });
  assert.equal(rec.notices.length, 5);
  assert.equal(ctrl.cursor.lastId, 'f:0', 'resumes in the new epoch, not reset again');
  ws.events('f:1', 'f:2');
  poll.events('f:1');
  // An epoch change with no reset is surfaced as one.
  ws.events('g:1');
  assert.deepEqual(rec.notices.at(-1), { type: 'reset', requested: 'f:2', epoch: 'g', implicit: true });
  assert.deepEqual(rec.events, ['e:1', 'e:2', 'e:10', 'f:1', 'f:2', 'g:1']);
  ws.notice({ type: 'expired', reason: 'token expired' });
  assert.equal(rec.notices.at(-1).type, 'expired');
});

test('an undecodable event is surfaced and the resume point moves past it', () => {
  const { net, rec, ctrl } = setup({ order: ['poll'] });
  ctrl.start();
  net.last('poll').open().events(1).notice({ type: 'undecodable', id: 'e:2', reason: 'bad json' }).events(2, 3);
  assert.deepEqual(rec.events, ['e:1', 'e:3']);
  assert.equal(rec.notices[0].type, 'undecodable');
});

test('the first poll cursor gives a fresh subscription its resume point', () => {
  const { clock, net, ctrl } = setup({ order: ['poll', 'sse'] });
  ctrl.start();
  net.last('poll').open().notice({ type: 'cursor', id: 'e:41' });
  assert.equal(ctrl.cursor.lastId, 'e:41');
  clock.advance(5000);
  net.last('poll').fail('fetch failed');
  assert.equal(net.conns.at(-1).since, 'e:41');
});

test('a refusal every transport would get (400/401/403) ends the subscription with an error', () => {
  const { net, rec, ctrl } = setup();
  net.unsupported.add('webtransport');
  ctrl.start();
  net.last('websocket').fail('closed before opening');
  net.last('sse').fail('HTTP 401 unauthorized: no token', { fatal: true, code: 'unauthorized' });
  assert.deepEqual(rec.errors, [{ code: 'unauthorized', reason: 'sse: HTTP 401 unauthorized: no token' }]);
  assert.ok(ctrl.closed);
  assert.equal(net.conns.length, 3, 'poll is not tried');
});

test('no usable transport at all is an error, not an endless loop', () => {
  const { net, rec, ctrl } = setup({ order: ['webtransport'] });
  net.unsupported.add('webtransport');
  ctrl.start();
  assert.equal(rec.errors[0].code, 'no_transport');
  assert.ok(ctrl.closed);
});

test('close() stops every connection and timer', () => {
  const { clock, net, rec, ctrl } = setup({ order: ['websocket', 'sse', 'poll'] });
  ctrl.start();
  net.last('websocket').fail('refused');
  const sse = net.last('sse').open().events(1);
  clock.advance(1000); // a probe of websocket is connecting
  assert.equal(net.live().length, 2);
  ctrl.close();
  assert.equal(net.live().length, 0);
  assert.equal(clock.pending(), 0);
  sse.events(2);
  net.last('websocket').open().events(3);
  clock.advance(100000);
  assert.deepEqual(rec.events, ['e:1']);
  assert.equal(net.conns.length, 3, 'nothing new after close()');
  assert.ok(ctrl.log.every((e) => e.outcome !== 'connecting' && e.outcome !== 'open'));
});

test('Cursor and parseId', () => {
  assert.deepEqual(parseId('k3f9x2m1q0zz:42'), { epoch: 'k3f9x2m1q0zz', seq: 42 });
  assert.equal(parseId('bad'), null);
  assert.equal(parseId('a:b'), null);
  const c = new Cursor('e:5');
  assert.equal(c.event('e:5'), false);
  assert.equal(c.event('e:4'), false);
  assert.equal(c.event('e:7'), true);
  assert.equal(c.lastId, 'e:7');
  assert.throws(() => new Cursor('nope'));
});
