// Drives examples/client/spout.js in Node for tests/client.rs.
//
//   node tests/client/node.mjs BASE_URL [CONFIG_JSON]
//
// CONFIG_JSON: { "path": "/events", "options": { ...Spout options },
//                "urlFile": FILE,       // re-read before every request: its URL's host
//                                       // replaces BASE_URL's (a restarted server's port)
//                "rewindPoll": true }   // every 2nd GET /poll asks with after=0 (a stale
//                                       // cache replaying old events): dedupe must drop them
//
// Prints one JSON object per line: {"status"}, {"ready"} (first 'open' or 'polling'),
// {"event"}, {"control"}, {"retry"}, {"request"}, {"response"}; and {"done"} (with wire
// statistics) after stdin ends, when the client is closed and the script exits.

import { readFileSync } from 'node:fs';
import { Spout, SseParser } from '../../examples/client/spout.js';

const [base, configText] = process.argv.slice(2);
if (!base) {
  console.error('usage: node node.mjs BASE_URL [CONFIG_JSON]');
  process.exit(2);
}
const config = JSON.parse(configText || '{}');
const t0 = Date.now();
const now = () => Date.now() - t0;
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n');

/** What came over the wire on SSE responses, parsed independently of the client. */
const wire = { streams: 0, frames: 0, batch: 0, compressed: 0, heartbeats: 0 };
let polls = 0;

async function countWire(stream) {
  const parser = new SseParser();
  const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const before = parser.comments;
      for (const f of parser.push(value)) {
        wire.frames++;
        if (f.type === 'batch') wire.batch++;
        if (f.data.startsWith('{"compressed":true')) wire.compressed++;
      }
      wire.heartbeats += parser.comments - before;
    }
  } catch {
    // aborted with the client's request
  }
}

async function testFetch(input, init = {}) {
  const url = new URL(String(input));
  if (config.urlFile) {
    const current = new URL(readFileSync(config.urlFile, 'utf8').trim());
    url.protocol = current.protocol;
    url.host = current.host;
  }
  const headers = init.headers || {};
  let rewound = false;
  if (config.rewindPoll && url.pathname.endsWith('/poll') && ++polls % 2 === 0) {
    url.searchParams.set('after', '0');
    rewound = true;
  }
  const request = {
    path: url.pathname,
    query: Object.fromEntries([...url.searchParams.keys()].map((k) => [k, url.searchParams.getAll(k)])),
    lastEventId: headers['Last-Event-ID'] ?? null,
    host: url.host,
    rewound,
    t: now(),
  };
  out({ request });
  const started = Date.now();
  const res = await fetch(url, init);
  const type = res.headers.get('content-type') || '';
  const response = { path: url.pathname, status: res.status, ms: Date.now() - started, rewound };
  if (type.startsWith('text/event-stream') && res.body) {
    wire.streams++;
    const [mine, theirs] = res.body.tee();
    countWire(mine);
    out({ response });
    return new Response(theirs, { status: res.status, statusText: res.statusText, headers: res.headers });
  }
  if (url.pathname.endsWith('/poll') && res.ok) {
    try {
      response.events = (await res.clone().json()).events.length;
    } catch {
      // the client sees the same failure
    }
  }
  out({ response });
  return res;
}

const client = new Spout(new URL(config.path ?? '/events', base).href, {
  topics: ['t'],
  ...(config.options || {}),
  fetch: testFetch,
});
out({ status: client.status, transport: client.transport, t: now() });
let ready = false;
client.onStatus((status) => {
  out({ status, transport: client.transport, t: now() });
  if (!ready && (status === 'open' || status === 'polling')) {
    ready = true;
    out({ ready: true, transport: client.transport });
  }
});
client.onRetry((retry) => out({ retry, t: now() }));
client.on('*', (data, ev) =>
  out({
    event: { id: ev.id, type: ev.type, topic: ev.topic ?? null, data, time: ev.time ?? null },
    lastEventId: client.lastEventId,
    t: now(),
  }),
);
for (const type of ['connected', 'reset', 'shutdown', 'overflow', 'revoked', 'replaced']) {
  client.on(type, (data) => out({ control: type, data, t: now() }));
}

// The Rust side closes stdin when it is done.
process.stdin.resume();
process.stdin.on('end', () => {
  client.close();
  out({ done: { lastEventId: client.lastEventId ?? null, status: client.status, transport: client.transport, wire } });
  process.exit(0);
});
