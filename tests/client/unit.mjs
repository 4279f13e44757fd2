// Checks of examples/client/spout.js that need no server: the SSE parser on
// hostile chunking, the fetch transport on crafted streams (dedupe, batch
// unwrapping, gzip envelopes, `retry:`), and the EventSource transport driven
// through a fake EventSource (shutdown, CLOSED, revoked, fallback to polling).
//
//   node tests/client/unit.mjs     -> "ok N - name" lines; exit 1 on the first failure

import assert from 'node:assert/strict';
import { Spout, SseParser } from '../../examples/client/spout.js';

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

const enc = new TextEncoder();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function until(what, cond, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** A streaming Response the test feeds; errors when the request is aborted. */
function stream(init, { status = 200, type = 'text/event-stream' } = {}) {
  let controller;
  const body = new ReadableStream({ start: (c) => (controller = c) });
  init?.signal?.addEventListener('abort', () => {
    try {
      controller.error(new DOMException('aborted', 'AbortError'));
    } catch {
      // already closed
    }
  });
  const response = new Response(body, { status, headers: { 'content-type': type } });
  return {
    response,
    send: (chunk) => {
      try {
        controller.enqueue(typeof chunk === 'string' ? enc.encode(chunk) : chunk);
      } catch {
        // aborted by the client: nothing more can arrive
      }
    },
    end: () => controller.close(),
  };
}

/** A fake fetch: each call is recorded and answered by `answer(call, index)`. */
function fakeFetch(answer) {
  const calls = [];
  const fn = async (url, init) => {
    const call = { url: new URL(url), init, headers: init.headers };
    calls.push(call);
    return answer(call, calls.length - 1);
  };
  fn.calls = calls;
  return fn;
}

async function gzipBase64(text) {
  const s = new Blob([enc.encode(text)]).stream().pipeThrough(new CompressionStream('gzip'));
  return Buffer.from(await new Response(s).arrayBuffer()).toString('base64');
}

function collect(client) {
  const got = [];
  client.on('*', (data, ev) => got.push({ id: ev.id, type: ev.type, topic: ev.topic, data }));
  return got;
}

// ------------------------------------------------------------------ parser

check('the parser follows the WHATWG rules on any chunking', () => {
  const text =
    '\uFEFFretry: 250\r\n: heartbeat\r\n\r\n' +
    'id: 1\r\nevent: a\r\ndata: one\r\ndata:  two\r\ndata\r\n\r\n' + // CRLF, 2 spaces keep one, bare `data`
    'id: 2\rdata:x\r\r' + // lone CR
    'id: 3\ndata: {"k":1}\nunknown: field\nretry: soon\n\n' + // invalid retry ignored
    'event: only-type\n\n' + // no data: not dispatched
    'data:\n\n' + // empty data is dispatched
    'id: 4\ndata: unterminated'; // no blank line: never dispatched
  const want = [
    { type: 'a', data: 'one\n two\n', id: '1' },
    { type: 'message', data: 'x', id: '2' },
    { type: 'message', data: '{"k":1}', id: '3' },
    { type: 'message', data: '', id: null },
  ];
  // Whole, then split at every position (CR|LF pairs split across chunks), then per character.
  const splits = [[text]];
  for (let i = 1; i < text.length; i++) splits.push([text.slice(0, i), text.slice(i)]);
  splits.push([...text]);
  for (const chunks of splits) {
    const p = new SseParser();
    const frames = chunks.flatMap((c) => p.push(c));
    assert.deepEqual(frames, want, JSON.stringify(chunks.map((c) => c.length)));
    assert.equal(p.retry, 250);
    assert.equal(p.comments, 1);
    assert.equal(p.lastEventId, '4');
  }
});

// ------------------------------------------------------------------ fetch transport

check('fetch: frames, batches, gzip, UTF-8 split across chunks, dedupe, resume header', async () => {
  const envelope = JSON.stringify({
    compressed: true,
    encoding: 'gzip',
    payload: await gzipBase64(
      JSON.stringify([
        { id: 6, topic: 'orders/eu', type: 'order', data: { sku: 'a' }, time: 1 },
        { id: 7, topic: 't', data: 'caf\u00e9', time: 2 },
      ]),
    ),
  });
  const streams = [];
  const fetch = fakeFetch((call) => {
    const s = stream(call.init);
    streams.push(s);
    return s.response;
  });
  const client = new Spout('http://spout.test/events', {
    topics: ['t', 'orders/*'],
    params: { token: 'abc', tag: ['x', 'y'] },
    fetch,
    backoff: { initial: 10, max: 40 },
    healthyAfter: 10000,
  });
  const got = collect(client);
  const statuses = [];
  client.onStatus((s) => statuses.push(s));
  const retries = [];
  client.onRetry((r) => retries.push(r));
  const typed = [];
  const offTyped = client.on('order', (data) => typed.push(data));
  assert.equal(client.transport, 'fetch', 'Node has no EventSource');
  await until('the first request', () => streams.length === 1);
  const first = fetch.calls[0];
  assert.deepEqual(first.url.searchParams.getAll('topic'), ['t', 'orders/*']);
  assert.deepEqual(first.url.searchParams.getAll('tag'), ['x', 'y']);
  assert.equal(first.url.searchParams.get('token'), 'abc');
  assert.equal(first.url.searchParams.get('accept-encoding'), 'gzip');
  assert.equal(first.headers.Accept, 'text/event-stream');
  assert.equal(first.headers['Last-Event-ID'], undefined, 'no resume point yet');

  const s = streams[0];
  s.send('retry: 20\n\nevent: connected\ndata: {"connection":"c","topics":[],"last_id":4}\n\n');
  s.send('id: 5\ndata: {"n":5}\n\n');
  const euro = enc.encode('id: 8\nevent: note\ndata: 10\u20ac\n\n');
  s.send(euro.slice(0, 19)); // inside the 3-byte euro sign
  s.send(euro.slice(19));
  s.send(`id: 7\nevent: batch\ndata: ${envelope}\n\n`); // behind: 6 and 7 are <= 8, dropped
  s.send('id: 5\ndata: {"n":"again"}\n\n'); // duplicate
  s.send('id: 9\nevent: batch\ndata: [{"id":9,"topic":"t","data":[1],"time":3}]\n\n');
  await until('3 events', () => got.length === 3);
  await sleep(20); // the stale batch and the duplicate stay dropped
  assert.deepEqual(got, [
    { id: 5, type: 'message', topic: undefined, data: { n: 5 } },
    { id: 8, type: 'note', topic: undefined, data: '10\u20ac' },
    { id: 9, type: 'message', topic: 't', data: [1] },
  ]);
  assert.equal(client.lastEventId, 9);

  // The server ends the stream: reconnect after `retry:` (20 ms) based backoff, resuming.
  s.end();
  await until('a reconnect', () => streams.length === 2);
  assert.equal(retries[0].reason, 'ended');
  assert.equal(retries[0].cap, 20, 'base is the server retry: value');
  assert.ok(retries[0].delay < retries[0].cap);
  assert.equal(fetch.calls[1].headers['Last-Event-ID'], String(client.lastEventId));
  assert.equal(fetch.calls[1].url.searchParams.get('lastEventId'), null, 'header, not query');

  // A compressed batch on the new connection is unwrapped into its items.
  const next = client.lastEventId + 1;
  const env2 = JSON.stringify({
    compressed: true,
    encoding: 'gzip',
    payload: await gzipBase64(
      JSON.stringify([
        { id: next, topic: 'orders/eu', type: 'order', data: { sku: 'b' }, time: 4 },
        { id: next + 1, topic: 't', data: 'caf\u00e9', time: 5 },
      ]),
    ),
  });
  streams[1].send(`id: ${next + 1}\nevent: batch\ndata: ${env2}\n\n`);
  await until('the batch items', () => got.length === 5);
  assert.deepEqual(got.slice(3), [
    { id: next, type: 'order', topic: 'orders/eu', data: { sku: 'b' } },
    { id: next + 1, type: 'message', topic: 't', data: 'caf\u00e9' },
  ]);
  assert.deepEqual(typed, [{ sku: 'b' }]);
  offTyped();
  client.close();
  assert.equal(client.status, 'closed');
  assert.deepEqual(statuses, ['open', 'connecting', 'open', 'closed']);
  streams[1].send(`id: ${next + 5}\ndata: 1\n\n`);
  await sleep(20);
  assert.equal(got.length, 5, 'nothing after close()');
});

check('fetch: the exact sequence of a mixed stream', async () => {
  const fetch = fakeFetch((call) => {
    const s = stream(call.init);
    queueMicrotask(() => {
      s.send('event: connected\ndata: {"last_id":0}\n\n');
      s.send('id: 1\ndata: plain text\n\n');
      s.send('id: 2\nevent: batch\ndata: [{"id":2,"topic":"a","type":"x","data":"s","time":1},{"id":3,"topic":"b","data":null,"time":2}]\n\n');
      s.send('id: 3\ndata: dup\n\n');
      s.send('id: 2\ndata: older\n\n');
      // A batch plugin renamed with `kind`: recognised by shape and by its last id.
      s.send('id: 5\nevent: prices\ndata: [{"id":4,"topic":"p","data":{"v":1},"time":3},{"id":5,"topic":"p","data":{"v":2},"time":4}]\n\n');
      // An ordinary event whose data happens to be an array: left alone.
      s.send('id: 6\nevent: list\ndata: [{"id":1,"topic":"x","data":0,"time":0}]\n\n');
    });
    return s.response;
  });
  const client = new Spout('http://spout.test/events', { topics: ['a'], fetch, acceptEncoding: null });
  const got = collect(client);
  await until('6 events', () => got.length === 6);
  assert.equal(fetch.calls[0].url.searchParams.get('accept-encoding'), null);
  assert.deepEqual(got, [
    { id: 1, type: 'message', topic: undefined, data: 'plain text' },
    { id: 2, type: 'x', topic: 'a', data: 's' },
    { id: 3, type: 'message', topic: 'b', data: null },
    { id: 4, type: 'message', topic: 'p', data: { v: 1 } },
    { id: 5, type: 'message', topic: 'p', data: { v: 2 } },
    { id: 6, type: 'list', topic: undefined, data: [{ id: 1, topic: 'x', data: 0, time: 0 }] },
  ]);
  client.close();
});

check('fetch: HTTP errors back off with full jitter, capped; a throwing listener does not stop delivery', async () => {
  const fetch = fakeFetch((call, i) => {
    if (i < 6) {
      return new Response(JSON.stringify({ error: 'unauthorized', detail: 'bad token' }), {
        status: 401,
        headers: { 'content-type': 'application/json' },
      });
    }
    const s = stream(call.init);
    queueMicrotask(() => s.send('id: 1\ndata: 1\n\nid: 2\ndata: 2\n\n'));
    return s.response;
  });
  const client = new Spout('http://spout.test/events', {
    topics: ['a'],
    fetch,
    transport: 'fetch',
    pollAfterFailures: 2, // explicit transport: never falls back
    backoff: { initial: 4, max: 20 },
  });
  const retries = [];
  client.onRetry((r) => retries.push(r));
  const errors = [];
  const consoleError = console.error;
  console.error = (e) => errors.push(e);
  client.on('message', () => {
    throw new Error('listener bug');
  });
  const got = collect(client);
  await until('delivery after the errors', () => got.length === 2);
  console.error = consoleError;
  assert.equal(errors.length, 2, 'each listener error is reported');
  assert.deepEqual(
    retries.map((r) => [r.reason, r.status, r.error, r.detail, r.attempt, r.cap, r.failures]),
    [0, 1, 2, 3, 4, 5].map((a) => ['http', 401, 'unauthorized', 'bad token', a, Math.min(20, 4 * 2 ** a), a + 1]),
  );
  for (const r of retries) assert.ok(r.delay >= 0 && r.delay < r.cap, JSON.stringify(r));
  assert.equal(client.transport, 'fetch');
  client.close();
});

check('connected.last_id behind the resume point: the client follows the server', async () => {
  let n = 0;
  const fetch = fakeFetch((call) => {
    const s = stream(call.init);
    n++;
    queueMicrotask(() => {
      s.send('event: connected\ndata: {"last_id":2}\n\n');
      s.send('event: reset\ndata: {"requested":50,"earliest":1}\n\n');
      s.send('id: 3\ndata: "after the restore"\n\n');
    });
    return s.response;
  });
  const client = new Spout('http://spout.test/events', { topics: ['a'], fetch, lastEventId: '50' });
  const resets = [];
  client.on('reset', (data) => resets.push(data));
  const got = collect(client);
  await until('the event after the reset', () => got.length === 1);
  assert.equal(fetch.calls[0].headers['Last-Event-ID'], '50');
  assert.deepEqual(resets, [{ requested: 50, earliest: 1 }]);
  assert.deepEqual(got[0], { id: 3, type: 'message', topic: undefined, data: 'after the restore' });
  assert.equal(client.lastEventId, 3);
  assert.equal(n, 1);
  client.close();
});

// ------------------------------------------------------------------ EventSource transport

class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static all = [];
  constructor(url, init) {
    this.url = new URL(url);
    this.withCredentials = init?.withCredentials;
    this.readyState = 0;
    this.listeners = new Map();
    this.closed = false;
    FakeEventSource.all.push(this);
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }
  close() {
    this.readyState = 2;
    this.closed = true;
  }
  open() {
    this.readyState = 1;
    this.onopen?.({ type: 'open' });
  }
  emit(type, data, lastEventId = '') {
    for (const fn of this.listeners.get(type) || []) fn({ type, data, lastEventId });
  }
  fail(state) {
    this.readyState = state;
    this.onerror?.({ type: 'error' });
  }
}

check('EventSource: shutdown, CLOSED and revoked; types registered on the fly', async () => {
  FakeEventSource.all = [];
  const client = new Spout('http://spout.test/events', {
    topics: ['t'],
    EventSource: FakeEventSource,
    withCredentials: true,
    backoff: { initial: 10, max: 15 },
  });
  assert.equal(client.transport, 'eventsource');
  const got = collect(client);
  const controls = [];
  for (const c of ['shutdown', 'revoked']) client.on(c, (data) => controls.push([c, data]));
  const retries = [];
  client.onRetry((r) => retries.push(r));
  let es = FakeEventSource.all[0];
  assert.equal(es.withCredentials, true);
  assert.equal(es.url.searchParams.get('lastEventId'), null);
  es.open();
  assert.equal(client.status, 'open');
  es.emit('connected', '{"last_id":7}');
  es.emit('message', '{"n":8}', '8');
  const custom = [];
  client.on('custom', (data) => custom.push(data)); // added while connected
  es.emit('custom', 'hello', '9');
  await until('2 events', () => got.length === 2);
  assert.deepEqual(custom, ['hello']);

  es.emit('shutdown', '{"last_id":9}', '9');
  assert.ok(es.closed, 'closed at once on shutdown');
  await until('a new EventSource', () => FakeEventSource.all.length === 2);
  assert.deepEqual(controls, [['shutdown', { last_id: 9 }]]);
  es = FakeEventSource.all[1];
  assert.equal(es.url.searchParams.get('lastEventId'), '9');
  assert.ok(es.listeners.has('custom'), 'registered types carried over');

  // Native retries (CONNECTING) are left to the EventSource; CLOSED is ours to retry.
  es.fail(0);
  assert.equal(client.status, 'connecting');
  await sleep(30);
  assert.equal(FakeEventSource.all.length, 2);
  es.fail(2);
  await until('a reconnect after CLOSED', () => FakeEventSource.all.length === 3);
  assert.deepEqual(
    retries.map((r) => [r.reason, r.attempt]),
    [['shutdown', 0], ['closed', 1]],
  );
  es = FakeEventSource.all[2];
  es.open();
  es.emit('batch', '[{"id":10,"topic":"t","data":1,"time":1},{"id":11,"topic":"t","type":"x","data":2,"time":2}]', '11');
  es.emit('revoked', '{"reason":"token expired"}', '11');
  await until('closed', () => client.status === 'closed');
  assert.deepEqual(got.map((e) => e.id), [8, 9, 10, 11]);
  assert.deepEqual(controls[1], ['revoked', { reason: 'token expired' }]);
  assert.ok(es.closed);
  await sleep(40);
  assert.equal(FakeEventSource.all.length, 3, 'no reconnect after revoked');
});

check('EventSource: CLOSED by a 204 (a banned user) ends for good; other statuses retry', async () => {
  FakeEventSource.all = [];
  let status = 503;
  const fetch = fakeFetch(async () => new Response(null, { status }));
  const client = new Spout('http://spout.test/events', {
    topics: ['t'],
    EventSource: FakeEventSource,
    transport: 'eventsource',
    fetch,
    backoff: { initial: 10, max: 15 },
  });
  const controls = [];
  client.on('revoked', (data) => controls.push(data));
  FakeEventSource.all[0].fail(2);
  await until('a reconnect after a 503', () => FakeEventSource.all.length === 2);
  assert.equal(fetch.calls.length, 1, 'one probe for the status EventSource hides');
  status = 204;
  FakeEventSource.all[1].fail(2);
  await until('closed', () => client.status === 'closed');
  assert.equal(controls.length, 1);
  assert.equal(controls[0].status, 204);
  await sleep(40);
  assert.equal(FakeEventSource.all.length, 2, 'no reconnect after 204');
});

check('EventSource: auto falls back to long polling after N native failures', async () => {
  FakeEventSource.all = [];
  const fetch = fakeFetch(async (call, i) => {
    if (i === 0) {
      return Response.json({ events: [{ id: 12, topic: 't', data: '{"a":1}', time: 1 }, { id: 13, topic: 't', type: 'x', data: { b: 2 }, time: 2 }], next: 20 });
    }
    await new Promise((resolve, reject) => call.init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  });
  const client = new Spout('http://spout.test/base/events', {
    topics: ['t'],
    EventSource: FakeEventSource,
    fetch,
    pollAfterFailures: 3,
    pollUrl: 'poll',
    pollWait: 99,
    backoff: { initial: 5, max: 5 },
  });
  const got = collect(client);
  const statuses = [];
  client.onStatus((s) => statuses.push(s));
  const es = FakeEventSource.all[0];
  es.open();
  es.emit('connected', '{"last_id":11}');
  es.fail(0);
  es.open();
  es.fail(0);
  es.fail(0);
  await until('polling', () => client.status === 'polling');
  assert.ok(es.closed);
  assert.equal(client.transport, 'poll');
  const poll = fetch.calls[0].url;
  assert.equal(poll.pathname, '/base/poll', 'pollUrl resolves against the stream URL');
  assert.equal(poll.searchParams.get('after'), '11', 'resumes from the head the stream reported');
  assert.equal(poll.searchParams.get('wait'), '0', 'the first poll answers at once');
  await until('2 events', () => got.length === 2);
  // Text comes as a JSON string from /poll: parsed like an SSE frame's data.
  assert.deepEqual(got, [
    { id: 12, type: 'message', topic: 't', data: { a: 1 } },
    { id: 13, type: 'x', topic: 't', data: { b: 2 } },
  ]);
  await until('the next long poll', () => fetch.calls.length === 2);
  assert.equal(fetch.calls[1].url.searchParams.get('after'), '20', 'after = next');
  assert.equal(fetch.calls[1].url.searchParams.get('wait'), '30', 'then long polls, wait capped at 30 s');
  client.close();
  assert.deepEqual(statuses, ['open', 'connecting', 'open', 'connecting', 'polling', 'closed']);
});

check('options are validated', () => {
  assert.throws(() => new Spout('http://x/events', {}), /topics/);
  assert.throws(() => new Spout('http://x/events', { topics: [] }), /topics/);
  assert.throws(() => new Spout('/events', { topics: ['t'] }), /absolute URL/);
  assert.throws(() => new Spout('http://x/events', { topics: ['t'], transport: 'ws' }), /transport/);
  assert.throws(() => new Spout('http://x/events', { topics: ['t'], transport: 'eventsource' }), /EventSource/);
  assert.throws(() => new Spout('http://x/events', { topics: ['t'], lastEventId: 'abc' }), /lastEventId/);
});

let n = 0;
for (const { name, fn } of checks) {
  n++;
  try {
    await fn();
    console.log(`ok ${n} - ${name}`);
  } catch (e) {
    console.log(`not ok ${n} - ${name}`);
    console.log(e?.stack || e);
    process.exit(1);
  }
}
console.log(`1..${n}`);
process.exit(0);
