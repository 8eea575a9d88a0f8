// A fake clock and fake transports for driving the client's Controller without I/O.

/** Timers fire only when the test advances time; random() is fixed (0.5: no jitter). */
export class FakeClock {
  constructor() {
    this.t = 0;
    this.seq = 0;
    /** @type {Map<number, {at: number, fn: () => void}>} */
    this.timers = new Map();
    this.randomValue = 0.5;
  }
  now = () => this.t;
  random = () => this.randomValue;
  setTimeout = (fn, ms) => {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  /** Moves time forward by ms, firing due timers in order (including ones they set). */
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) if (timer.at <= end && (!next || timer.at < next[1].at)) next = [id, timer];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
  pending() {
    return this.timers.size;
  }
}

/** Records every connection the controller opens; tests play the gateway's part on each. */
export class FakeNet {
  constructor() {
    /** @type {FakeConn[]} */
    this.conns = [];
    /** names whose connect throws synchronously (like an unsupported runtime) */
    this.unsupported = new Set();
  }
  connect = (name, { since, sink }) => {
    const c = new FakeConn(name, since, sink);
    this.conns.push(c);
    if (this.unsupported.has(name)) sink.close(`unsupported: no ${name}`, { permanent: true });
    return c;
  };
  /** The latest connection of a transport. */
  last(name) {
    return this.conns.filter((c) => c.name === name).at(-1);
  }
  live() {
    return this.conns.filter((c) => !c.closed);
  }
}

export class FakeConn {
  constructor(name, since, sink) {
    this.name = name;
    this.since = since;
    this.sink = sink;
    this.closed = false;
    this.published = [];
    // Like the real adapters: only the bidirectional transports can publish.
    if (name === 'sse' || name === 'poll') this.publish = undefined;
  }
  close() {
    this.closed = true;
  }
  open() {
    this.sink.open();
    return this;
  }
  /** Delivers events with these seqs (epoch `e` unless the id has one). */
  events(...ids) {
    for (const id of ids) {
      const full = String(id).includes(':') ? String(id) : `e:${id}`;
      this.sink.message({ type: 'event', topic: 't', id: full, ts: 1, content_type: 'json', data: { n: full } });
    }
    return this;
  }
  notice(m) {
    this.sink.message(m);
    return this;
  }
  fail(reason = 'boom', flags) {
    this.closed = true;
    this.sink.close(reason, flags);
  }
  async publish(m) {
    this.published.push(m);
    return { type: 'published', id: 'e:99', ref: 'c-1' };
  }
}

/** A controller-level recorder of emitted events. */
export function recorder() {
  const out = { events: [], notices: [], transports: [], errors: [] };
  out.emit = (type, detail) => {
    if (type === 'event') out.events.push(detail.id);
    else if (type === 'notice') out.notices.push(detail);
    else if (type === 'transport') out.transports.push(detail);
    else if (type === 'error') out.errors.push(detail);
  };
  return out;
}
