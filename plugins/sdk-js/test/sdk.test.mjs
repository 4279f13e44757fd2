// Builds the SDK's examples, the custom-filter twin and the escape plugin
// with build.mjs, then runs them on a stand-in host (host.mjs).
//   npm test            (from plugins/sdk-js, after npm ci; ~1 min)
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { load, batch, unbatch, sub, request } from './host.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const sdk = join(here, '..');
const repo = join(sdk, '..', '..');
const out = mkdtempSync(join(tmpdir(), 'spout-js-built-'));

/** Builds `source` (relative to the repository) with build.mjs. */
function build(source, ...flags) {
  const wasm = join(out, source.replace(/\W+/g, '_') + '.wasm');
  execFileSync(process.execPath, [join(sdk, 'build.mjs'), join(repo, source), '-o', wasm, ...flags], { stdio: 'inherit' });
  return wasm;
}

const wasm = {};
before(() => {
  wasm.onlyMine = build('examples/custom-filter/js/only-mine.js');
  wasm.requireJson = build('plugins/sdk-js/examples/require-json.js');
  wasm.bearer = build('plugins/sdk-js/examples/bearer-auth.js');
  wasm.escape = build('tests/plugins-js/escape.ts');
  wasm.globals = build('plugins/sdk-js/test/fixtures/globals.js', '--world', 'filter');
});

test('only-mine keeps the subscriber\'s and public events', async () => {
  const { exports } = await load(wasm.onlyMine);
  const d = JSON.parse(exports.lifecycle.describe());
  assert.equal(d.name, 'only-mine');
  exports.lifecycle.init('');
  const b = batch([
    { data: { owner: 'ann', n: 1 } },
    { data: { owner: 'bob', n: 2 } },
    { data: { public: true, n: 3 } },
    { data: new Uint8Array([0xff, 0xfe]) }, // not UTF-8: text is ''
  ]);
  assert.deepEqual([...exports.keep(sub('ann'), b)], [0, 2]);
  assert.deepEqual([...exports.keep(sub('bob'), b)], [1, 2]);
  assert.deepEqual([...exports.keep(sub('ann'), batch([]))], []);
});

test('require-json stamps events and refuses bad ones with 422', async () => {
  const { exports, setWallMs } = await load(wasm.requireJson);
  exports.lifecycle.init(JSON.stringify({ source: 'api' }));
  setWallMs(1234);
  const got = unbatch(exports.apply(batch([{ type: 'note', data: { a: 1 }, target: 'ann', id: 7 }, { type: 'x', topic: 't/1', data: {} }])));
  assert.deepEqual(got, [
    { id: 7n, topic: 'docs', type: 'note', data: '{"a":1,"received_at":1234,"source":"api"}', target: 'ann' },
    { id: 2n, topic: 't/1', type: 'x', data: '{"received_at":1234,"source":"api"}', target: undefined },
  ]);
  assert.throws(
    () => exports.apply(batch([{ type: 'ok', data: {} }, { data: { a: 1 } }, { type: 't', data: 'text' }])),
    (e) => {
      assert.deepEqual(e, { status: 422, reason: 'event #1: no `type`; event #2: data is not JSON' });
      return true;
    },
  );
  assert.throws(() => exports.lifecycle.init('{"sauce": 1}'), (e) => e === 'config: unknown key `sauce`');
  assert.throws(() => exports.lifecycle.init('{'), (e) => /^config: /.test(e));
});

test('bearer-auth maps tokens to principals and refuses the rest', async () => {
  const { exports } = await load(wasm.bearer);
  assert.throws(() => exports.lifecycle.init(''), (e) => e === 'config key `tokens`: list at least one token');
  exports.lifecycle.init(
    JSON.stringify({
      tokens: [
        { token: 'ann-token-0123456789', user: 'ann', topics: ['docs/**'] },
        { token: 'ops-token-0123456789', user: 'ops', topics: ['**'], publish: true },
      ],
    }),
  );
  const auth = (method, value) => exports.authenticate(request(method, value === undefined ? [] : [['authorization', value]]));
  assert.deepEqual(auth('GET', 'Bearer ann-token-0123456789'), {
    user: 'ann',
    topics: ['docs/**'],
    claims: '{"auth":"bearer","publish":false}',
  });
  assert.equal(auth('POST', 'bearer ops-token-0123456789').user, 'ops');
  const denied = (method, value, status, reason) =>
    assert.throws(() => auth(method, value), (e) => {
      assert.deepEqual(e, { status, reason });
      return true;
    });
  denied('GET', undefined, 401, 'missing `Authorization: Bearer <token>`');
  denied('GET', 'Basic abc', 401, 'missing `Authorization: Bearer <token>`');
  denied('GET', 'Bearer nope-nope-nope-nope', 401, 'unknown token');
  denied('POST', 'Bearer ann-token-0123456789', 403, 'ann may not publish');
  exports.onDisconnect({ id: 'c1', user: 'ann', path: '/events' });
});

test('escape: reaching the network or a file fails the call', async () => {
  for (const attempt of ['net', 'file']) {
    const { exports, logs } = await load(wasm.escape);
    exports.lifecycle.init('');
    assert.throws(() => exports.keep(sub('ann', [['try', attempt]]), batch([{ data: {} }])), WebAssembly.RuntimeError, attempt);
    assert.deepEqual(logs, [], `${attempt}: the attempt returned`);
  }
});

test('globals tell the truth; config, kv and log work', async () => {
  const { exports, logs, kv, setWallMs } = await load(wasm.globals);
  assert.deepEqual(JSON.parse(exports.lifecycle.describe()), {
    name: 'globals',
    version: '1.2.3',
    config_schema: { type: 'object', properties: { greeting: { type: 'string' } } },
  });
  assert.throws(() => exports.lifecycle.init('{"fail": true}'), (e) => e === 'refused: fail is set');
  assert.throws(() => exports.lifecycle.init('[1]'), (e) => e === 'config: expected a table (JSON object)');
  exports.lifecycle.init('{"greeting": "hello"}');
  setWallMs(1_800_000_000_123);
  exports.keep(sub('ann', [['where', 'a:eq:1']], '{"role":"admin"}'), batch([{ id: 42, timeMs: 99, topic: 'docs/a', type: 'note', data: { x: 1 }, target: 'ann' }]));
  assert.equal(logs.length, 2);
  assert.equal(logs[0][0], 'info');
  assert.match(logs[0][1], /^report /);
  const r = JSON.parse(logs[0][1].slice('report '.length));
  assert.equal(r.greeting, 'hello');
  assert.equal(r.now, 1_800_000_000_123);
  assert.equal(r.newDate, 1_800_000_000_123);
  assert.equal(r.dateFn, 'string');
  assert.equal(r.epoch, '1970-01-01T00:00:00.000Z');
  assert.equal(typeof r.perf.ok, 'number');
  assert.match(r.crypto.error, /no entropy/);
  assert.deepEqual(r.event, { id: 42, timeMs: 99, topic: 'docs/a', type: 'note', data: '{"x":1}', target: 'ann' });
  assert.equal(r.bytes, 7);
  assert.equal(r.param, 'a:eq:1');
  assert.deepEqual(r.claims, { role: 'admin' });
  assert.equal(r.kv, 'docs/a');
  assert.deepEqual(kv.get('last'), new TextEncoder().encode('docs/a'));
  assert.deepEqual(logs[1], ['warn', 'done']);
  // Math.random is seeded per instance from the host clocks, not replayed.
  const again = await load(wasm.globals);
  again.exports.lifecycle.init('');
  again.exports.keep(sub('bob'), batch([{ data: {} }]));
  const r2 = JSON.parse(again.logs[0][1].slice('report '.length));
  assert.notEqual(r2.random, r.random);
});
