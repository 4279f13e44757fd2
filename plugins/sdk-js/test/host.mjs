// A stand-in Spout host for tests: runs a built component in Node (jco
// transpiles it to JS + core wasm) with the spout:plugin imports in JS, and
// helpers to make raw batches. Not the real sandbox (that is wasmtime in
// Spout); it checks what the SDK hands the host and back.
import { transpileBytes } from '@bytecodealliance/jco-transpile';
import { mkdtempSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** Loads `wasm`; returns its exports plus the host's log lines and kv. */
export async function load(wasm) {
  const dir = mkdtempSync(join(tmpdir(), 'spout-js-test-'));
  const { files } = await transpileBytes(readFileSync(wasm), { name: 'plugin', instantiation: { tag: 'async' }, quiet: true });
  for (const [name, data] of Object.entries(files)) {
    mkdirSync(dirname(join(dir, name)), { recursive: true });
    writeFileSync(join(dir, name), data);
  }
  const { instantiate } = await import(pathToFileURL(join(dir, 'plugin.js')).href);
  const logs = [];
  const kv = new Map();
  let clock = 1_700_000_000_000n;
  const host = {
    'spout:plugin/types': {},
    'spout:plugin/log': { write: (level, msg) => logs.push([level, msg]) },
    'spout:plugin/clock': { monotonicNs: () => process.hrtime.bigint(), wallMs: () => clock },
    'spout:plugin/kv': {
      get: (k) => kv.get(k),
      set: (k, v) => void kv.set(k, v),
      delete: (k) => void kv.delete(k),
    },
  };
  const exports = await instantiate((p) => WebAssembly.compile(readFileSync(join(dir, p))), host);
  return { exports, logs, kv, setWallMs: (ms) => (clock = BigInt(ms)) };
}

const enc = new TextEncoder();

/** A raw event-batch from `{topic, type, data, target, id}` objects. */
export function batch(list) {
  const parts = [];
  let size = 0;
  const span = (s) => {
    const b = typeof s === 'string' ? enc.encode(s) : s;
    parts.push(b);
    const r = { offset: size, len: b.length };
    size += b.length;
    return r;
  };
  const events = list.map((e, i) => ({
    id: BigInt(e.id ?? i + 1),
    timeMs: BigInt(e.timeMs ?? 0),
    topic: span(e.topic ?? 'docs'),
    kind: span(e.type ?? ''),
    data: span(typeof e.data === 'string' || e.data instanceof Uint8Array ? e.data : JSON.stringify(e.data ?? null)),
    target: e.target === undefined ? undefined : span(e.target),
  }));
  const buf = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return { buf, events };
}

const dec = new TextDecoder();

/** A raw event-batch back as plain objects. */
export function unbatch({ buf, events }) {
  const text = (s) => dec.decode(buf.subarray(s.offset, s.offset + s.len));
  return events.map((r) => ({
    id: r.id,
    topic: text(r.topic),
    type: text(r.kind),
    data: text(r.data),
    target: r.target === undefined ? undefined : text(r.target),
  }));
}

/** A subscription record. */
export function sub(user, params = [], claims = '{}') {
  return { user, claims, topics: ['**'], params };
}

/** A request record. */
export function request(method, headers = [], query = []) {
  return { method, path: '/events', query, headers, remoteAddr: '127.0.0.1:5000' };
}
