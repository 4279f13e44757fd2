// @spout/sdk: write Spout plugins in JavaScript.
//
// Each helper (`filter`, `transform`, `auth`) takes a plain spec object and
// returns the exports of its WIT world (`lifecycle` plus the world's own
// functions); `export default` it and build with `build.mjs`. The raw ABI
// types are in types/wit/ (generated from ../wit/spout.wit); index.d.ts
// types this module.
import { write as logWrite } from 'spout:plugin/log@0.1.0';
import { monotonicNs, wallMs } from 'spout:plugin/clock@0.1.0';
import { get as kvGet, set as kvSet, delete as kvDelete } from 'spout:plugin/kv@0.1.0';

const utf8 = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** The schema `describe` reports for a plugin without `configSchema`. */
const NO_CONFIG_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  type: 'object',
};

/** Text of a span of `buf` ('' when it is not valid UTF-8, as in the Rust SDK). */
function text(buf, span) {
  const len = span.len;
  if (len === 0) return '';
  const start = span.offset;
  try {
    return utf8.decode(buf.subarray(start, start + len));
  } catch {
    return '';
  }
}

function message(e) {
  if (typeof e === 'string') return e;
  if (e && typeof e.message === 'string') return e.message;
  return String(e);
}

/**
 * One event of a batch: a view into the batch buffer. Text fields are
 * decoded on first access and cached, so a `keep` that reads only `topic`
 * never decodes `data`. The fields can be assigned (transform plugins);
 * unchanged fields are copied as bytes when the event is handed back.
 */
export class Event {
  /** @param {Uint8Array} buf @param {import('spout:plugin/types@0.1.0').EventRef} ref @param {number} index */
  constructor(buf, ref, index) {
    this._buf = buf;
    this._ref = ref;
    /** Position in the batch. */
    this.index = index;
    this._topic = undefined;
    this._type = undefined;
    this._data = undefined;
    this._target = undefined;
    this._json = undefined;
  }
  /** Log id (0 for events not yet stored); exact below 2^53. */
  get id() {
    return Number(this._ref.id);
  }
  /** Milliseconds since the Unix epoch when the log accepted it (0 before). */
  get timeMs() {
    return Number(this._ref.timeMs);
  }
  get topic() {
    if (this._topic === undefined) this._topic = text(this._buf, this._ref.topic);
    return this._topic;
  }
  set topic(v) {
    this._topic = String(v);
  }
  /** The SSE `event:` type; `message` when the publisher gave none. */
  get type() {
    if (this._type === undefined) this._type = text(this._buf, this._ref.kind) || 'message';
    return this._type;
  }
  set type(v) {
    this._type = String(v);
  }
  /** The data as text ('' if it is not valid UTF-8). */
  get data() {
    if (this._data === undefined) this._data = text(this._buf, this._ref.data);
    return this._data;
  }
  /** New data: a string, bytes, or any other value (stored as its JSON). */
  set data(v) {
    this._data = v;
    this._json = undefined;
  }
  /** The data bytes, without decoding (a view into the batch buffer). */
  get bytes() {
    if (this._data !== undefined) return encodeData(this._data);
    const d = this._ref.data;
    return this._buf.subarray(d.offset, d.offset + d.len);
  }
  /** The user a private event is addressed to, if any. */
  get target() {
    if (this._target === undefined) {
      const t = this._ref.target;
      this._target = t === undefined || t === null ? null : text(this._buf, t);
    }
    return this._target === null ? undefined : this._target;
  }
  set target(v) {
    this._target = v === undefined || v === null ? null : String(v);
  }
  /** `data` parsed as JSON (cached; throws if it is not JSON). */
  json() {
    if (this._json === undefined) {
      const d = this.data;
      this._json = typeof d === 'string' ? JSON.parse(d) : d instanceof Uint8Array ? JSON.parse(utf8.decode(d)) : d;
    }
    return this._json;
  }
  toJSON() {
    return { id: this.id, timeMs: this.timeMs, topic: this.topic, type: this.type, data: this.data, target: this.target };
  }
}

function encodeData(v) {
  if (typeof v === 'string') return utf8Encoder.encode(v);
  if (v instanceof Uint8Array) return v;
  return utf8Encoder.encode(JSON.stringify(v));
}

/** The events of a raw batch as `Event` views. */
export function events(batch) {
  const { buf, events: refs } = batch;
  const out = new Array(refs.length);
  for (let i = 0; i < refs.length; i++) out[i] = new Event(buf, refs[i], i);
  return out;
}

/**
 * Builds a raw batch (one buffer plus spans) from events: `Event`s (fields
 * not reassigned are copied as bytes) or plain `{topic, type, data, target,
 * id}` objects.
 */
export function toBatch(list) {
  const chunks = [];
  let size = 0;
  const span = (bytes) => {
    const s = { offset: size, len: bytes.length };
    if (bytes.length) {
      chunks.push(bytes);
      size += bytes.length;
    }
    return s;
  };
  const raw = (buf, s) => span(buf.subarray(s.offset, s.offset + s.len));
  const str = (v) => span(utf8Encoder.encode(v));
  const refs = new Array(list.length);
  for (let i = 0; i < list.length; i++) {
    const e = list[i];
    if (e === null || typeof e !== 'object') {
      throw new TypeError(`event #${i}: expected an object, got ${e === null ? 'null' : typeof e}`);
    }
    if (e instanceof Event) {
      const r = e._ref;
      const b = e._buf;
      const target = e._target === undefined ? (r.target == null ? undefined : raw(b, r.target)) : e._target === null ? undefined : str(e._target);
      refs[i] = {
        id: r.id,
        timeMs: 0n,
        topic: e._topic === undefined ? raw(b, r.topic) : str(e._topic),
        // The type is always decoded to `message` at least: keep an empty
        // span for the default, as the publisher sent it.
        kind: e._type === undefined ? raw(b, r.kind) : str(e._type === 'message' ? '' : e._type),
        data: e._data === undefined ? raw(b, r.data) : span(encodeData(e._data)),
        target,
      };
    } else {
      if (typeof e.topic !== 'string' || e.topic === '') throw new TypeError(`event #${i}: \`topic\` must be a non-empty string`);
      const type = e.type === undefined || e.type === null || e.type === 'message' ? '' : String(e.type);
      refs[i] = {
        id: BigInt(e.id ?? 0),
        timeMs: 0n,
        topic: str(e.topic),
        kind: str(type),
        data: span(encodeData(e.data === undefined ? '' : e.data)),
        target: e.target === undefined || e.target === null ? undefined : str(String(e.target)),
      };
    }
  }
  const buf = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    buf.set(c, at);
    at += c.length;
  }
  return { buf, events: refs };
}

/** Parses the config JSON the host passes to `init` (`""` and `null` mean `{}`). */
export function parseConfig(json) {
  const t = json.trim();
  if (t === '' || t === 'null') return {};
  try {
    return JSON.parse(t);
  } catch (e) {
    throw `config: ${message(e)}`;
  }
}

/** Why a request or publish is refused: throw one (`throw deny(403, 'no')`). */
export class Denial {
  constructor(status, reason) {
    this.status = status;
    this.reason = reason;
  }
}

/** A `Denial` to throw: HTTP status (401, 403, 422, ...) and reason. */
export function deny(status, reason) {
  return new Denial(status, reason);
}

/** A thrown value as the WIT `denial` record, or undefined if it is none. */
function asDenial(e) {
  if (e !== null && typeof e === 'object' && Number.isInteger(e.status) && e.status >= 100 && e.status <= 599) {
    return { status: e.status, reason: e.reason === undefined ? '' : String(e.reason) };
  }
  return undefined;
}

/** Runs `f`; a thrown denial becomes the WIT `denial` record, anything else is rethrown as it is. */
function denying(f) {
  try {
    return f();
  } catch (e) {
    throw asDenial(e) ?? e;
  }
}

/** The first value of `key` in [name, value] pairs, if any. */
function firstValue(pairs, key) {
  for (const [k, v] of pairs) if (k === key) return v;
  return undefined;
}

/** `lifecycle` exports shared by every helper. */
function lifecycle(spec) {
  if (!spec || typeof spec.name !== 'string' || spec.name === '') {
    throw new TypeError('a plugin spec needs a `name`');
  }
  const description = JSON.stringify({
    name: spec.name,
    version: spec.version ?? '0.1.0',
    config_schema: spec.configSchema ?? NO_CONFIG_SCHEMA,
  });
  return {
    describe() {
      return description;
    },
    init(config) {
      // result<_, string>: a thrown string is the error.
      let parsed;
      try {
        parsed = parseConfig(config);
        if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
          throw 'config: expected a table (JSON object)';
        }
        spec.config = parsed;
        if (typeof spec.init === 'function') spec.init(parsed);
      } catch (e) {
        throw message(e);
      }
    },
  };
}

/** The per-call view of a subscription (the same object for all events of a call). */
export class Subscription {
  constructor(raw) {
    this.user = raw.user;
    this.topics = raw.topics;
    /** Query parameters of the subscribe request, as [name, value] pairs. */
    this.params = raw.params;
    this._claims = raw.claims;
    this._claimsJson = undefined;
  }
  /** The first value of query parameter `name`, if any. */
  param(name) {
    return firstValue(this.params, name);
  }
  /** The principal's claims (a JSON object) parsed. */
  get claims() {
    if (this._claimsJson === undefined) {
      const c = this._claims.trim();
      this._claimsJson = c === '' ? {} : JSON.parse(c);
    }
    return this._claimsJson;
  }
}

/**
 * A filter plugin: `keep(sub, event)` says whether subscribers with this
 * subscription key see `event`.
 */
export function filter(spec) {
  if (typeof spec.keep !== 'function') throw new TypeError(`filter \`${spec.name}\`: \`keep(sub, event)\` is missing`);
  return {
    lifecycle: lifecycle(spec),
    keep(rawSub, batch) {
      const sub = new Subscription(rawSub);
      const { buf, events: refs } = batch;
      const n = refs.length;
      const kept = new Uint32Array(n);
      let k = 0;
      for (let i = 0; i < n; i++) {
        if (spec.keep(sub, new Event(buf, refs[i], i))) kept[k++] = i;
      }
      return kept.subarray(0, k);
    },
  };
}

/**
 * A transform plugin: `apply(events)` returns the events to store instead
 * (any number: the same `Event`s, changed or not, or new plain objects), or
 * throws a `Denial` to refuse the whole publish.
 */
export function transform(spec) {
  if (typeof spec.apply !== 'function') throw new TypeError(`transform \`${spec.name}\`: \`apply(events)\` is missing`);
  return {
    lifecycle: lifecycle(spec),
    apply(batch) {
      const out = denying(() => spec.apply(events(batch)));
      if (!Array.isArray(out)) throw new TypeError(`transform \`${spec.name}\`: apply must return an array of events`);
      return toBatch(out);
    },
  };
}

/** An incoming request as an auth plugin sees it (header names lower-case). */
export class Request {
  constructor(raw) {
    this.method = raw.method;
    this.path = raw.path;
    /** Query parameters as [name, value] pairs. */
    this.query = raw.query;
    /** Headers as [lower-case name, value] pairs. */
    this.headers = raw.headers;
    this.remoteAddr = raw.remoteAddr;
  }
  /** The first value of header `name` (any case), if any. */
  header(name) {
    return firstValue(this.headers, name.toLowerCase());
  }
  /** The first value of query parameter `name`, if any. */
  param(name) {
    return firstValue(this.query, name);
  }
}

/**
 * An auth plugin: `authenticate(req)` returns the principal `{user, topics,
 * claims}` or throws a `Denial` (`throw deny(401, 'no token')`).
 */
export function auth(spec) {
  if (typeof spec.authenticate !== 'function') throw new TypeError(`auth \`${spec.name}\`: \`authenticate(req)\` is missing`);
  return {
    lifecycle: lifecycle(spec),
    authenticate(raw) {
      const p = denying(() => spec.authenticate(new Request(raw)));
      if (!p || typeof p.user !== 'string') throw new TypeError(`auth \`${spec.name}\`: authenticate must return {user, topics, claims}`);
      const claims = p.claims === undefined || p.claims === null ? '{}' : typeof p.claims === 'string' ? p.claims : JSON.stringify(p.claims);
      return { user: p.user, topics: Array.from(p.topics ?? [], String), claims };
    },
    onDisconnect(conn) {
      if (typeof spec.onDisconnect === 'function') spec.onDisconnect(conn);
    },
  };
}

/** Host logging: lines end up in Spout's log, tagged with the plugin name. */
export const log = {
  trace: (msg) => logWrite('trace', String(msg)),
  debug: (msg) => logWrite('debug', String(msg)),
  info: (msg) => logWrite('info', String(msg)),
  warn: (msg) => logWrite('warn', String(msg)),
  error: (msg) => logWrite('error', String(msg)),
};

/** Host clocks (Date.now() and performance.now() use them too, see prelude.js). */
export const clock = {
  /** Wall-clock milliseconds since the Unix epoch. */
  wallMs: () => Number(wallMs()),
  /** Monotonic nanoseconds since an arbitrary start (a bigint). */
  monotonicNs: () => monotonicNs(),
};

/** The plugin's own key-value store (persisted by the host). */
export const kv = {
  /** The bytes stored under `key`, if any. */
  get: (key) => kvGet(key),
  /** The value stored under `key` as text, if any. */
  getText: (key) => {
    const v = kvGet(key);
    return v === undefined ? undefined : new TextDecoder().decode(v);
  },
  /** Stores bytes or text under `key` (throws the host's error). */
  set: (key, value) => kvSet(key, typeof value === 'string' ? utf8Encoder.encode(value) : value),
  delete: (key) => kvDelete(key),
};
