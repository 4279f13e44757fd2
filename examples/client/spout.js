// Spout browser and Node client: one plain ES module, no build step, no
// dependencies. See README.md next to this file.
//
//   import { Spout } from './spout.js';
//   const s = new Spout('/events', { topics: ['notifications/alice'] });
//   s.on('message', (data, ev) => console.log(ev.id, data));

/** Frames the server sends besides events. They carry no id. */
const CONTROL = new Set(['connected', 'reset', 'shutdown', 'overflow', 'revoked', 'replaced']);

/** Longest `wait` the server accepts on `GET /poll`, in seconds. */
const MAX_POLL_WAIT = 30;

/**
 * Options of {@link Spout}. Every key but `topics` is optional.
 *
 * @typedef {object} SpoutOptions
 * @property {string[]} topics Topics or patterns to subscribe to (`orders/*`); at least one.
 * @property {Record<string, string | number | boolean | Array<string | number>>} [params]
 *   Extra query parameters sent on every request (e.g. `{ token }`; `EventSource` cannot
 *   send headers, so credentials go here). Read again on every (re)connect: mutate the
 *   object to refresh a token.
 * @property {number | string} [lastEventId] Resume point: only events with a higher id
 *   are delivered.
 * @property {'auto' | 'gzip' | null} [acceptEncoding='auto'] Ask the server for gzip
 *   envelopes. `'auto'` asks when `DecompressionStream` exists; `null` never asks.
 * @property {'auto' | 'eventsource' | 'fetch' | 'poll'} [transport='auto'] `'auto'` picks
 *   `EventSource` (browser, no custom headers), else a streaming `fetch`, else long polling,
 *   and falls back to long polling after `pollAfterFailures` consecutive failures.
 * @property {{ initial?: number, max?: number }} [backoff={ initial: 500, max: 30000 }]
 *   Reconnect delays in ms: `random(0, min(max, base * 2^attempt))` (full jitter). `base` is
 *   `initial`, or the server's `retry:` value once the fetch transport has seen one.
 * @property {number} [healthyAfter=5000] A connection open this long (or one that delivers
 *   an event) resets the attempt and failure counters.
 * @property {string} [pollUrl='/poll'] Long-poll endpoint, resolved against the stream URL.
 * @property {number} [pollWait=25] Seconds a long poll may wait on the server (0-30).
 * @property {number} [pollAfterFailures=5] With `transport: 'auto'`, switch to long polling
 *   after this many consecutive failed or short-lived connections.
 * @property {boolean} [withCredentials=false] Send cookies cross-origin
 *   (`EventSource` `withCredentials`, fetch `credentials: 'include'`).
 * @property {Record<string, string>} [headers] Extra request headers (fetch and poll
 *   transports; `'auto'` never picks `EventSource` when set).
 * @property {number} [dedupeWindow=1000] How many recent ids to remember for de-duplication.
 * @property {number} [idleTimeout=0] Fetch transport: reconnect when nothing (not even a
 *   heartbeat) arrived for this many ms. 0 = never. Set it above the server's heartbeat.
 * @property {typeof fetch} [fetch] The `fetch` to use (default: the global one).
 * @property {typeof EventSource} [EventSource] The `EventSource` class to use (default: the
 *   global one; pass a polyfill where there is none).
 */

/**
 * One delivered event.
 *
 * @typedef {object} SpoutEvent
 * @property {number | null} id The log id (null only for events without one).
 * @property {string} type The event type (`'message'` when the publisher gave none).
 * @property {string | undefined} topic The topic: known for batch items and polled events;
 *   plain SSE frames do not carry it.
 * @property {*} data The data, JSON-parsed when it parses, else the text.
 * @property {number | undefined} time Milliseconds since the epoch when the log accepted
 *   it (batch items and polled events).
 * @property {string | object} raw What the server sent: the SSE data text (after gzip
 *   decoding), or the batch item / polled event object.
 */

/**
 * A scheduled reconnect, as passed to {@link Spout#onRetry} listeners.
 *
 * @typedef {object} SpoutRetry
 * @property {'error' | 'http' | 'ended' | 'closed' | 'shutdown' | 'overflow' | 'idle' | 'fallback'} reason
 * @property {string} transport The transport that failed or ended.
 * @property {number} attempt Backoff exponent used (0 right after a healthy connection).
 * @property {number} cap `min(max, base * 2^attempt)`.
 * @property {number} delay The chosen delay in ms, `0 <= delay < cap`.
 * @property {number} failures Consecutive failures so far.
 * @property {number} [status] HTTP status, for `reason: 'http'`.
 * @property {string} [error] The error code or message (`error` JSON field for HTTP errors).
 * @property {string} [detail] The server's `detail`, for HTTP errors.
 */

/**
 * A Spout subscription: one logical stream of events that survives reconnects,
 * server restarts and transport changes, delivering every event once and in order.
 *
 * Status goes `'connecting'` -> `'open'` (a stream) or `'polling'` (long polling), back to
 * `'connecting'` while reconnecting, and `'closed'` after {@link Spout#close} or a
 * `revoked` / `replaced` frame, or when the server answers `204 No Content` (a banned
 * user: the SSE spec's way to say "do not reconnect") or `403` with `"error": "banned"`.
 *
 * @example
 * const s = new Spout('/events', { topics: ['notifications/alice'], params: { token } });
 * const off = s.on('message', (data, ev) => render(ev.id, data));
 * s.onStatus((status) => badge.textContent = status);
 */
export class Spout {
  #url;
  #opts;
  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map();
  #statusListeners = new Set();
  #retryListeners = new Set();
  #status = 'connecting';
  #closed = false;
  /** Set by revoked/replaced: never reconnect. */
  #final = false;
  /** Highest delivered id. */
  #lastId;
  /** Resume point: >= #lastId (the head at the first connect, poll's `next`). */
  #cursor;
  #seen = new Set();
  #seenOrder = [];
  #transport = null;
  /** Connection generation: callbacks of older connections are ignored. */
  #gen = 0;
  #healthyGen = -1;
  #abort = null;
  #es = null;
  #esHandler = null;
  #esTypes = new Set();
  #retryTimer = null;
  #healthyTimer = null;
  #sleepTimer = null;
  #attempt = 0;
  #failures = 0;
  #serverRetry;
  #gzip;
  #queue = Promise.resolve();

  /**
   * Opens the subscription right away.
   *
   * @param {string} url The stream route, e.g. `'/events'` (absolute in Node).
   * @param {SpoutOptions} options
   */
  constructor(url, options = {}) {
    const base = globalThis.location?.href;
    try {
      this.#url = new URL(url, base).href;
    } catch {
      throw new TypeError(`Spout: cannot resolve ${url}${base ? '' : ' (pass an absolute URL outside a browser)'}`);
    }
    const topics = options.topics;
    if (!Array.isArray(topics) || topics.length === 0 || !topics.every((t) => typeof t === 'string' && t)) {
      throw new TypeError('Spout: options.topics must be a non-empty array of topic strings');
    }
    const backoff = { initial: 500, max: 30000, ...(options.backoff || {}) };
    this.#opts = {
      params: {},
      acceptEncoding: 'auto',
      transport: 'auto',
      healthyAfter: 5000,
      pollUrl: '/poll',
      pollWait: 25,
      pollAfterFailures: 5,
      withCredentials: false,
      headers: {},
      dedupeWindow: 1000,
      idleTimeout: 0,
      ...options,
      topics: [...topics],
      backoff,
    };
    const o = this.#opts;
    if (!['auto', 'eventsource', 'fetch', 'poll'].includes(o.transport)) {
      throw new TypeError(`Spout: unknown transport ${o.transport}`);
    }
    if (o.transport === 'eventsource' && !this.#eventSourceClass()) {
      throw new TypeError("Spout: transport 'eventsource' needs EventSource (pass options.EventSource)");
    }
    o.pollWait = Math.max(0, Math.min(MAX_POLL_WAIT, Math.floor(Number(o.pollWait) || 0)));
    const canDecode = typeof globalThis.DecompressionStream === 'function';
    this.#gzip = canDecode && (o.acceptEncoding === 'auto' || o.acceptEncoding === 'gzip');
    if (o.lastEventId !== undefined && o.lastEventId !== null && o.lastEventId !== '') {
      const id = toId(o.lastEventId);
      if (id === null) throw new TypeError(`Spout: lastEventId ${o.lastEventId} is not a non-negative integer`);
      this.#lastId = id;
      this.#cursor = id;
    }
    this.#connect();
  }

  /** `'connecting' | 'open' | 'polling' | 'closed'`. */
  get status() {
    return this.#status;
  }

  /** Highest delivered event id (the resume point given in the options before any). */
  get lastEventId() {
    return this.#lastId;
  }

  /** The transport in use: `'eventsource' | 'fetch' | 'poll'`. */
  get transport() {
    return this.#transport;
  }

  /**
   * Listens to events of one type (`'message'` for untyped events), to every event with
   * `'*'` (after batch unwrapping, control frames excluded), or to a control frame:
   * `'connected' | 'reset' | 'shutdown' | 'overflow' | 'revoked' | 'replaced'`.
   *
   * @param {string} type
   * @param {(data: *, ev: SpoutEvent) => void} fn
   * @returns {() => void} Unsubscribes.
   */
  on(type, fn) {
    if (typeof fn !== 'function') throw new TypeError('Spout: on(type, fn) needs a function');
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    this.#listenOnEventSource(type);
    return () => {
      set.delete(fn);
      if (set.size === 0 && this.#listeners.get(type) === set) this.#listeners.delete(type);
    };
  }

  /**
   * Listens to status changes.
   *
   * @param {(status: string) => void} fn
   * @returns {() => void} Unsubscribes.
   */
  onStatus(fn) {
    this.#statusListeners.add(fn);
    return () => this.#statusListeners.delete(fn);
  }

  /**
   * Listens to scheduled reconnects (e.g. to show "reconnecting in 3 s" or to close on
   * a 401 and refresh a token).
   *
   * @param {(info: SpoutRetry) => void} fn
   * @returns {() => void} Unsubscribes.
   */
  onRetry(fn) {
    this.#retryListeners.add(fn);
    return () => this.#retryListeners.delete(fn);
  }

  /** Closes the stream for good; nothing is delivered afterwards. Idempotent. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#gen++;
    this.#teardown();
    clearTimeout(this.#retryTimer);
    clearTimeout(this.#sleepTimer);
    this.#setStatus('closed');
  }

  // ---------------------------------------------------------------- connecting

  #eventSourceClass() {
    return this.#opts.EventSource || globalThis.EventSource;
  }

  #fetch(input, init) {
    const f = this.#opts.fetch || globalThis.fetch;
    if (typeof f !== 'function') throw new TypeError('Spout: no fetch (pass options.fetch)');
    return f(input, init);
  }

  #canStream() {
    return (
      typeof (this.#opts.fetch || globalThis.fetch) === 'function' &&
      typeof globalThis.ReadableStream === 'function' &&
      typeof globalThis.TextDecoderStream === 'function'
    );
  }

  #chooseTransport() {
    const o = this.#opts;
    if (o.transport !== 'auto') return o.transport;
    if (this.#transport === 'poll' || this.#failures >= o.pollAfterFailures) return 'poll';
    if (this.#eventSourceClass() && Object.keys(o.headers || {}).length === 0) return 'eventsource';
    return this.#canStream() ? 'fetch' : 'poll';
  }

  #connect() {
    this.#retryTimer = null;
    if (this.#closed || this.#final) return;
    const gen = ++this.#gen;
    const transport = (this.#transport = this.#chooseTransport());
    this.#setStatus('connecting');
    if (transport === 'poll') this.#runPoll(gen);
    else if (transport === 'fetch') this.#runFetch(gen);
    else this.#runEventSource(gen);
  }

  #teardown() {
    clearTimeout(this.#healthyTimer);
    this.#healthyTimer = null;
    if (this.#abort) {
      try {
        this.#abort.abort();
      } catch {
        // already aborted
      }
      this.#abort = null;
    }
    if (this.#es) {
      this.#es.close();
      this.#es = null;
      this.#esHandler = null;
    }
  }

  /** The stream URL with topics, params, encoding and (EventSource only) the resume point. */
  #streamUrl(withResume) {
    const u = new URL(this.#url);
    this.#addQuery(u);
    if (this.#gzip) u.searchParams.set('accept-encoding', 'gzip');
    if (withResume && this.#cursor !== undefined) u.searchParams.set('lastEventId', String(this.#cursor));
    return u.href;
  }

  #addQuery(u) {
    for (const t of this.#opts.topics) u.searchParams.append('topic', t);
    for (const [k, v] of Object.entries(this.#opts.params || {})) {
      if (v === undefined || v === null) continue;
      if (Array.isArray(v)) for (const x of v) u.searchParams.append(k, String(x));
      else u.searchParams.set(k, String(v));
    }
  }

  #fetchInit(signal, accept) {
    const headers = { Accept: accept, ...(this.#opts.headers || {}) };
    return {
      headers,
      signal,
      cache: 'no-store',
      credentials: this.#opts.withCredentials ? 'include' : 'same-origin',
    };
  }

  /** A connection is up: status, and the healthy timer that resets the counters. */
  #opened(gen, status) {
    if (gen !== this.#gen) return;
    this.#setStatus(status);
    clearTimeout(this.#healthyTimer);
    this.#healthyTimer = setTimeout(() => this.#markHealthy(gen), this.#opts.healthyAfter);
  }

  #markHealthy(gen) {
    if (gen !== this.#gen || this.#healthyGen === gen) return;
    clearTimeout(this.#healthyTimer);
    this.#healthyTimer = null;
    this.#healthyGen = gen;
    this.#attempt = 0;
    this.#failures = 0;
  }

  /**
   * Ends connection `gen` and schedules the next one with backoff. `failure` counts
   * towards the poll fallback unless the connection had become healthy.
   */
  #retry(gen, info) {
    if (gen !== this.#gen || this.#closed || this.#final) return;
    const failure = info.failure && this.#healthyGen !== gen;
    delete info.failure;
    this.#teardown();
    this.#gen++;
    if (failure) this.#failures++;
    const { initial, max } = this.#opts.backoff;
    const base = this.#serverRetry ?? initial;
    const attempt = this.#attempt;
    const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
    const delay = Math.floor(Math.random() * cap);
    this.#attempt = attempt + 1;
    this.#setStatus('connecting');
    const event = { ...info, transport: this.#transport, attempt, cap, delay, failures: this.#failures };
    for (const fn of [...this.#retryListeners]) this.#call(fn, event);
    if (this.#closed || this.#final) return;
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  // ---------------------------------------------------------------- EventSource

  #runEventSource(gen) {
    const ES = this.#eventSourceClass();
    let es;
    try {
      es = new ES(this.#streamUrl(true), { withCredentials: !!this.#opts.withCredentials });
    } catch (e) {
      queueMicrotask(() => this.#retry(gen, { reason: 'error', failure: true, error: describe(e) }));
      return;
    }
    this.#es = es;
    this.#esHandler = (e) => {
      if (gen !== this.#gen) return;
      const type = e.type;
      this.#frame(gen, { type, data: e.data, id: CONTROL.has(type) ? null : e.lastEventId });
    };
    this.#esTypes = new Set();
    for (const type of ['message', 'batch', ...CONTROL, ...this.#listeners.keys()]) this.#listenOnEventSource(type);
    es.onopen = () => this.#opened(gen, 'open');
    es.onerror = () => {
      if (gen !== this.#gen) return;
      const closed = es.readyState === (ES.CLOSED ?? 2);
      if (closed) {
        // EventSource hides the status: ask once whether it was a 204 (stop).
        this.#probeClosed(gen);
        return;
      }
      // EventSource retries network errors itself; count them for the poll fallback.
      clearTimeout(this.#healthyTimer);
      if (this.#healthyGen !== gen) this.#failures++;
      this.#healthyGen = -1;
      this.#setStatus('connecting');
      const o = this.#opts;
      if (o.transport === 'auto' && this.#failures >= o.pollAfterFailures) {
        this.#retry(gen, { reason: 'fallback', failure: false });
      }
    };
  }

  async #probeClosed(gen) {
    let status;
    try {
      const ctrl = new AbortController();
      const res = await this.#fetch(this.#streamUrl(false), this.#fetchInit(ctrl.signal, 'text/event-stream'));
      status = res.status;
      ctrl.abort();
    } catch {
      // unreachable: retry as before
    }
    if (gen !== this.#gen) return;
    if (status === 204) this.#refused(gen, { status });
    else this.#retry(gen, { reason: 'closed', failure: true });
  }

  /**
   * The server refused this client for good (204 on a stream, `banned`): emit a
   * `revoked` control event and close, without reconnecting.
   */
  #refused(gen, info) {
    this.#frame(gen, {
      type: 'revoked',
      id: null,
      data: JSON.stringify({ reason: info.detail || 'the server refused the stream (do not reconnect)', status: info.status }),
    });
  }

  #listenOnEventSource(type) {
    if (!this.#es || type === '*' || this.#esTypes.has(type)) return;
    this.#esTypes.add(type);
    this.#es.addEventListener(type, this.#esHandler);
  }

  // ---------------------------------------------------------------- fetch stream

  async #runFetch(gen) {
    const ctrl = new AbortController();
    this.#abort = ctrl;
    const init = this.#fetchInit(ctrl.signal, 'text/event-stream');
    if (this.#cursor !== undefined) init.headers['Last-Event-ID'] = String(this.#cursor);
    let res;
    try {
      res = await this.#fetch(this.#streamUrl(false), init);
    } catch (e) {
      this.#retry(gen, { reason: 'error', failure: true, error: describe(e) });
      return;
    }
    if (gen !== this.#gen) {
      res.body?.cancel().catch(() => {});
      return;
    }
    const type = res.headers.get('content-type') || '';
    if (res.status === 204) {
      res.body?.cancel().catch(() => {});
      this.#refused(gen, { status: 204 });
      return;
    }
    if (!res.ok || !type.toLowerCase().startsWith('text/event-stream') || !res.body) {
      const info = await errorInfo(res);
      if (info.error === 'banned') {
        this.#refused(gen, { status: res.status, ...info });
        return;
      }
      this.#retry(gen, { reason: 'http', failure: true, status: res.status, ...info });
      return;
    }
    this.#opened(gen, 'open');
    const parser = new SseParser();
    const idle = this.#opts.idleTimeout;
    let idleTimer = null;
    const arm = () => {
      if (!idle) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => this.#retry(gen, { reason: 'idle', failure: false }), idle);
    };
    arm();
    try {
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== this.#gen) break;
        arm();
        const frames = parser.push(value);
        if (parser.retry !== undefined) this.#serverRetry = parser.retry;
        for (const f of frames) this.#frame(gen, f);
      }
    } catch (e) {
      clearTimeout(idleTimer);
      this.#retry(gen, { reason: 'error', failure: true, error: describe(e) });
      return;
    }
    clearTimeout(idleTimer);
    // The server ended the stream (restart, proxy timeout): reconnect like EventSource.
    this.#retry(gen, { reason: 'ended', failure: true });
  }

  // ---------------------------------------------------------------- long polling

  async #runPoll(gen) {
    const o = this.#opts;
    // The first request answers at once (status 'polling' within a round trip, and
    // a catch-up page); the following ones wait on the server for new events.
    let wait = 0;
    let first = true;
    while (gen === this.#gen && !this.#closed) {
      const ctrl = new AbortController();
      this.#abort = ctrl;
      const u = new URL(o.pollUrl, this.#url);
      this.#addQuery(u);
      const after = this.#cursor ?? 0;
      u.searchParams.set('after', String(after));
      u.searchParams.set('wait', String(wait));
      // A proxy that swallows the answer must not hang the loop.
      const timeout = setTimeout(() => ctrl.abort(), (wait + 15) * 1000);
      const started = Date.now();
      let page;
      try {
        const res = await this.#fetch(u.href, this.#fetchInit(ctrl.signal, 'application/json'));
        if (gen !== this.#gen) return;
        if (res.status === 204) {
          this.#refused(gen, { status: 204 });
          return;
        }
        if (!res.ok) {
          const info = await errorInfo(res);
          if (info.error === 'banned') {
            this.#refused(gen, { status: res.status, ...info });
            return;
          }
          this.#retry(gen, { reason: 'http', failure: true, status: res.status, ...info });
          return;
        }
        page = await res.json();
        if (!page || !Array.isArray(page.events) || typeof page.next !== 'number') {
          throw new Error('not a poll page');
        }
      } catch (e) {
        this.#retry(gen, { reason: 'error', failure: true, error: describe(e) });
        return;
      } finally {
        clearTimeout(timeout);
      }
      if (gen !== this.#gen) return;
      if (this.#status !== 'polling') this.#setStatus('polling');
      this.#markHealthy(gen);
      if (page.reset) this.#frame(gen, { type: 'reset', data: JSON.stringify(page.reset), id: null });
      for (const e of page.events) this.#enqueue(() => this.#onPolled(e, gen));
      this.#enqueue(() => {
        if (this.#cursor === undefined || page.next > this.#cursor) this.#cursor = page.next;
      });
      await this.#queue;
      // Nothing new and answered at once (after the first request): `pollWait` is 0,
      // or the server ignored `wait`. Do not spin.
      const quick = Date.now() - started < (wait * 1000) / 2 || wait === 0;
      if (page.events.length === 0 && page.next <= after && quick && !first) {
        await new Promise((r) => (this.#sleepTimer = setTimeout(r, 1000)));
      }
      first = false;
      wait = o.pollWait;
    }
  }

  #onPolled(e, gen) {
    const id = toId(e.id);
    const type = e.type || 'message';
    if (isBatch(type, e.data, id)) {
      for (const item of e.data) this.#deliverItem(item, gen);
      this.#advance(id);
      return;
    }
    // /poll sends text events as JSON strings (publish stores every JSON string as text):
    // parse the text as an SSE frame's data is parsed, so data is the same on every transport.
    const data = typeof e.data === 'string' ? parseJson(e.data, e.data) : e.data;
    this.#deliver({ id, type, topic: e.topic, data, time: e.time, raw: e }, gen);
  }

  // ---------------------------------------------------------------- frames

  /**
   * A parsed frame of connection `gen`. Frames that end the connection act at once (so
   * the transport stops); everything is dispatched through the queue, in order.
   */
  #frame(gen, f) {
    if (gen !== this.#gen || this.#closed) return;
    switch (f.type) {
      case 'revoked':
      case 'replaced':
        this.#final = true;
        this.#teardown();
        this.#gen++;
        this.#enqueue(() => {
          this.#emitControl(f);
          this.close();
        });
        return;
      case 'shutdown':
      case 'overflow':
        this.#enqueue(() => this.#emitControl(f));
        this.#retry(gen, { reason: f.type, failure: false });
        return;
      case 'connected':
        this.#enqueue(() => {
          this.#onConnected(f);
          this.#emitControl(f);
        });
        return;
      case 'reset':
        this.#enqueue(() => this.#emitControl(f));
        return;
      default:
        this.#enqueue(() => this.#onFrame(f, gen));
    }
  }

  #enqueue(task) {
    this.#queue = this.#queue
      .then(() => (this.#closed ? undefined : task()))
      .catch((e) => report(e));
  }

  #onConnected(f) {
    const head = parseJson(f.data)?.last_id;
    if (typeof head !== 'number') return;
    if (this.#cursor === undefined) {
      // No resume point yet: the head now, so a reconnect resumes instead of skipping.
      this.#cursor = head;
    } else if (head < this.#cursor) {
      // The server's log is behind us (restored, or a new data dir; a `reset` frame
      // follows): follow it, or every new event would look like a duplicate.
      this.#cursor = head;
      if (this.#lastId !== undefined && this.#lastId > head) this.#lastId = head;
      this.#seenOrder = this.#seenOrder.filter((id) => id <= head);
      this.#seen = new Set(this.#seenOrder);
    }
  }

  async #onFrame(f, gen) {
    let text = f.data;
    if (this.#gzip && text.startsWith('{"compressed":true')) {
      const env = parseJson(text);
      if (env && env.compressed === true && env.encoding === 'gzip' && typeof env.payload === 'string') {
        try {
          text = await gunzip(env.payload);
        } catch (e) {
          report(new Error(`Spout: cannot decode the gzip envelope of event ${f.id}: ${describe(e)}`));
        }
      }
    }
    if (this.#closed) return;
    const id = toId(f.id);
    const parsed = parseJson(text, NOT_JSON);
    if (parsed !== NOT_JSON && isBatch(f.type, parsed, id)) {
      for (const item of parsed) this.#deliverItem(item, gen);
      this.#advance(id);
      return;
    }
    const data = parsed === NOT_JSON ? text : parsed;
    this.#deliver({ id, type: f.type || 'message', topic: undefined, data, time: undefined, raw: text }, gen);
  }

  #deliverItem(item, gen) {
    this.#deliver(
      {
        id: toId(item.id),
        type: item.type || 'message',
        topic: item.topic,
        data: item.data,
        time: item.time,
        raw: item,
      },
      gen,
    );
  }

  /** Moves the resume point (a batch frame's id may be past its last kept item). */
  #advance(id) {
    if (id !== null && (this.#cursor === undefined || id > this.#cursor)) this.#cursor = id;
  }

  /** Delivers one event unless it is a duplicate; `gen` is the connection it came on. */
  #deliver(ev, gen) {
    if (this.#closed) return;
    const id = ev.id;
    if (id !== null) {
      if ((this.#lastId !== undefined && id <= this.#lastId) || this.#seen.has(id)) return;
      this.#seen.add(id);
      this.#seenOrder.push(id);
      const window = Math.max(1, this.#opts.dedupeWindow | 0);
      while (this.#seenOrder.length > window) this.#seen.delete(this.#seenOrder.shift());
      this.#lastId = id;
      this.#advance(id);
    }
    this.#markHealthy(gen);
    this.#dispatch(ev.type, ev);
    this.#dispatch('*', ev);
  }

  #emitControl(f) {
    const data = parseJson(f.data, NOT_JSON);
    const ev = {
      id: null,
      type: f.type,
      topic: undefined,
      data: data === NOT_JSON ? f.data : data,
      time: undefined,
      raw: f.data,
    };
    this.#dispatch(f.type, ev);
  }

  #dispatch(type, ev) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      if (this.#closed && !CONTROL.has(ev.type)) return;
      this.#call(fn, ev.data, ev);
    }
  }

  #call(fn, ...args) {
    try {
      fn(...args);
    } catch (e) {
      report(e);
    }
  }

  #setStatus(status) {
    if (this.#status === status) return;
    if (this.#status === 'closed') return;
    this.#status = status;
    for (const fn of [...this.#statusListeners]) this.#call(fn, status);
  }
}

/**
 * A WHATWG Server-Sent Events parser: CRLF, CR and LF line ends (also split across
 * chunks), multi-line `data` joined with `\n`, one leading space stripped from values,
 * comments ignored, `retry:` kept in {@link SseParser#retry}. Exported for tests.
 */
export class SseParser {
  #buf = '';
  #cr = false;
  #started = false;
  #data = '';
  #hasData = false;
  #type = '';
  #id = null;
  /** The last `id:` seen (the spec's "last event ID", which persists across events). */
  lastEventId = '';
  /** The last valid `retry:` value in ms, if any. */
  retry = undefined;
  /** Comment lines seen (heartbeats). */
  comments = 0;

  /**
   * Feeds decoded text; returns the frames it completed.
   *
   * @param {string} chunk
   * @returns {{ type: string, data: string, id: string | null }[]}
   */
  push(chunk) {
    const out = [];
    if (!this.#started && chunk.length > 0) {
      this.#started = true;
      if (chunk.charCodeAt(0) === 0xfeff) chunk = chunk.slice(1);
    }
    const n = chunk.length;
    if (n === 0) return out;
    let i = 0;
    if (this.#cr) {
      this.#cr = false;
      if (chunk.charCodeAt(0) === 10) i = 1;
    }
    let start = i;
    for (; i < n; i++) {
      const c = chunk.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.#buf + chunk.slice(start, i);
      this.#buf = '';
      if (c === 13) {
        if (i + 1 < n) {
          if (chunk.charCodeAt(i + 1) === 10) i++;
        } else {
          this.#cr = true;
        }
      }
      start = i + 1;
      this.#line(line, out);
    }
    if (start < n) this.#buf += chunk.slice(start);
    return out;
  }

  #line(line, out) {
    if (line === '') {
      const id = this.#id;
      this.#id = null;
      if (!this.#hasData) {
        this.#type = '';
        return;
      }
      let data = this.#data;
      if (data.endsWith('\n')) data = data.slice(0, -1);
      out.push({ type: this.#type || 'message', data, id });
      this.#data = '';
      this.#hasData = false;
      this.#type = '';
      return;
    }
    if (line.charCodeAt(0) === 58 /* : */) {
      this.comments++;
      return;
    }
    const colon = line.indexOf(':');
    let field = line;
    let value = '';
    if (colon !== -1) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.charCodeAt(0) === 32) value = value.slice(1);
    }
    switch (field) {
      case 'event':
        this.#type = value;
        break;
      case 'data':
        this.#data += value + '\n';
        this.#hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) {
          this.lastEventId = value;
          this.#id = value;
        }
        break;
      case 'retry':
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
  }
}

// ------------------------------------------------------------------ helpers

const NOT_JSON = Symbol('not JSON');

function parseJson(text, fallback = undefined) {
  if (typeof text !== 'string') return fallback;
  try {
    return JSON.parse(text);
  } catch {
    return fallback;
  }
}

/** An event id as a number, or null when it is not a non-negative integer. */
function toId(v) {
  if (typeof v === 'number') return Number.isSafeInteger(v) && v >= 0 ? v : null;
  if (typeof v === 'string' && /^[0-9]{1,16}$/.test(v)) return toId(Number(v));
  return null;
}

/**
 * A batch plugin's frame: an array of `{id, topic, data, time, type?}` items in id order
 * whose last id is the frame's id (the type may be renamed with the plugin's `kind`).
 */
function isBatch(type, value, id) {
  if (!Array.isArray(value) || value.length === 0) return false;
  let prev = -1;
  for (const item of value) {
    if (!item || typeof item !== 'object' || Array.isArray(item)) return false;
    const itemId = toId(item.id);
    if (itemId === null || itemId <= prev || typeof item.topic !== 'string' || !('data' in item)) return false;
    prev = itemId;
  }
  return type === 'batch' || (id !== null && prev === id);
}

async function gunzip(base64) {
  const bin = atob(base64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('gzip'));
  return new Response(stream).text();
}

/** `{ error, detail }` of a Spout error response (or the start of its text). */
async function errorInfo(res) {
  let text = '';
  try {
    text = await res.text();
  } catch {
    // the body failed too; the status says enough
  }
  const json = parseJson(text);
  if (json && typeof json === 'object' && typeof json.error === 'string') {
    return { error: json.error, detail: typeof json.detail === 'string' ? json.detail : undefined };
  }
  return { error: text.slice(0, 200) || res.statusText || `HTTP ${res.status}` };
}

function describe(e) {
  if (!e) return 'error';
  const code = e.cause?.code || e.code;
  return code ? `${code}: ${e.message || e}` : String(e.message || e);
}

function report(e) {
  if (typeof globalThis.reportError === 'function') globalThis.reportError(e);
  else console.error(e);
}
