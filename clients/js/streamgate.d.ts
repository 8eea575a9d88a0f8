export type TransportName = 'webtransport' | 'websocket' | 'sse' | 'poll';
export type Message = {
    type: string;
    [key: string]: any;
};
export type EventDetail = {
    id: string;
    topic: string;
    data: unknown;
    contentType: string;
    ts?: number;
};
export type TransportDetail = {
    from: string | null;
    to: string | null;
    reason: string;
};
export type LogEntry = {
    transport: string;
    role: 'connect' | 'probe';
    start: number;
    outcome: string;
    reason: string;
    openMs: number | null;
    firstEventMs: number | null;
    endMs: number | null;
};
export type Timeouts = {
    webtransport: number;
    websocket: number;
    sse: number;
    poll: number;
    sseIdle: number;
    pollHold: number;
    catchUp: number;
    stable: number;
};
export type BackoffOptions = {
    base: number;
    max: number;
    jitter: number;
};
export type Clock = {
    now(): number;
    setTimeout(fn: () => void, ms: number): unknown;
    clearTimeout(handle: unknown): void;
    random(): number;
};
export type CloseFlags = {
    permanent?: boolean;
    fatal?: boolean;
    code?: string;
};
export type Sink = {
    open(): void;
    message(m: Message): void;
    activity(): void;
    close(reason: string, flags?: CloseFlags): void;
};
export type TransportHandle = {
    close(): void;
    publish?(m: object): Promise<Message>;
};
export type Connect = (name: TransportName, ctx: {
    since: string | null;
    sink: Sink;
}) => TransportHandle;
export type AdapterContext = {
    base: URL;
    topics: string[];
    since: string | null;
    sink: Sink;
    timeouts: Timeouts;
    token: () => Promise<string | undefined>;
    params: () => Record<string, string>;
};
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
export declare const DEFAULT_ORDER: TransportName[];
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
export declare const DEFAULT_TIMEOUTS: Timeouts;
/** Exponential backoff: `base` doubling up to `max`, ± `jitter` (a fraction). @type {BackoffOptions} */
export declare const DEFAULT_BACKOFF: BackoffOptions;
/**
 * `<epoch>:<seq>` (§2), or null when malformed.
 * @param {string | null | undefined} id
 * @returns {{ epoch: string, seq: number } | null}
 */
export declare function parseId(id: string | null | undefined): {
    epoch: string;
    seq: number;
} | null;
/**
 * Where the subscription is: the last delivered id, and which notices were already surfaced.
 * Every transport's messages go through one Cursor, so overlapping transports (during a
 * switch) deliver each id once and in order: an event is delivered only when its seq is above
 * the last one of the same epoch. That is lossless because each transport delivers a complete
 * suffix of the same ordered stream from a `since` no later than the cursor.
 */
export declare class Cursor {
    /** @type {string | null} */
    lastId: string | null;
    epoch: string;
    seq: number;
    unavailable: boolean;
    /** @type {Set<string>} */
    seen: Set<string>;
    /** @param {string | null} [since] */
    constructor(since?: string | null);
    /** @param {string} id */
    set(id: string): void;
    /**
     * Whether the event with this id is new; if so the cursor moves to it.
     * @param {string} id
     */
    event(id: string): boolean;
    /**
     * Whether a notice is news to the application. Overlapping transports each send their own
     * copy of a `gap` or `reset`; it is surfaced once.
     * @param {Message} m
     */
    notice(m: Message): boolean;
    /** @param {string} key */
    once(key: string): boolean;
}
/**
 * The n-th retry delay (n from 0): `base·2ⁿ` capped at `max`, times a random factor in
 * [1 − jitter, 1 + jitter] so clients dropped together do not all come back at once.
 * @param {number} n
 * @param {BackoffOptions} [o]
 * @param {() => number} [random]
 */
export declare function backoff(n: number, o?: BackoffOptions, random?: () => number): number;
export type Attempt = {
    name: TransportName;
    role: 'connect' | 'probe';
    since: string | null;
    open: boolean;
    done: boolean;
    openedAt: number;
    top: string | null;
    entry: LogEntry;
    handle: TransportHandle | null;
    timers: unknown[];
    idle: unknown;
};
/**
 * The subscription's logic without any I/O: which transport to try, when to give up on it,
 * when to probe a better one and when to switch back, and what to deliver. Time comes from
 * `clock` and connections from `connect`, so tests drive it with fakes (advanced API).
 */
export declare class Controller {
    order: TransportName[];
    /** @type {Timeouts} */
    timeouts: Timeouts;
    /** @type {BackoffOptions} */
    backoff: BackoffOptions;
    clock: Clock;
    connect: Connect;
    emit: (type: string, detail: any) => void;
    cursor: Cursor;
    /** @type {Attempt | null} the transport events come from */
    active: Attempt | null;
    /** @type {Attempt | null} a foreground attempt, while there is no active transport */
    pending: Attempt | null;
    /** @type {Attempt | null} a background attempt at a better transport */
    probe: Attempt | null;
    /** @type {string | null} the transport last announced in a `transport` event */
    current: string | null;
    /** @type {LogEntry[]} */
    log: LogEntry[];
    /** @type {Record<string, number>} consecutive failures per transport */
    fails: Record<string, number>;
    /** @type {Record<string, number>} earliest clock time to probe each transport again */
    retryAt: Record<string, number>;
    /** @type {Set<string>} transports this runtime cannot use at all */
    off: Set<string>;
    /** @type {string[]} why the transports before the one being tried failed */
    reasons: string[];
    rounds: number;
    quick: number;
    /** @type {unknown} */
    retryTimer: unknown;
    /** @type {unknown} */
    probeTimer: unknown;
    closed: boolean;
    /**
     * @param {{ order?: TransportName[], since?: string | null, timeouts?: Partial<Timeouts>,
     *   backoff?: Partial<BackoffOptions>, clock: Clock, connect: Connect,
     *   emit: (type: string, detail: any) => void }} o
     */
    constructor(o: {
        order?: TransportName[];
        since?: string | null;
        timeouts?: Partial<Timeouts>;
        backoff?: Partial<BackoffOptions>;
        clock: Clock;
        connect: Connect;
        emit: (type: string, detail: any) => void;
    });
    start(): void;
    /** @returns {TransportName | null} */
    get transport(): TransportName | null;
    /**
     * @param {TransportName} name
     * @param {'connect' | 'probe'} role
     */
    attempt(name: TransportName, role: 'connect' | 'probe'): void;
    /** @param {number} from index in `order` of the first transport to try */
    chain(from: number): void;
    /** @param {Attempt} a */
    opened(a: Attempt): void;
    /**
     * @param {Attempt} a
     * @param {Message} m
     */
    message(a: Attempt, m: Message): void;
    /** @param {Attempt} a */
    alive(a: Attempt): void;
    /**
     * @param {Attempt} a
     * @param {string} reason
     */
    fail(a: Attempt, reason: string): void;
    /**
     * @param {Attempt} a
     * @param {string} outcome
     * @param {string} reason
     */
    finish(a: Attempt, outcome: string, reason: string): boolean;
    /**
     * The adapter reports the end of a connection (or fail() does for it).
     * @param {Attempt} a
     * @param {string} reason
     * @param {CloseFlags} [flags]
     */
    ended(a: Attempt, reason: string, flags?: CloseFlags): void;
    /**
     * Makes `a` the transport events come from, and closes the one it replaces.
     * @param {Attempt} a
     * @param {string} reason
     */
    promote(a: Attempt, reason: string): void;
    /** Plans the next background attempt at a better transport than the active one. */
    schedule(): void;
    /**
     * A probe takes over once it delivered the event the cursor is at (or nothing was delivered
     * since it subscribed): from then on it carries everything the active one would.
     * @param {Attempt} a
     */
    caughtUp(a: Attempt): void;
    close(): void;
}
/**
 * A JSON envelope; one that does not parse becomes `undecodable` with the id read from its
 * head (the gateway writes type, topic and id first, none of which can hold a quote).
 * @param {string} text
 * @param {string} [knownId]
 * @returns {Message}
 */
export declare function parseEnvelope(text: string, knownId?: string): Message;
/**
 * The binary event envelope of §3.3 (WebSocket binary frames, WebTransport messages that start
 * with byte 1), or a JSON one (first byte `{`).
 * @param {Uint8Array} b
 * @returns {Message}
 */
export declare function parseMessage(b: Uint8Array): Message;
/**
 * WebTransport (§7): GET /wt/cert-hash for the session URL and the certificate's hash, then a
 * session in `stream` mode (events and notices in order on the control stream).
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
declare function webtransport(ctx: AdapterContext): TransportHandle;
/**
 * WebSocket (§7): /ws?topics=&since=, confirmed by the `subscribed` message. A close before the
 * socket opened is how a browser reports a refused upgrade (a proxy that strips `Upgrade`, an
 * origin the gateway refuses, a 4xx): the status is not visible.
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
declare function websocket(ctx: AdapterContext): TransportHandle;
/**
 * Server-Sent Events over fetch with a streaming body, not EventSource: fetch sees the comment
 * lines (the stream's preamble and heartbeats, the liveness signal that tells a buffering proxy
 * apart), reports the HTTP status, can send `Authorization`, and works in Node. The parser is
 * the part of the SSE spec the gateway uses (`\n` line ends, `data:`, comments); a package
 * would do the same but this file must stand alone.
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
declare function sse(ctx: AdapterContext): TransportHandle;
/**
 * Long polling (§7): GET /poll with the cursor of the previous answer. The first poll asks for
 * `timeout=0` so the gateway answers at once and the transport is confirmed without a hold.
 * @param {AdapterContext} ctx
 * @returns {TransportHandle}
 */
declare function poll(ctx: AdapterContext): TransportHandle;
/** The transport adapters by name (advanced: a test or a custom runtime may wrap them). */
export declare const ADAPTERS: {
    webtransport: typeof webtransport;
    websocket: typeof websocket;
    sse: typeof sse;
    poll: typeof poll;
};
export type SubscribeOptions = {
    /**
     * the topics, in one subscription (one id order across them)
     */
    topics: string[] | string;
    /**
     * order of preference; default DEFAULT_ORDER
     */
    transports?: TransportName[];
    /**
     * resume after this id (the `lastId` of an earlier subscription)
     */
    since?: string | null;
    /**
     * a JWT, or a
     * function called before every connection (to hand out a fresh one)
     */
    token?: string | (() => string | undefined | Promise<string | undefined>);
    /**
     * see DEFAULT_TIMEOUTS
     */
    timeouts?: Partial<Timeouts>;
    /**
     * see DEFAULT_BACKOFF
     */
    backoff?: Partial<BackoffOptions>;
    /**
     * extra query
     * parameters for every connection's URL (read again for each connection), e.g. WebSocket's
     * `compression: 'off'` or WebTransport's `mode`
     */
    params?: Record<string, string> | (() => Record<string, string>);
    /**
     * advanced: time, for tests
     */
    clock?: Clock;
    /**
     * advanced: opens a transport, for tests
     */
    connect?: Connect;
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
export declare class Subscription extends EventTarget {
    base: URL;
    token: () => Promise<string | undefined>;
    closed: boolean;
    core: Controller;
    /**
     * @param {string | URL} gatewayUrl the gateway's HTTP(S) address, e.g. `http://127.0.0.1:8080`
     * @param {SubscribeOptions} options
     */
    constructor(gatewayUrl: string | URL, options: SubscribeOptions);
    /** The transport events come from now, or null while (re)connecting. */
    get transport(): TransportName | null;
    /** The id of the last event delivered (or skipped as undecodable): where a resume starts. */
    get lastId(): string | null;
    /** Every connection attempt, oldest first. */
    get transportLog(): LogEntry[];
    /**
     * Publishes one event: over the live WebSocket or WebTransport session if there is one, else
     * `POST /publish/{topic}`. Resolves with the gateway's answer (`id` is the event's id).
     * @param {string} topic
     * @param {unknown} data a JSON value; a string with `contentType: 'text'`; a Uint8Array is binary
     * @param {{ contentType?: 'json' | 'text' | 'binary' }} [o]
     * @returns {Promise<{ id: string }>}
     */
    publish(topic: string, data: unknown, o?: {
        contentType?: 'json' | 'text' | 'binary';
    }): Promise<{
        id: string;
    }>;
    /** Stops everything: every connection, every timer; iterators end. */
    close(): void;
    /**
     * Events (the `detail` of each `event`) from the moment iteration starts, until close().
     * @returns {AsyncIterator<EventDetail>}
     */
    [Symbol.asyncIterator](): AsyncIterator<EventDetail>;
}
/**
 * Subscribes to topics on a streamgate gateway, over the first transport that works.
 * @param {string | URL} gatewayUrl
 * @param {SubscribeOptions} options
 */
export declare function subscribe(gatewayUrl: string | URL, options: SubscribeOptions): Subscription;
export {};
