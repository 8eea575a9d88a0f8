// streamgate lab: the page's script. Plain JavaScript, no framework, no build step.
//
// Four panels subscribe to the same topics over WebSocket, SSE, long polling and
// WebTransport, each with the streamgate client the gateway serves (GET /client/streamgate.js)
// pinned to one transport; each panel shows that subscription's transport log. The page asks the gateway for one tap per panel (POST /lab/api/taps: a
// random id that only this client may use), and each URL carries `lab=<tap id>`, which asks
// the gateway to record that connection's wire traffic; the inspector fetches those records,
// annotated, from /lab/api/taps/<tap id>. Everything else (latency, resume checks) is
// measured here.
import { subscribe } from '/client/streamgate.js';

const LATENCY_WINDOW = 100; // events in the sliding window of median, p99 and sparkline
const EVENTS_SHOWN = 8;
const INSPECTOR_KEEP = 200; // items kept per transport in the inspector
const RESUME_TIMEOUT_MS = 8000;
const DROP_DOWNTIME_MS = 600; // how long a dropped connection stays down before resuming
const REFRESH_MS = 1000;

const pageId = 'p' + Math.random().toString(36).slice(2, 8);

/** Microseconds since the Unix epoch, like the envelope's `ts`, with sub-millisecond precision. */
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `epoch:seq` → seq as a number (exact up to 2^53, far beyond any bus). */
function seqOf(id) {
  const at = typeof id === 'string' ? id.lastIndexOf(':') : -1;
  return at < 0 ? NaN : Number(id.slice(at + 1));
}

/** Creates an element: el('li', {class: 'x'}, 'text', child). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'text') node.textContent = value;
    else node.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function formatMs(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (ms < 10) return ms.toFixed(1) + ' ms';
  if (ms < 10000) return Math.round(ms) + ' ms';
  return (ms / 1000).toFixed(1) + ' s';
}

function formatBytes(n) {
  if (!Number.isFinite(n)) return '–';
  if (n < 1024) return Math.round(n) + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(1) + ' KiB';
  return (n / 1024 / 1024).toFixed(1) + ' MiB';
}

/** The value at quantile q of sorted numbers (nearest rank). */
function quantile(sorted, q) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

/** A short, readable digest of an event's data. */
function shortData(env) {
  const data = env.data;
  if (data && data.type === 'ris_message' && data.data) {
    const d = data.data;
    const announced = d.announcements?.[0]?.prefixes?.[0];
    const withdrawn = d.withdrawals?.[0];
    return `${d.host} ${d.peer} ${announced ? '+' + announced : withdrawn ? '−' + withdrawn : ''}`;
  }
  if (data && typeof data === 'object' && data.note) return `${data.note} #${data.n ?? ''}`;
  return typeof data === 'string' ? data : JSON.stringify(data);
}

// ---------------------------------------------------------------------------------------------
// Shared state

const lab = {
  config: null,
  topics: [],
  labTopic: 'lab',
  /** Events this page published on the lab topic: {id, at (ms when sent)}. */
  published: [],
  publishCount: 0,
  panels: {},
};

function notePublished(id, at) {
  lab.published.push({ id, at });
  if (lab.published.length > 500) lab.published.shift();
  const status = document.getElementById('published');
  status.textContent = `${lab.published.length} published on “${lab.labTopic}” · last ${id}`;
  for (const panel of Object.values(lab.panels)) panel.evaluateResume();
}

function labData(note) {
  lab.publishCount += 1;
  return { note, n: lab.publishCount, page: pageId, at: new Date().toISOString() };
}

/** POST /publish/lab: the plain HTTP way in. */
async function publishHttp(note = 'published from the lab') {
  const at = Date.now();
  try {
    const response = await fetch(`/publish/${lab.labTopic}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(labData(note)),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error?.reason ?? response.status);
    notePublished(body.id, at);
    return body.id;
  } catch (e) {
    document.getElementById('published').textContent = `Publish failed: ${e.message}`;
    return null;
  }
}

/** A `publish` message over the WebSocket panel's connection: a masked client frame. */
async function publishWs() {
  const client = lab.panels.ws?.client;
  if (client?.transport !== 'websocket') {
    document.getElementById('published').textContent = 'The WebSocket is not open right now.';
    return;
  }
  const at = Date.now();
  try {
    const { id } = await client.publish(lab.labTopic, labData('sent over WebSocket'));
    notePublished(id, at);
  } catch (e) {
    document.getElementById('published').textContent = `Publish over WebSocket failed: ${e.message}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Panels

class Panel {
  constructor(key, title, how) {
    this.key = key;
    this.title = title;
    /** Issued by the gateway (see `issueTap`); null while there is none. */
    this.tapId = null;
    const node = document.getElementById('panel-template').content.firstElementChild.cloneNode(true);
    node.id = `panel-${key}`;
    node.dataset.transport = key;
    const heading = node.querySelector('.panel-title');
    heading.id = `panel-${key}-title`;
    heading.textContent = title;
    node.setAttribute('aria-labelledby', heading.id);
    this.node = node;
    this.f = {};
    for (const field of node.querySelectorAll('[data-field]')) this.f[field.dataset.field] = field;
    this.f.how.textContent = how;
    this.f.spark.setAttribute('aria-label', `${title}: latency of the last ${LATENCY_WINDOW} events`);
    this.dropButton = node.querySelector('[data-action="drop"]');
    this.dropButton.addEventListener('click', () => this.drop());
    document.getElementById('panels').append(node);

    this.latencies = [];
    this.count = 0;
    this.shown = [];
    this.lastId = null;
    this.lastSeq = -1;
    this.seenLab = new Set();
    this.firstEventAt = null;
    this.opens = 0;
    this.connectedAt = 0;
    this.bytesBase = null;
    this.bytes = null;
    this.check = null;
    this.client = null;
    this.scheduled = false;
  }

  setState(text, kind = '') {
    this.f.state.textContent = text;
    this.f.state.className = `state ${kind}`;
  }

  /** A connection (or, for long polling, a poll loop) opened at `at` (ms). */
  onOpen(label = 'open', at = Date.now()) {
    this.opens += 1;
    this.connectedAt = at;
    this.setState(label, 'open');
    this.f.reconnects.textContent = String(Math.max(0, this.opens - 1));
  }

  /** The subscription's transport log (attempts, outcomes, reasons), newest first. */
  renderLog(entries, total) {
    this.f.tlog.replaceChildren(...entries.slice(-LOG_SHOWN).reverse().map(logLine));
    this.f.tlogCount.textContent = String(total);
  }

  /** An event: `{ id, topic, data, contentType, ts }` from the client. */
  onEvent(env) {
    const seq = seqOf(env.id);
    const replayed = env.ts / 1000 < this.connectedAt - 20;
    if (!replayed && Number.isFinite(env.ts)) {
      this.latencies.push((nowUs() - env.ts) / 1000);
      if (this.latencies.length > LATENCY_WINDOW) this.latencies.shift();
    }
    if (seq > this.lastSeq) {
      this.lastSeq = seq;
      this.lastId = env.id;
    }
    if (env.topic === lab.labTopic) this.seenLab.add(env.id);
    if (this.firstEventAt === null) this.firstEventAt = Date.now();
    this.count += 1;
    this.shown.unshift({ env, replayed });
    if (this.shown.length > EVENTS_SHOWN) this.shown.pop();
    if (env.topic === lab.labTopic) this.evaluateResume();
    this.schedule();
  }

  onNotice(notice) {
    this.shown.unshift({ notice });
    if (this.shown.length > EVENTS_SHOWN) this.shown.pop();
    if (this.check && this.check.state === 'pending' && notice.type === 'gap') {
      this.finishResume('bad', `Resumed, but the gateway reported a gap: ${notice.after} → ${notice.lost_through}`);
    }
    this.schedule();
  }

  /** Closes the connection, publishes one event while it is down, then resumes. */
  async drop() {
    if (!this.client || this.dropButton.disabled) return;
    // One drop at a time: a second one meanwhile would open a second connection.
    this.dropButton.disabled = true;
    const from = this.lastId;
    this.check = { state: 'pending', from, started: Date.now(), opens: this.opens };
    this.f.resume.className = 'resume pending';
    this.f.resume.textContent = `Dropped after ${from ?? 'nothing'}; publishing one event while down…`;
    this.client.close();
    this.setState('dropped', 'closed');
    await publishHttp(`published while ${this.title} was down`);
    await sleep(DROP_DOWNTIME_MS);
    this.f.resume.textContent = `Resuming from ${from ?? 'the live stream'}…`;
    this.client.connect(this.lastId);
    this.dropButton.disabled = false;
  }

  /** After a drop: done when reconnected and every event this page published has arrived. */
  evaluateResume() {
    const check = this.check;
    if (!check || check.state !== 'pending' || this.firstEventAt === null) return;
    const expected = lab.published.filter((p) => p.at >= this.firstEventAt);
    const missing = expected.filter((p) => !this.seenLab.has(p.id));
    const reconnected = this.opens > check.opens;
    if (reconnected && missing.length === 0 && expected.length > 0) {
      const ms = Date.now() - check.started;
      this.finishResume('ok', `✓ Resumed from ${check.from ?? 'live'} · 0 missing (${expected.length} of ${expected.length} lab events, ${formatMs(ms)})`);
    } else if (Date.now() - check.started > RESUME_TIMEOUT_MS) {
      this.finishResume('bad', `✗ Resumed from ${check.from ?? 'live'} · ${missing.length} missing: ${missing.map((p) => p.id).join(', ')}`);
    }
  }

  finishResume(state, text) {
    this.check.state = state;
    this.f.resume.className = `resume ${state}`;
    this.f.resume.textContent = text;
  }

  /** `&lab=<tap id>` for this panel's URLs, or nothing when it has no tap. */
  labParam() {
    return this.tapId ? `&lab=${encodeURIComponent(this.tapId)}` : '';
  }

  /** Byte counters of this panel's tap, from GET /lab/api/taps. */
  onTap(tap) {
    if (!this.bytesBase || tap.bytes_out < this.bytesBase.out) {
      this.bytesBase = { out: tap.bytes_out, in: tap.bytes_in, events: this.count };
    }
    const events = this.count - this.bytesBase.events;
    if (events >= 3) {
      this.bytes = {
        out: (tap.bytes_out - this.bytesBase.out) / events,
        in: (tap.bytes_in - this.bytesBase.in) / events,
      };
    }
    this.schedule();
  }

  /** Starts bytes/event afresh (after a change of compression or mode). */
  resetBytes() {
    this.bytesBase = null;
    this.bytes = null;
    this.schedule();
  }

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    requestAnimationFrame(() => {
      this.scheduled = false;
      this.render();
    });
  }

  render() {
    this.f.count.textContent = String(this.count);
    const sorted = [...this.latencies].sort((a, b) => a - b);
    const p50 = quantile(sorted, 0.5);
    const p99 = quantile(sorted, 0.99);
    this.f.p50.textContent = formatMs(p50);
    this.f.p99.textContent = formatMs(p99);
    if (this.bytes) {
      // What the gateway sent per event, and below it what the client sent (a long poll pays
      // a request head for every batch).
      this.f.bpe.replaceChildren(formatBytes(this.bytes.out), el('small', { text: `+${formatBytes(this.bytes.in)} in` }));
    }
    this.f.events.replaceChildren(
      ...this.shown.map((entry) => {
        if (entry.notice) {
          const n = entry.notice;
          return el('li', { class: 'notice' }, el('span', { class: 'id', text: n.type }), el('span', { class: 'topic', text: n.topic ?? '' }), el('span', { class: 'data', text: n.reason ?? n.lost_through ?? n.epoch ?? '' }));
        }
        const env = entry.env;
        return el(
          'li',
          { class: entry.replayed ? 'replayed' : '', title: entry.replayed ? 'replayed on resume' : undefined },
          el('span', { class: 'id', text: env.id }),
          el('span', { class: `topic ${env.topic === lab.labTopic ? 'lab' : ''}`, text: env.topic }),
          el('span', { class: 'data', text: shortData(env) }),
        );
      }),
    );
    drawSparkline(this.f.spark, this.latencies, p50, p99);
  }
}

/** Latency of the last events as a line, the median dashed, outliers clipped at the top. */
function drawSparkline(canvas, values, p50, p99) {
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 280;
  const height = canvas.clientHeight || 56;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext('2d');
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const style = getComputedStyle(canvas.closest('.panel'));
  const accent = style.getPropertyValue('--accent').trim() || '#2563eb';
  const muted = style.getPropertyValue('--muted').trim() || '#666';
  if (values.length < 2) return;
  const top = Math.max(p99 * 1.2, p50 * 2, 1);
  const y = (v) => height - 4 - (Math.min(v, top) / top) * (height - 14);
  const step = width / (LATENCY_WINDOW - 1);
  const x0 = width - (values.length - 1) * step;
  ctx.lineWidth = 1.5;
  ctx.strokeStyle = accent;
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x0 + i * step, y(v)) : ctx.moveTo(x0, y(v))));
  ctx.stroke();
  ctx.setLineDash([3, 3]);
  ctx.strokeStyle = muted;
  ctx.beginPath();
  ctx.moveTo(0, y(p50));
  ctx.lineTo(width, y(p50));
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.fillStyle = muted;
  ctx.font = '10px system-ui, sans-serif';
  ctx.textBaseline = 'top';
  ctx.fillText(`↑ ${formatMs(top)}`, 4, 2);
  const legend = '- - median';
  ctx.fillText(legend, width - ctx.measureText(legend).width - 4, 2);
}

// ---------------------------------------------------------------------------------------------
// The four transports, through the streamgate client (GET /client/streamgate.js): one
// subscription per panel, pinned to that panel's transport (`transports: [name]`), so the page
// carries no transport code of its own. The client resumes from its last id by itself after a
// drop it did not ask for; "Drop connection" closes the subscription and starts a new one
// `since` the panel's last id.

/** The client's name for each panel's transport. */
const CLIENT_NAMES = { ws: 'websocket', sse: 'sse', poll: 'poll', wt: 'webtransport' };
const LOG_SHOWN = 6; // transport-log lines shown per panel

class LabClient {
  constructor(panel) {
    this.panel = panel;
    /** @type {import('/client/streamgate.js').Subscription | null} */
    this.sub = null;
    /** Entries of the subscription's transport log already counted by countOpens. */
    this.scanned = 0;
    this.logsBefore = [];
    this.attemptsBefore = 0;
    this.compression = lab.config.ws_compression !== false;
    this.mode = 'stream';
  }

  /** Query parameters for each connection: this panel's tap, and its transport's settings. */
  params() {
    const params = {};
    if (this.panel.tapId) params.lab = this.panel.tapId;
    if (this.panel.key === 'ws' && !this.compression) params.compression = 'off';
    if (this.panel.key === 'wt') params.mode = this.mode;
    return params;
  }

  connect(since) {
    const panel = this.panel;
    panel.setState('connecting', 'waiting');
    const sub = subscribe(location.origin, {
      topics: lab.topics,
      transports: [CLIENT_NAMES[panel.key]],
      since,
      params: () => this.params(),
    });
    this.sub = sub;
    sub.addEventListener('event', (e) => {
      this.countOpens(); // first, so that connectedAt is this connection's
      panel.onEvent(e.detail);
    });
    sub.addEventListener('notice', (e) => panel.onNotice(e.detail));
    sub.addEventListener('error', (e) => panel.onNotice({ type: 'error', reason: `${e.detail.code}: ${e.detail.reason}` }));
    sub.addEventListener('transport', () => this.sync());
    this.scanned = 0;
  }

  /** Counts each connection of the subscription that opened (the first is not a reconnect). */
  countOpens() {
    const log = this.sub?.transportLog ?? [];
    while (this.scanned < log.length) {
      const entry = log[this.scanned];
      if (entry.openMs !== null) this.panel.onOpen(this.label(), entry.start + entry.openMs);
      else if (entry.outcome === 'connecting') break;
      this.scanned += 1;
    }
  }

  /** Catches the panel up with the subscription's transport log: opens, state, the log itself. */
  sync() {
    const sub = this.sub;
    if (!sub) return;
    this.countOpens();
    const log = sub.transportLog;
    const last = log.at(-1);
    if (last && last.outcome === 'connecting') this.panel.setState('connecting', 'waiting');
    else if (last && last.outcome === 'open') this.panel.setState(this.label(), 'open');
    else if (last) this.panel.setState(`${last.outcome}, retrying`, 'closed');
    this.panel.renderLog([...this.logsBefore, ...log], this.attemptsBefore + log.length);
  }

  label() {
    if (this.panel.key === 'wt') return `open · ${this.mode}`;
    if (this.panel.key === 'ws') return this.compression ? 'open · deflate asked' : 'open · no deflate';
    return this.panel.key === 'poll' ? 'polling' : 'open';
  }

  close() {
    const sub = this.sub;
    if (!sub) return;
    this.sync();
    this.logsBefore = [...this.logsBefore, ...sub.transportLog].slice(-LOG_SHOWN);
    this.attemptsBefore += sub.transportLog.length;
    this.sub = null;
    sub.close();
  }

  /** Publishes over this panel's live connection (WebSocket, WebTransport) or POST /publish. */
  publish(topic, data) {
    if (!this.sub) throw new Error('not connected');
    return this.sub.publish(topic, data);
  }

  get transport() {
    return this.sub?.transport ?? null;
  }

  controls(box) {
    if (this.panel.key === 'ws') {
      const input = el('input', { type: 'checkbox', id: 'ws-compression' });
      input.checked = this.compression;
      input.disabled = lab.config.ws_compression === false;
      input.addEventListener('change', () => {
        this.compression = input.checked;
        this.restart();
      });
      box.append(el('label', { for: 'ws-compression' }, input, 'permessage-deflate'));
    } else if (this.panel.key === 'wt') {
      const select = el(
        'select',
        { id: 'wt-mode' },
        ...['stream', 'stream-per-event', 'datagram'].map((mode) => el('option', { value: mode, text: mode })),
      );
      select.addEventListener('change', () => {
        this.mode = select.value;
        this.restart();
      });
      box.append(el('label', { for: 'wt-mode' }, 'mode', select));
    }
  }

  /** A new connection with other settings, from the last id. */
  restart() {
    this.panel.resetBytes();
    this.close();
    this.connect(this.panel.lastId);
  }
}

/** One transport-log line: when, what, and how it went. */
function logLine(entry) {
  const when = new Date(entry.start).toTimeString().slice(0, 8);
  const parts = [];
  if (entry.openMs !== null) parts.push(`open in ${formatMs(entry.openMs)}`);
  if (entry.firstEventMs !== null) parts.push(`first event ${formatMs(entry.firstEventMs)}`);
  if (entry.endMs !== null) parts.push(`${entry.outcome} after ${formatMs(entry.endMs)}${entry.reason ? `: ${entry.reason}` : ''}`);
  else if (entry.outcome === 'connecting') parts.push('connecting…');
  return el(
    'li',
    { class: `tlog-${entry.outcome}` },
    el('span', { class: 't', text: when }),
    el('span', { class: 'what', text: `${entry.transport}${entry.role === 'probe' ? ' (probe)' : ''}` }),
    el('span', { class: 'how', text: parts.join(' · ') }),
  );
}

// ---------------------------------------------------------------------------------------------
// Byte counters from the taps

/**
 * A tap for `panel`, issued by the gateway: 128 random bits that only this client may use
 * (the gateway binds it to our address). Without one (the lab is full, or this client holds
 * its share) the panel still works, untapped.
 */
async function issueTap(panel) {
  try {
    const response = await fetch('/lab/api/taps', { method: 'POST', cache: 'no-store' });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error?.reason ?? response.status);
    panel.tapId = body.id;
  } catch (e) {
    panel.tapId = null;
    panel.tapProblem = `No tap for this panel: ${e.message}`;
  }
}

/** Our own taps' counters: the gateway lists only the taps we name. */
async function refreshTaps() {
  const panels = Object.values(lab.panels).filter((p) => p.tapId);
  if (!panels.length) return;
  try {
    const ids = panels.map((p) => p.tapId).join(',');
    const response = await fetch(`/lab/api/taps?ids=${ids}`, { cache: 'no-store' });
    if (!response.ok) return;
    const body = await response.json();
    for (const tap of body.taps) {
      const panel = panels.find((p) => p.tapId === tap.id);
      panel?.onTap(tap);
    }
    // A tap the gateway no longer has (it restarted, or reclaimed it): ask for a new one,
    // which the panel's next connection uses.
    for (const id of body.missing ?? []) {
      const panel = panels.find((p) => p.tapId === id);
      if (panel) {
        await issueTap(panel);
        // A new tap counts its records from 1 again: start the inspector's copy afresh.
        delete inspector.stores[panel.key];
        if (inspector.selected === panel.key) renderInspector(true);
      }
    }
  } catch {
    /* the gateway is restarting; try again next time */
  }
}

/** Gives the page's taps back when it goes away, so a reload does not hold twice as many. */
function releaseTaps() {
  for (const panel of Object.values(lab.panels)) {
    if (panel.tapId) {
      fetch(`/lab/api/taps/${panel.tapId}`, { method: 'DELETE', keepalive: true }).catch(() => {});
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The wire inspector

const ABOUT = {
  ws: 'The upgrade is an ordinary HTTP/1.1 request; the 101 answer proves the server speaks WebSocket by hashing the client’s key with a fixed GUID. After it the same TCP connection carries frames: 2 to 14 header bytes, then the payload. The server’s frames are not masked; every client frame is, with a fresh 4-byte key. With permessage-deflate, RSV1 marks a compressed message.',
  sse: 'One long HTTP response that never ends: each event is a block of “field: value” lines closed by a blank line. Over HTTP/1.1 the body is chunked, each chunk prefixed by its size in hex. The id: line is what the browser sends back as Last-Event-ID when it reconnects.',
  poll: 'Every batch is a whole HTTP request and response: the headers are paid again for each poll, and an event published while no request is waiting waits for the next one. The cursor in each answer is where the next poll resumes.',
  wt: 'QUIC encrypts everything, so the gateway records what the WebTransport layer sees: the session’s extended CONNECT, the streams it opens (their ids say who opened them and which way they go), the length-prefixed messages it hands to each, and datagrams.',
};

const inspector = {
  selected: 'ws',
  stores: {},
  paused: false,
  busy: false,
};

function inspectorStore(key) {
  if (!inspector.stores[key]) {
    inspector.stores[key] = { items: new Map(), nodes: new Map(), nextAfter: 0, opening: [], asking: null, clock: null };
  }
  return inspector.stores[key];
}

function selectTab(key, focus = false) {
  inspector.selected = key;
  for (const tab of document.querySelectorAll('#inspector-tabs [role="tab"]')) {
    const selected = tab.dataset.transport === key;
    tab.setAttribute('aria-selected', String(selected));
    tab.tabIndex = selected ? 0 : -1;
    if (selected && focus) tab.focus();
  }
  document.getElementById('inspector-panel').setAttribute('aria-labelledby', `tab-${key}`);
  document.getElementById('inspector-about').textContent = ABOUT[key];
  renderInspector(true);
  refreshInspector();
}

function setPaused(paused, why = '') {
  inspector.paused = paused;
  const button = document.getElementById('inspector-pause');
  button.setAttribute('aria-pressed', String(paused));
  button.textContent = paused ? 'Resume' : 'Pause';
  const banner = document.getElementById('inspector-paused');
  banner.hidden = !paused;
  banner.replaceChildren(`Paused${why}: new traffic is not shown until you resume.`);
  if (paused) {
    const resume = el('button', { type: 'button', text: 'Resume' });
    resume.addEventListener('click', () => setPaused(false));
    banner.append(resume);
  } else {
    refreshInspector();
  }
}

async function refreshInspector() {
  if (inspector.paused || inspector.busy) return;
  const key = inspector.selected;
  const panel = lab.panels[key];
  if (!panel) return;
  const store = inspectorStore(key);
  if (!panel.tapId) {
    document.getElementById('inspector-tap').textContent = panel.tapProblem ?? 'This panel has no tap.';
    return;
  }
  if (panel.opens === 0) {
    document.getElementById('inspector-tap').textContent = `Nothing recorded yet for tap ${panel.tapId}.`;
    return;
  }
  inspector.busy = true;
  try {
    const response = await fetch(`/lab/api/taps/${panel.tapId}?after=${store.nextAfter}`, { cache: 'no-store' });
    const body = await response.json();
    if (response.status === 404) {
      document.getElementById('inspector-tap').textContent = `The gateway no longer has tap ${panel.tapId}: asking for a new one.`;
      return;
    }
    if (!response.ok) throw new Error(body.error?.reason ?? response.status);
    // Lab clock (µs) → wall clock (ms), to show when each item happened.
    store.clock = Date.now() - body.now_us / 1000;
    store.nextAfter = body.next_after;
    const tap = body.tap;
    document.getElementById('inspector-tap').textContent =
      `tap ${tap.id} · ${tap.transport ?? 'no connection yet'} · peer ${tap.peer ?? '–'} · ${tap.connections} connection${tap.connections === 1 ? '' : 's'} (${tap.live} live) · ` +
      `${tap.records} records kept, ${tap.evicted} dropped by the ring, ${tap.truncated} cut · ${formatBytes(tap.bytes_out)} out, ${formatBytes(tap.bytes_in)} in`;
    for (const item of body.items) {
      store.items.delete(item.key); // re-sent items move to their place in time
      store.items.set(item.key, item);
      // The opening shown is the latest complete exchange: a request (or CONNECT) and its
      // answer. A long poll still waiting keeps the previous one on show.
      if (isOpening(item)) {
        if (item.direction === 'in') store.asking = item;
        else if (store.asking && store.asking.conn === item.conn) store.opening = [store.asking, item];
        else store.opening = [item];
      }
    }
    while (store.items.size > INSPECTOR_KEEP) store.items.delete(store.items.keys().next().value);
    if (key === inspector.selected) renderInspector(false);
  } catch {
    /* try again at the next refresh */
  } finally {
    inspector.busy = false;
  }
}

function isOpening(item) {
  if (item.kind === 'http-head') return true;
  return item.kind === 'wt-session' && (item.title.startsWith('CONNECT') || item.title.startsWith('session accepted'));
}

/** Draws the opening, and adds new traffic items on top (existing nodes stay, open or not). */
function renderInspector(full) {
  const key = inspector.selected;
  const store = inspectorStore(key);
  const list = document.getElementById('inspector-items');
  if (full) {
    list.replaceChildren();
    store.nodes = new Map();
  }
  document.getElementById('inspector-opening').replaceChildren(...store.opening.map((item) => itemNode(item, store)));
  for (const [k, node] of store.nodes) {
    if (!store.items.has(k)) {
      node.remove();
      store.nodes.delete(k);
    }
  }
  for (const item of store.items.values()) {
    const old = store.nodes.get(item.key);
    if (old && old.dataset.size === String(item.size)) continue;
    const node = itemNode(item, store);
    if (old) old.replaceWith(node);
    else list.prepend(node);
    store.nodes.set(item.key, node);
  }
}

function timeOf(item, store) {
  const wall = new Date((store.clock ?? Date.now()) + item.t_us / 1000);
  return wall.toTimeString().slice(0, 8) + '.' + String(wall.getMilliseconds()).padStart(3, '0');
}

function hasViolation(notes) {
  return notes.some((n) => n.label === 'violation' || hasViolation(n.children));
}

function itemNode(item, store) {
  const bytes = Uint8Array.from(atob(item.data), (c) => c.charCodeAt(0));
  const out = item.direction === 'out';
  const size = item.kept < item.size ? `${formatBytes(item.size)} (${item.kept} kept)` : formatBytes(item.size);
  const summary = el(
    'summary',
    {},
    el('span', { class: 't', text: timeOf(item, store) }),
    el('span', { class: `dir ${item.direction}`, title: out ? 'gateway → client' : 'client → gateway', text: out ? '→' : '←' }),
    el('span', { class: 'kind', text: item.kind }),
    el('span', { class: 'title' }, hasViolation(item.notes) ? el('span', { class: 'violation-flag', text: '⚠ ' }) : null, item.title),
    el('span', { class: 'size', text: size }),
  );
  summary.prepend(el('span', { class: 'visually-hidden', text: out ? 'gateway to client: ' : 'client to gateway: ' }));
  const hex = el('pre', { class: 'hex', 'aria-label': 'bytes in hex' });
  const body = el('div', { class: 'body' }, el('p', { class: 'captured', text: item.captured }), notesNode(item.notes), hex);
  const details = el('details', {}, summary, body);
  details.addEventListener('toggle', () => {
    if (!details.open) return;
    if (!hex.childElementCount) renderHex(hex, bytes);
    if (!inspector.paused && details.closest('#inspector-items')) setPaused(true, ' while you read');
  });
  body.addEventListener('mouseover', (e) => highlight(e, hex, true));
  body.addEventListener('mouseout', (e) => highlight(e, hex, false));
  body.addEventListener('focusin', (e) => highlight(e, hex, true));
  body.addEventListener('focusout', (e) => highlight(e, hex, false));
  const node = el('li', { class: `item ${item.direction}`, 'data-key': item.key, 'data-size': String(item.size) }, details);
  return node;
}

function notesNode(notes) {
  return el(
    'ul',
    { class: 'notes' },
    ...notes.map((note) => {
      const range = note.bytes ? `${note.bytes[0]},${note.bytes[1]}` : undefined;
      const violation = note.label === 'violation';
      return el(
        'li',
        {},
        el(
          'span',
          { class: `note${range ? ' has-bytes' : ''}${violation ? ' violation' : ''}`, 'data-range': range, tabindex: range ? '0' : undefined },
          el('span', { class: 'label', text: note.label }),
          el('span', { class: 'value', text: note.value }),
          note.explain ? el('span', { class: 'explain', text: note.explain }) : null,
        ),
        note.children.length ? notesNode(note.children) : null,
      );
    }),
  );
}

const HEX_SHOWN = 1024;

/** A classic hex dump, 16 bytes a row, each byte a span so that notes can light it up. */
function renderHex(pre, bytes) {
  const rows = [];
  const shown = Math.min(bytes.length, HEX_SHOWN);
  for (let row = 0; row < shown; row += 16) {
    const hexPart = el('span', { class: 'bytes' });
    const textPart = el('span', { class: 'ascii' });
    for (let i = row; i < row + 16; i++) {
      if (i < shown) {
        const b = bytes[i];
        hexPart.append(el('span', { 'data-i': String(i), text: b.toString(16).padStart(2, '0') }), i % 16 === 7 ? '  ' : ' ');
        textPart.append(el('span', { 'data-i': String(i), text: b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '·' }));
      } else {
        hexPart.append(i % 16 === 7 ? '    ' : '   ');
      }
    }
    rows.push(el('div', { class: 'row' }, el('span', { class: 'off', text: row.toString(16).padStart(4, '0') }), hexPart, textPart));
  }
  if (bytes.length > shown) rows.push(el('div', { class: 'more', text: `… ${bytes.length - shown} more bytes` }));
  pre.replaceChildren(...rows);
}

function highlight(event, hex, on) {
  const note = event.target.closest?.('.note[data-range]');
  if (!note) return;
  note.classList.toggle('hot', on);
  const [start, end] = note.dataset.range.split(',').map(Number);
  for (const span of hex.querySelectorAll('[data-i]')) {
    const i = Number(span.dataset.i);
    if (i >= start && i < end) span.classList.toggle('hot', on);
  }
}

// ---------------------------------------------------------------------------------------------
// Start

const TRANSPORTS = [
  ['ws', 'WebSocket', 'subscribe(…, {transports: ["websocket"]}): a WebSocket; resumes with ?since=<last id>.'],
  ['sse', 'Server-Sent Events', 'subscribe(…, {transports: ["sse"]}): an event stream read with fetch(); resumes with ?since=<last id>.'],
  ['poll', 'Long polling', 'subscribe(…, {transports: ["poll"]}): fetch() in a loop; each poll sends cursor=<last id>.'],
  ['wt', 'WebTransport', 'subscribe(…, {transports: ["webtransport"]}): HTTP/3 over QUIC (UDP); resumes with ?since=<last id>. Bytes as handed to QUIC.'],
];

async function start() {
  try {
    lab.config = await (await fetch('/lab/api/config', { cache: 'no-store' })).json();
  } catch (e) {
    document.getElementById('published').textContent = `Cannot load /lab/api/config: ${e.message}`;
    return;
  }
  lab.labTopic = lab.config.lab_topic;
  lab.topics = [lab.config.demo_topic, lab.config.lab_topic];
  document.getElementById('topics').textContent = lab.topics.join(', ');
  const available = {
    ws: lab.config.transports.ws,
    sse: lab.config.transports.sse,
    poll: lab.config.transports.longpoll,
    wt: lab.config.transports.webtransport && typeof WebTransport === 'function',
  };
  const tabs = document.getElementById('inspector-tabs');
  const starting = [];
  for (const [key, title, how] of TRANSPORTS) {
    const panel = new Panel(key, title, how);
    lab.panels[key] = panel;
    const tab = el('button', { type: 'button', role: 'tab', id: `tab-${key}`, 'data-transport': key, 'aria-controls': 'inspector-panel', text: title });
    tab.addEventListener('click', () => selectTab(key));
    tabs.append(tab);
    if (!available[key]) {
      panel.setState('not available', 'closed');
      panel.dropButton.disabled = true;
      continue;
    }
    panel.client = new LabClient(panel);
    panel.client.controls(panel.f.controls);
    starting.push(issueTap(panel).then(() => panel.client.connect(null)));
  }
  await Promise.all(starting);
  addEventListener('pagehide', releaseTaps);
  tabs.addEventListener('keydown', (e) => {
    const keys = TRANSPORTS.map((t) => t[0]);
    const at = keys.indexOf(inspector.selected);
    if (e.key === 'ArrowRight') selectTab(keys[(at + 1) % keys.length], true);
    else if (e.key === 'ArrowLeft') selectTab(keys[(at + keys.length - 1) % keys.length], true);
    else return;
    e.preventDefault();
  });
  document.getElementById('publish-http').addEventListener('click', () => publishHttp());
  document.getElementById('publish-ws').addEventListener('click', publishWs);
  document.getElementById('inspector-pause').addEventListener('click', () => setPaused(!inspector.paused));
  document.getElementById('inspector-clear').addEventListener('click', () => {
    const store = inspectorStore(inspector.selected);
    store.items.clear();
    renderInspector(true);
  });
  selectTab('ws');
  setInterval(refreshInspector, REFRESH_MS);
  setInterval(refreshTaps, REFRESH_MS);
  setInterval(() => {
    for (const panel of Object.values(lab.panels)) {
      panel.client?.sync();
      panel.evaluateResume();
    }
  }, 500);
}

// For tests and the curious (devtools): the page's state.
window.streamgateLab = { lab, inspector };

start();
