// streamgate client: one subscription over WebTransport, WebSocket, SSE or long polling, that
// falls back when a network blocks one, moves back when the better one works again, and never
// loses or repeats an event across the switch (docs/CLIENTS.md; the wire is docs/PROTOCOL.md).
//
// One ESM file with no runtime dependencies, because the gateway embeds exactly this file and
// serves it at GET /client/streamgate.js: a page imports it with no bundler and no CDN. Where
// the code does by hand what an npm package would (SSE parsing, backoff), that is the reason.
//
// Layout: ids and the cursor (dedupe, order, notices) → backoff → Controller, the sans-IO
// state machine (fallback, probes, switch-back; time and transports injected) → the four
// transport adapters (the only code touching the network) → Subscription, the public face.
// @ts-check

/**
 * @typedef {'webtransport' | 'websocket' | 'sse' | 'poll'} TransportName
 * @typedef {{ type: string, [key: string]: any }} Message A server→client envelope (§3.1).
 * @typedef {{ id: string, topic: string, data: unknown, contentType: string, ts?: number }} EventDetail
 * @typedef {{ from: string | null, to: string | null, reason: string }} TransportDetail
 * @typedef {{ transport: string, role: 'connect' | 'probe', start: number, outcome: string,
 *   reason: string, openMs: number | null, firstEventMs: number | null, endMs: number | null }} LogEntry
 *   One connection attempt: `start` is clock time (ms); `openMs`, `firstEventMs` and `endMs` are
 *   measured from `start`.
 * @typedef {{ webtransport: number, websocket: number, sse: number, poll: number,
 *   sseIdle: number, pollHold: number, catchUp: number, stable: number }} Timeouts
 * @typedef {{ base: number, max: number, jitter: number }} BackoffOptions
 * @typedef {{ now(): number, setTimeout(fn: () => void, ms: number): unknown,
 *   clearTimeout(handle: unknown): void, random(): number }} Clock
 * @typedef {{ permanent?: boolean, fatal?: boolean, code?: string }} CloseFlags
 * @typedef {{ open(): void, message(m: Message): void, activity(): void,
 *   close(reason: string, flags?: CloseFlags): void }} Sink
 *   What an adapter reports: `open` once the gateway confirmed the subscription, every message,
 *   any sign of life (SSE comments), and one `close` with a reason.
 * @typedef {{ close(): void, publish?(m: object): Promise<Message> }} TransportHandle
 * @typedef {(name: TransportName, ctx: { since: string | null, sink: Sink }) => TransportHandle} Connect
 * @typedef {{ base: URL, topics: string[], since: string | null, sink: Sink, timeouts: Timeouts,
 *   token: () => Promise<string | undefined>, params: () => Record<string, string> }} AdapterContext
 */

/** @type {TransportName[]} */
export const DEFAULT_ORDER = ['webtransport', 'websocket', 'sse', 'poll'];

/**
 * Milliseconds. The four transport names bound how long an attempt may take to be confirmed by
 * the gateway (`subscribed`, SSE's first bytes, the first poll's answer). The gateway's SSE
 * stream starts with a `retry:` line and a comment at once and sends a `: heartbeat` comment
 * after 15 s of silence (`[sse] heartbeat_interval`), so `sse` only waits for those first bytes
 * and `sseIdle` (3 heartbeats) declares a stream dead. `pollHold` is the long-poll hold asked of
 * the gateway (its default, 25 s). `catchUp` bounds how long a better transport that already
 * subscribed waits to catch up before it takes over anyway (its subscription covers lastId, so
 * that is still lossless). A connection that drops within `stable` of opening counts as a quick
 * drop: repeated quick drops back off instead of reconnecting at once.
 * @type {Timeouts}
 */
export const DEFAULT_TIMEOUTS = {
  webtransport: 4000, websocket: 4000, sse: 4000, poll: 8000,
  sseIdle: 45000, pollHold: 25000, catchUp: 5000, stable: 1000,
};

/** Exponential backoff: `base` doubling up to `max`, ± `jitter` (a fraction). @type {BackoffOptions} */
export const DEFAULT_BACKOFF = { base: 1000, max: 30000, jitter: 0.25 };

const NOTICES = new Set(['gap', 'reset', 'lagged', 'unavailable', 'available', 'expired', 'undecodable']);

// ---------------------------------------------------------------------------------------------
// Ids and the cursor

/**
 * `<epoch>:<seq>` (§2), or null when malformed.
 * @param {string | null | undefined} id
 * @returns {{ epoch: string, seq: number } | null}
 */
export function parseId(id) {
  const m = /^([A-Za-z0-9]{1,32}):(\d{1,16})$/.exec(id || '');
  return m ? { epoch: m[1], seq: Number(m[2]) } : null;
}

/**
 * Where the subscription is: the last delivered id, and which notices were already surfaced.
 * Every transport's messages go through one Cursor, so overlapping transports (during a
 * switch) deliver each id once and in order: an event is delivered only when its seq is above
 * the last one of the same epoch. That is lossless because each transport delivers a complete
 * suffix of the same ordered stream from a `since` no later than the cursor.
 */
export class Cursor {
  /** @param {string | null} [since] */
  constructor(since) {
    /** @type {string | null} */
    this.lastId = null;
    this.epoch = '';
    this.seq = 0;
    this.unavailable = false;
    /** @type {Set<string>} */
    this.seen = new Set();
    if (since) this.set(since);
  }

  /** @param {string} id */
  set(id) {
    const p = parseId(id);
    if (!p) throw new TypeError(`not an event id (epoch:seq): ${id}`);
    this.lastId = id;
    this.epoch = p.epoch;
    this.seq = p.seq;
  }

  /**
   * Whether the event with this id is new; if so the cursor moves to it.
   * @param {string} id
   */
  event(id) {
    const p = parseId(id);
    if (!p || (this.lastId && p.epoch === this.epoch && p.seq <= this.seq)) return false;
    this.set(id);
    return true;
  }

  /**
   * Whether a notice is news to the application. Overlapping transports each send their own
   * copy of a `gap` or `reset`; it is surfaced once.
   * @param {Message} m
   */
  notice(m) {
    switch (m.type) {
      case 'reset':
        if (m.epoch === this.epoch) return false;
        // `<epoch>:0` is a valid cursor (the long-poll one after a reset), so a reconnect now
        // resumes in the new epoch instead of being reset again.
        this.set(`${m.epoch}:0`);
        return true;
      case 'gap': {
        // Lost for that transport, but another one already delivered past it: nothing lost.
        const p = parseId(m.lost_through);
        if (p && p.epoch === this.epoch && p.seq <= this.seq) return false;
        return this.once(`gap ${m.topic} ${m.after} ${m.lost_through}`);
      }
      case 'lagged':
        return this.once(`lagged ${m.last_delivered}`);
      case 'unavailable':
      case 'available': {
        const down = m.type === 'unavailable';
        if (down === this.unavailable) return false;
        this.unavailable = down;
        return true;
      }
      default:
        return true;
    }
  }

  /** @param {string} key */
  once(key) {
    if (this.seen.has(key)) return false;
    this.seen.add(key);
    if (this.seen.size > 256) this.seen.delete(/** @type {string} */ (this.seen.values().next().value));
    return true;
  }
}

/**
 * The n-th retry delay (n from 0): `base·2ⁿ` capped at `max`, times a random factor in
 * [1 − jitter, 1 + jitter] so clients dropped together do not all come back at once.
 * @param {number} n
 * @param {BackoffOptions} [o]
 * @param {() => number} [random]
 */
export function backoff(n, o = DEFAULT_BACKOFF, random = Math.random) {
  const d = Math.min(o.max, o.base * 2 ** Math.min(n, 30));
  return Math.round(d * (1 - o.jitter + 2 * o.jitter * random()));
}

// ---------------------------------------------------------------------------------------------
// The controller: sans-IO state machine

/**
 * @typedef {{ name: TransportName, role: 'connect' | 'probe', since: string | null,
 *   open: boolean, done: boolean, openedAt: number, top: string | null, entry: LogEntry,
 *   handle: TransportHandle | null, timers: unknown[], idle: unknown }} Attempt
 */

/** Why an attempt timed out, per transport: the likely cause, for the log. */
const HINTS = {
  webtransport: ' (UDP blocked?)',
  websocket: '',
  sse: ', not even the stream preamble (a buffering proxy?)',
  poll: '',
};

/**
 * The subscription's logic without any I/O: which transport to try, when to give up on it,
 * when to probe a better one and when to switch back, and what to deliver. Time comes from
 * `clock` and connections from `connect`, so tests drive it with fakes (advanced API).
 */
export class Controller {
  /**
   * @param {{ order?: TransportName[], since?: string | null, timeouts?: Partial<Timeouts>,
   *   backoff?: Partial<BackoffOptions>, clock: Clock, connect: Connect,
   *   emit: (type: string, detail: any) => void }} o
   */
  constructor(o) {
    this.order = o.order || DEFAULT_ORDER;
    /** @type {Timeouts} */
    this.timeouts = { ...DEFAULT_TIMEOUTS, ...o.timeouts };
    /** @type {BackoffOptions} */
    this.backoff = { ...DEFAULT_BACKOFF, ...o.backoff };
    this.clock = o.clock;
    this.connect = o.connect;
    this.emit = o.emit;
    this.cursor = new Cursor(o.since);
    /** @type {Attempt | null} the transport events come from */
    this.active = null;
    /** @type {Attempt | null} a foreground attempt, while there is no active transport */
    this.pending = null;
    /** @type {Attempt | null} a background attempt at a better transport */
    this.probe = null;
    /** @type {string | null} the transport last announced in a `transport` event */
    this.current = null;
    /** @type {LogEntry[]} */
    this.log = [];
    /** @type {Record<string, number>} consecutive failures per transport */
    this.fails = {};
    /** @type {Record<string, number>} earliest clock time to probe each transport again */
    this.retryAt = {};
    /** @type {Set<string>} transports this runtime cannot use at all */
    this.off = new Set();
    /** @type {string[]} why the transports before the one being tried failed */
    this.reasons = [];
    this.rounds = 0;
    this.quick = 0;
    /** @type {unknown} */
    this.retryTimer = null;
    /** @type {unknown} */
    this.probeTimer = null;
    this.closed = false;
  }

  start() {
    this.reasons = [];
    this.chain(0);
  }

  /** @returns {TransportName | null} */
  get transport() {
    return this.active ? this.active.name : null;
  }

  /**
   * @param {TransportName} name
   * @param {'connect' | 'probe'} role
   */
  attempt(name, role) {
    const c = this.clock;
    /** @type {Attempt} */
    const a = {
      name, role, since: this.cursor.lastId, open: false, done: false, openedAt: 0, top: null,
      entry: { transport: name, role, start: c.now(), outcome: 'connecting', reason: '', openMs: null, firstEventMs: null, endMs: null },
      handle: null, timers: [], idle: null,
    };
    this.log.push(a.entry);
    // Set before connecting: an adapter may report failure before connect() returns.
    if (role === 'connect') this.pending = a;
    else this.probe = a;
    const ms = this.timeouts[name];
    a.timers.push(c.setTimeout(() => this.fail(a, `no answer within ${ms} ms${HINTS[name]}`), ms));
    /** @type {Sink} */
    const sink = {
      open: () => this.opened(a),
      message: (m) => this.message(a, m),
      activity: () => this.alive(a),
      close: (reason, flags) => this.ended(a, reason, flags),
    };
    try {
      a.handle = this.connect(name, { since: a.since, sink });
    } catch (e) {
      this.ended(a, errorText(e));
    }
    // A connect that failed synchronously already ended the attempt; make sure it stays shut.
    if (a.done) a.handle?.close();
  }

  /** @param {number} from index in `order` of the first transport to try */
  chain(from) {
    if (this.closed) return;
    let i = from;
    while (i < this.order.length && this.off.has(this.order[i])) i++;
    if (i < this.order.length) {
      this.attempt(this.order[i], 'connect');
      return;
    }
    if (this.order.every((t) => this.off.has(t))) {
      this.close();
      this.emit('error', { code: 'no_transport', reason: `no usable transport: ${this.reasons.join('; ')}` });
      return;
    }
    const d = backoff(this.rounds++, this.backoff, this.clock.random);
    const reason = `every transport failed (${this.reasons.join('; ')}); retrying in ${d} ms`;
    if (this.current) this.emit('transport', { from: this.current, to: null, reason });
    this.current = null;
    this.retryTimer = this.clock.setTimeout(() => this.start(), d);
  }

  /** @param {Attempt} a */
  opened(a) {
    if (a.done || a.open) return;
    a.open = true;
    a.openedAt = this.clock.now();
    a.entry.outcome = 'open';
    a.entry.openMs = a.openedAt - a.entry.start;
    for (const t of a.timers) this.clock.clearTimeout(t);
    a.timers = [];
    this.alive(a);
    if (a === this.pending) this.promote(a, this.reasons.join('; ') || 'start');
    else if (a === this.probe) this.caughtUp(a);
  }

  /**
   * @param {Attempt} a
   * @param {Message} m
   */
  message(a, m) {
    if (a.done) return;
    if (!a.open) this.opened(a); // any message proves the subscription
    if (a.done) return;
    this.alive(a);
    if (m.type === 'event') {
      if (a.entry.firstEventMs == null) a.entry.firstEventMs = this.clock.now() - a.entry.start;
      a.top = m.id;
      const p = parseId(m.id);
      // An epoch change without a `reset` would break the seq comparison silently: surface it.
      if (p && this.cursor.lastId && p.epoch !== this.cursor.epoch) {
        const reset = { type: 'reset', requested: this.cursor.lastId, epoch: p.epoch, implicit: true };
        if (this.cursor.notice(reset)) this.emit('notice', reset);
      }
      if (this.cursor.event(m.id)) this.emit('event', eventDetail(m));
      if (a === this.probe) this.caughtUp(a);
    } else if (m.type === 'cursor') {
      // The first long poll's position: adopted only when nothing else gave one, so a fresh
      // subscription that falls over to another transport resumes from there.
      if (!this.cursor.lastId && parseId(m.id)) this.cursor.set(m.id);
    } else if (m.type === 'undecodable') {
      // Skipped with a warning, resume point past it (§3.1): asking again would get the same bytes.
      if (m.id) this.cursor.event(m.id);
      this.emit('notice', m);
    } else if (NOTICES.has(m.type)) {
      if (this.cursor.notice(m)) this.emit('notice', m);
    } else if (m.type === 'error') {
      this.emit('error', m);
    }
  }

  /** @param {Attempt} a */
  alive(a) {
    const ms = a.name === 'sse' && a.open ? this.timeouts.sseIdle : 0;
    if (!ms || a.done) return;
    this.clock.clearTimeout(a.idle);
    a.idle = this.clock.setTimeout(() => this.fail(a, `nothing received for ${ms} ms, not even a heartbeat`), ms);
  }

  /**
   * @param {Attempt} a
   * @param {string} reason
   */
  fail(a, reason) {
    if (a.done) return;
    a.handle?.close();
    this.ended(a, reason);
  }

  /**
   * @param {Attempt} a
   * @param {string} outcome
   * @param {string} reason
   */
  finish(a, outcome, reason) {
    if (a.done) return false;
    a.done = true;
    for (const t of [...a.timers, a.idle]) this.clock.clearTimeout(t);
    Object.assign(a.entry, { outcome, reason, endMs: this.clock.now() - a.entry.start });
    return true;
  }

  /**
   * The adapter reports the end of a connection (or fail() does for it).
   * @param {Attempt} a
   * @param {string} reason
   * @param {CloseFlags} [flags]
   */
  ended(a, reason, flags = {}) {
    const wasOpen = a.open;
    if (!this.finish(a, wasOpen ? 'closed' : 'failed', reason)) return;
    const now = this.clock.now();
    if (flags.permanent) this.off.add(a.name);
    if (flags.fatal) {
      // Refused for a reason every transport would meet (bad topic, no valid token). Closed
      // first, so a listener of `error` sees a closed subscription.
      this.close();
      this.emit('error', { code: flags.code || 'refused', reason: `${a.name}: ${reason}` });
      return;
    }
    if (!wasOpen || a.role === 'probe') {
      this.fails[a.name] = (this.fails[a.name] || 0) + 1;
      this.retryAt[a.name] = now + backoff(this.fails[a.name] - 1, this.backoff, this.clock.random);
    }
    if (a === this.probe) {
      this.probe = null;
      this.schedule();
    } else if (a === this.active) {
      this.active = null;
      this.quick = now - a.openedAt < this.timeouts.stable ? this.quick + 1 : 0;
      const why = `${a.name} dropped: ${reason}`;
      if (this.probe?.open) {
        this.promote(this.probe, `${why}; ${this.probe.name} was already subscribed`);
        return;
      }
      // A transport that worked gets the first try again (a restart, a cut connection); only if
      // that attempt fails does the next one take over, from lastId.
      this.reasons = [why];
      const i = this.order.indexOf(a.name);
      if (!this.quick) this.chain(i);
      else this.retryTimer = this.clock.setTimeout(() => this.chain(i), backoff(this.quick - 1, this.backoff, this.clock.random));
    } else if (a === this.pending) {
      this.pending = null;
      this.reasons.push(`${a.name}: ${reason}`);
      this.chain(this.order.indexOf(a.name) + 1);
    }
  }

  /**
   * Makes `a` the transport events come from, and closes the one it replaces.
   * @param {Attempt} a
   * @param {string} reason
   */
  promote(a, reason) {
    const old = this.active;
    for (const t of a.timers) this.clock.clearTimeout(t);
    a.timers = [];
    if (a === this.probe) this.probe = null;
    if (a === this.pending) this.pending = null;
    for (const other of [old, this.pending]) {
      if (other && this.finish(other, 'replaced', `replaced by ${a.name}`)) other.handle?.close();
    }
    this.pending = null;
    this.clock.clearTimeout(this.retryTimer);
    this.active = a;
    this.rounds = 0;
    this.fails[a.name] = 0;
    this.reasons = [];
    if (this.current !== a.name) {
      this.emit('transport', { from: this.current, to: a.name, reason });
      this.current = a.name;
    }
    this.schedule();
  }

  /** Plans the next background attempt at a better transport than the active one. */
  schedule() {
    this.clock.clearTimeout(this.probeTimer);
    if (this.closed || this.probe || !this.active) return;
    /** @type {TransportName | null} */
    let best = null;
    for (const t of this.order.slice(0, this.order.indexOf(this.active.name))) {
      if (!this.off.has(t) && (best == null || (this.retryAt[t] || 0) < (this.retryAt[best] || 0))) best = t;
    }
    if (!best) return;
    const name = best;
    const d = Math.max(0, (this.retryAt[name] || 0) - this.clock.now());
    this.probeTimer = this.clock.setTimeout(() => {
      if (!this.closed && !this.probe && this.active) this.attempt(name, 'probe');
    }, d);
  }

  /**
   * A probe takes over once it delivered the event the cursor is at (or nothing was delivered
   * since it subscribed): from then on it carries everything the active one would.
   * @param {Attempt} a
   */
  caughtUp(a) {
    if (!a.open || a.done || a !== this.probe) return;
    const last = this.cursor.lastId;
    if (!this.active) this.promote(a, 'subscribed while no other transport was');
    else if (a.top === last || a.since === last) this.promote(a, `caught up at ${last}`);
    else if (!a.timers.length) {
      a.timers.push(this.clock.setTimeout(() => this.promote(a, `subscribed ${this.timeouts.catchUp} ms ago from an earlier id`), this.timeouts.catchUp));
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.clock.clearTimeout(this.retryTimer);
    this.clock.clearTimeout(this.probeTimer);
    for (const a of [this.active, this.pending, this.probe]) {
      if (a && this.finish(a, 'closed', 'closed by the client')) a.handle?.close();
    }
    this.active = this.pending = this.probe = null;
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** @param {unknown} e */
const errorText = (e) => (e instanceof Error ? e.message : String(e));

/** @param {string} s */
function fromBase64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** @param {Uint8Array} b */
function toBase64(b) {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  return btoa(s);
}

/**
 * @param {Message} m
 * @returns {EventDetail}
 */
function eventDetail(m) {
  const data = m.content_type === 'binary' && typeof m.data === 'string' ? fromBase64(m.data) : m.data;
  return { id: m.id, topic: m.topic, data, contentType: m.content_type, ts: m.ts };
}

/**
 * A JSON envelope; one that does not parse becomes `undecodable` with the id read from its
 * head (the gateway writes type, topic and id first, none of which can hold a quote).
 * @param {string} text
 * @param {string} [knownId]
 * @returns {Message}
 */
export function parseEnvelope(text, knownId) {
  try {
    return JSON.parse(text);
  } catch (e) {
    const id = knownId || /^\{"type":"event","topic":"[^"]*","id":"([^"]+)"/.exec(text)?.[1];
    return { type: 'undecodable', id, reason: errorText(e) };
  }
}

/**
 * The binary event envelope of §3.3 (WebSocket binary frames, WebTransport messages that start
 * with byte 1), or a JSON one (first byte `{`).
 * @param {Uint8Array} b
 * @returns {Message}
 */
export function parseMessage(b) {
  if (b[0] !== 1) return parseEnvelope(new TextDecoder().decode(b));
  const ascii = (/** @type {number} */ at, /** @type {number} */ n) => String.fromCharCode(...b.subarray(at, at + n));
  let at = 3;
  const topic = ascii(at + 1, b[at]);
  at += 1 + b[at];
  const id = ascii(at + 1, b[at]);
  at += 1 + b[at];
  const ts = Number(new DataView(b.buffer, b.byteOffset + at, 8).getBigUint64(0));
  const payload = b.subarray(at + 8);
  const contentType = ['text', 'json', 'binary'][b[2]];
  try {
    const text = () => new TextDecoder('utf-8', { fatal: true }).decode(payload);
    const data = contentType === 'binary' ? payload : contentType === 'json' ? JSON.parse(text()) : text();
    return { type: 'event', topic, id, ts, content_type: contentType, data };
  } catch (e) {
    return { type: 'undecodable', id, reason: errorText(e) };
  }
}

/**
 * Calls `each` with every length-prefixed message (u32 big-endian length) of a stream; chunks
 * do not follow message boundaries.
 * @param {ReadableStream<Uint8Array>} readable
 * @param {(bytes: Uint8Array) => void} each
 */
async function readFrames(readable, each) {
  const reader = readable.getReader();
  let pending = new Uint8Array(0);
  for (;;) {
    while (pending.length >= 4) {
      const n = new DataView(pending.buffer, pending.byteOffset, 4).getUint32(0);
      if (pending.length < 4 + n) break;
      each(pending.subarray(4, 4 + n));
      pending = pending.subarray(4 + n);
    }
    const { value, done } = await reader.read();
    if (done) return;
    const joined = new Uint8Array(pending.length + value.length);
    joined.set(pending);
    joined.set(value, pending.length);
    pending = joined;
  }
}

/** @param {object} m */
function frame(m) {
  const body = new TextEncoder().encode(JSON.stringify(m));
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length);
  out.set(body, 4);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Transport adapters: the only code that touches the network

/**
 * @param {AdapterContext} ctx
 * @param {string} path
 * @param {Record<string, string | null | undefined>} params
 */
function endpoint(ctx, path, params) {
  const url = new URL(path, ctx.base);
  for (const [k, v] of Object.entries({ ...ctx.params(), topics: ctx.topics.join(','), ...params })) if (v) url.searchParams.set(k, v);
  return url;
}

/**
 * An HTTP error answer as a reason and flags: 400, 401 and 403 would be the same on every
 * transport, so they end the subscription; anything else (404: the transport is turned off in
 * the gateway's config; 429; 5xx) just moves on to the next transport.
 * @param {Response} res
 * @returns {Promise<[string, CloseFlags]>}
 */
async function httpError(res) {
  const body = await res.json().catch(() => ({}));
  const e = body.error || body;
  const code = e.code || '';
  return [`HTTP ${res.status}${code ? ` ${code}: ${e.reason}` : ''}`, { fatal: [400, 401, 403].includes(res.status), code }];
}

/**
 * @param {AdapterContext} ctx
 * @returns {Promise<Record<string, string>>}
 */
async function authHeaders(ctx) {
  const t = await ctx.token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

/** @param {Sink} sink @param {string} reason */
function unsupported(sink, reason) {
  queueMicrotask(() => sink.close(reason, { permanent: true }));
  return { close() {} };
}

/**
 * WebTransport (§7): GET /wt/cert-hash for the session URL and the certificate's hash, then a
 * session in `stream` mode (events and notices in order on the control stream).
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
function webtransport(ctx) {
  const WT = /** @type {any} */ (globalThis).WebTransport;
  if (typeof WT !== 'function') return unsupported(ctx.sink, 'unsupported: no WebTransport in this runtime');
  /** @type {any} */
  let session = null;
  let closed = false;
  const run = async () => {
    let doc;
    try {
      const res = await fetch(new URL('/wt/cert-hash', ctx.base), { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      doc = await res.json();
    } catch (e) {
      throw new Error(`certificate hash unavailable: ${errorText(e)}`);
    }
    const url = new URL(doc.url);
    // `url` names the address the gateway bound: loopback when it bound every interface.
    const loop = (/** @type {string} */ h) => h === 'localhost' || h === '[::1]' || h.startsWith('127.');
    if (loop(url.hostname) && !loop(ctx.base.hostname)) url.hostname = ctx.base.hostname;
    const params = { mode: 'stream', ...ctx.params(), topics: ctx.topics.join(','), since: ctx.since, token: await ctx.token() };
    for (const [k, v] of Object.entries(params)) if (v) url.searchParams.set(k, v);
    if (closed) return;
    session = new WT(url, doc.self_signed === false ? {} : {
      serverCertificateHashes: [{ algorithm: 'sha-256', value: new Uint8Array(doc.value) }],
    });
    session.closed.then(
      (/** @type {any} */ i) => ctx.sink.close(`session closed (${i?.closeCode ?? ''} ${i?.reason ?? ''})`),
      (/** @type {unknown} */ e) => ctx.sink.close(`session failed: ${errorText(e)}`),
    );
    await session.ready;
    const streams = session.incomingUnidirectionalStreams.getReader();
    const each = (/** @type {Uint8Array} */ b) => ctx.sink.message(parseMessage(b));
    const { value: control } = await streams.read();
    // The other modes (a `mode` in `params`): one more stream per event (`stream-per-event`),
    // or one envelope per datagram (`datagram`); events may then overtake one another.
    const more = async () => { for (let r; !(r = await streams.read()).done;) readFrames(r.value, each).catch(() => {}); };
    const datagrams = async () => { const d = session.datagrams.readable.getReader(); for (let r; !(r = await d.read()).done;) each(r.value); };
    more().catch(() => {});
    datagrams().catch(() => {});
    await readFrames(control, each);
    ctx.sink.close('the control stream ended');
  };
  run().catch((e) => ctx.sink.close(errorText(e)));
  return {
    close() {
      closed = true;
      try { session?.close({ closeCode: 0, reason: 'client closed' }); } catch { /* already closed */ }
    },
    // One bidirectional stream per publish; the reply comes on it.
    async publish(m) {
      const bidi = await session.createBidirectionalStream();
      const writer = bidi.writable.getWriter();
      await writer.write(frame(m));
      /** @type {Promise<Message>} */
      const reply = new Promise((resolve, reject) => {
        readFrames(bidi.readable, (b) => resolve(parseMessage(b))).then(() => reject(new Error('no reply to the publish')), reject);
      });
      try {
        return await reply;
      } finally {
        writer.close().catch(() => {});
      }
    },
  };
}

/**
 * WebSocket (§7): /ws?topics=&since=, confirmed by the `subscribed` message. A close before the
 * socket opened is how a browser reports a refused upgrade (a proxy that strips `Upgrade`, an
 * origin the gateway refuses, a 4xx): the status is not visible.
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
function websocket(ctx) {
  const WS = globalThis.WebSocket;
  if (typeof WS !== 'function') return unsupported(ctx.sink, 'unsupported: no WebSocket in this runtime');
  /** @type {WebSocket | null} */
  let ws = null;
  let closed = false;
  let n = 0;
  /** @type {Map<string, [(m: Message) => void, (e: Error) => void]>} */
  const waiting = new Map();
  const drop = (/** @type {string} */ why) => {
    for (const [, [, reject]] of waiting) reject(new Error(why));
    waiting.clear();
  };
  ctx.token().then((token) => {
    if (closed) return;
    const url = endpoint(ctx, '/ws', { since: ctx.since, token });
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const s = (ws = new WS(url, ['streamgate.v1']));
    let isOpen = false;
    s.binaryType = 'arraybuffer';
    s.onopen = () => { isOpen = true; };
    s.onmessage = (e) => {
      const m = typeof e.data === 'string' ? parseEnvelope(e.data) : parseMessage(new Uint8Array(e.data));
      const w = m.ref && waiting.get(m.ref);
      if (w && (m.type === 'published' || m.type === 'error')) {
        waiting.delete(m.ref);
        w[0](m);
      } else ctx.sink.message(m);
    };
    s.onclose = (e) => {
      const why = isOpen
        ? `closed (code ${e.code}${e.reason ? `: ${e.reason}` : ''})`
        : `closed before opening (code ${e.code}): refused, or a proxy stripped Upgrade`;
      drop(why);
      ctx.sink.close(why);
    };
  }, (e) => ctx.sink.close(`no token: ${errorText(e)}`));
  return {
    close() {
      closed = true;
      drop('closed');
      if (ws) {
        ws.onclose = null;
        ws.close(1000);
      }
    },
    publish(m) {
      return new Promise((resolve, reject) => {
        if (!ws || ws.readyState !== 1) return reject(new Error('the WebSocket is not open'));
        const ref = `c-${++n}`;
        waiting.set(ref, [resolve, reject]);
        ws.send(JSON.stringify({ ...m, ref }));
      });
    },
  };
}

/**
 * Server-Sent Events over fetch with a streaming body, not EventSource: fetch sees the comment
 * lines (the stream's preamble and heartbeats, the liveness signal that tells a buffering proxy
 * apart), reports the HTTP status, can send `Authorization`, and works in Node. The parser is
 * the part of the SSE spec the gateway uses (`\n` line ends, `data:`, comments); a package
 * would do the same but this file must stand alone.
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
function sse(ctx) {
  const abort = new AbortController();
  const run = async () => {
    const res = await fetch(endpoint(ctx, '/sse', { since: ctx.since }), {
      headers: { accept: 'text/event-stream', ...(await authHeaders(ctx)) }, signal: abort.signal, cache: 'no-store',
    });
    if (!res.ok || !res.body) return ctx.sink.close(...(await httpError(res)));
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    /** @type {string[]} */
    let data = [];
    let id = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return ctx.sink.close('the stream ended');
      ctx.sink.open();
      ctx.sink.activity();
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).replace(/\r$/, '');
        buf = buf.slice(nl + 1);
        if (line === '') {
          if (data.length) ctx.sink.message(parseEnvelope(data.join('\n'), id || undefined));
          data = [];
          id = '';
        } else if (line.startsWith('data:')) data.push(line.slice(line[5] === ' ' ? 6 : 5));
        else if (line.startsWith('id:')) id = line.slice(3).trim();
      }
    }
  };
  run().catch((e) => ctx.sink.close(errorText(e)));
  return { close: () => abort.abort() };
}

/**
 * Long polling (§7): GET /poll with the cursor of the previous answer. The first poll asks for
 * `timeout=0` so the gateway answers at once and the transport is confirmed without a hold.
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
function poll(ctx) {
  let cursor = ctx.since;
  let stopped = false;
  /** @type {AbortController | null} */
  let abort = null;
  const run = async () => {
    for (let first = true; !stopped; first = false) {
      const hold = first ? 0 : ctx.timeouts.pollHold;
      abort = new AbortController();
      const a = abort;
      const timer = setTimeout(() => a.abort(), hold + ctx.timeouts.poll);
      try {
        const res = await fetch(endpoint(ctx, '/poll', { cursor, timeout: String(hold / 1000) }), {
          headers: await authHeaders(ctx), signal: a.signal, cache: 'no-store',
        });
        if (!res.ok) return ctx.sink.close(...(await httpError(res)));
        const text = await res.text();
        /** @type {{ cursor: string, messages: Message[] }} */
        let body;
        try {
          body = JSON.parse(text);
        } catch (e) {
          // One event that does not decode makes the whole answer unreadable: skip the batch
          // and go on from its cursor, written first.
          const next = /^\{"cursor":"([^"]+)"/.exec(text)?.[1];
          if (!next) throw new Error(`an answer that is not JSON (${errorText(e)})`);
          body = { cursor: next, messages: [{ type: 'undecodable', id: next, reason: errorText(e) }] };
        }
        if (stopped) return;
        ctx.sink.open();
        for (const m of body.messages) ctx.sink.message(m);
        if (body.cursor) ctx.sink.message({ type: 'cursor', id: body.cursor });
        cursor = body.cursor || cursor;
      } finally {
        clearTimeout(timer);
      }
    }
  };
  run().catch((e) => ctx.sink.close(errorText(e)));
  return {
    close() {
      stopped = true;
      abort?.abort();
    },
  };
}

/** The transport adapters by name (advanced: a test or a custom runtime may wrap them). */
export const ADAPTERS = { webtransport, websocket, sse, poll };

// ---------------------------------------------------------------------------------------------
// The subscription

/** @type {Clock} */
const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(/** @type {any} */ (h)),
  random: Math.random,
};

/**
 * @typedef {object} SubscribeOptions
 * @property {string[] | string} topics the topics, in one subscription (one id order across them)
 * @property {TransportName[]} [transports] order of preference; default DEFAULT_ORDER
 * @property {string | null} [since] resume after this id (the `lastId` of an earlier subscription)
 * @property {string | (() => string | undefined | Promise<string | undefined>)} [token] a JWT, or a
 *   function called before every connection (to hand out a fresh one)
 * @property {Partial<Timeouts>} [timeouts] see DEFAULT_TIMEOUTS
 * @property {Partial<BackoffOptions>} [backoff] see DEFAULT_BACKOFF
 * @property {Record<string, string> | (() => Record<string, string>)} [params] extra query
 *   parameters for every connection's URL (read again for each connection), e.g. WebSocket's
 *   `compression: 'off'` or WebTransport's `mode`
 * @property {Clock} [clock] advanced: time, for tests
 * @property {Connect} [connect] advanced: opens a transport, for tests
 */

/**
 * A live subscription: an EventTarget (`event`, `notice`, `transport`, `error`, `close`, each
 * a CustomEvent whose `detail` says what happened) and an async iterator of events.
 */
export class Subscription extends EventTarget {
  /**
   * @param {string | URL} gatewayUrl the gateway's HTTP(S) address, e.g. `http://127.0.0.1:8080`
   * @param {SubscribeOptions} options
   */
  constructor(gatewayUrl, options) {
    super();
    const base = new URL(gatewayUrl, /** @type {any} */ (globalThis).location?.href);
    const topics = typeof options.topics === 'string' ? options.topics.split(',') : [...options.topics];
    const t = options.token;
    const token = async () => (typeof t === 'function' ? t() : t);
    const p = options.params;
    const params = () => (typeof p === 'function' ? p() : p || {});
    this.base = base;
    this.token = token;
    this.closed = false;
    this.core = new Controller({
      order: options.transports,
      since: options.since,
      timeouts: options.timeouts,
      backoff: options.backoff,
      clock: options.clock || realClock,
      connect: options.connect || ((name, c) => ADAPTERS[name]({ ...c, base, topics, token, params, timeouts: this.core.timeouts })),
      emit: (type, detail) => {
        this.dispatchEvent(new CustomEvent(type, { detail }));
        if (type === 'error' && this.core.closed) this.close();
      },
    });
    this.core.start();
  }

  /** The transport events come from now, or null while (re)connecting. */
  get transport() {
    return this.core.transport;
  }

  /** The id of the last event delivered (or skipped as undecodable): where a resume starts. */
  get lastId() {
    return this.core.cursor.lastId;
  }

  /** Every connection attempt, oldest first. */
  get transportLog() {
    return this.core.log;
  }

  /**
   * Publishes one event: over the live WebSocket or WebTransport session if there is one, else
   * `POST /publish/{topic}`. Resolves with the gateway's answer (`id` is the event's id).
   * @param {string} topic
   * @param {unknown} data a JSON value; a string with `contentType: 'text'`; a Uint8Array is binary
   * @param {{ contentType?: 'json' | 'text' | 'binary' }} [o]
   * @returns {Promise<{ id: string }>}
   */
  async publish(topic, data, o = {}) {
    const type = o.contentType || (data instanceof Uint8Array ? 'binary' : 'json');
    const handle = this.core.active?.handle;
    if (handle?.publish) {
      const payload = type === 'binary' ? toBase64(/** @type {Uint8Array} */ (data)) : data;
      const reply = await handle.publish({ type: 'publish', topic, content_type: type, data: payload });
      if (reply.type !== 'published') throw new Error(`${reply.code}: ${reply.reason}`);
      return { id: reply.id };
    }
    const url = new URL(`/publish/${encodeURIComponent(topic)}`, this.base);
    url.searchParams.set('content_type', type);
    const token = await this.token();
    const res = await fetch(url, {
      method: 'POST',
      headers: token ? { authorization: `Bearer ${token}` } : {},
      body: type === 'json' ? JSON.stringify(data) : /** @type {BodyInit} */ (data),
    });
    if (!res.ok) throw new Error((await httpError(res))[0]);
    return res.json();
  }

  /** Stops everything: every connection, every timer; iterators end. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.core.close();
    this.dispatchEvent(new CustomEvent('close', { detail: null }));
  }

  /**
   * Events (the `detail` of each `event`) from the moment iteration starts, until close().
   * @returns {AsyncIterator<EventDetail>}
   */
  [Symbol.asyncIterator]() {
    /** @type {EventDetail[]} */
    const queue = [];
    /** @type {(() => void) | null} */
    let wake = null;
    const on = (/** @type {Event} */ e) => {
      if (e.type === 'event') queue.push(/** @type {CustomEvent} */ (e).detail);
      wake?.();
    };
    this.addEventListener('event', on);
    this.addEventListener('close', on);
    const stop = () => {
      this.removeEventListener('event', on);
      this.removeEventListener('close', on);
      return { done: /** @type {const} */ (true), value: undefined };
    };
    return {
      next: async () => {
        while (!queue.length) {
          if (this.closed) return stop();
          await new Promise((r) => { wake = () => r(undefined); });
          wake = null;
        }
        return { done: false, value: /** @type {EventDetail} */ (queue.shift()) };
      },
      return: async () => stop(),
    };
  }
}

/**
 * Subscribes to topics on a streamgate gateway, over the first transport that works.
 * @param {string | URL} gatewayUrl
 * @param {SubscribeOptions} options
 */
export function subscribe(gatewayUrl, options) {
  return new Subscription(gatewayUrl, options);
}
