// A filter that tries to reach outside its sandbox on every call: first the
// network (fetch), then the filesystem (a dynamic import of /etc/passwd,
// which the engine's module loader would read from disk). Each attempt
// traps inside the component (the engine's wasi:http and filesystem are
// compiled out, their stubs are `unreachable`), so the `keep` call fails
// and the host counts a plugin error. Should an attempt ever return
// instead, the call still fails, loudly, rather than keeping or dropping
// events as if nothing happened.
//
// Written in TypeScript (build.mjs compiles .ts as it bundles), so the test
// suite builds a TypeScript plugin too.
// Build: node plugins/sdk-js/build.mjs tests/plugins-js/escape.ts -o tests/plugins-js/escape.wasm
// Which attempt runs: `?try=file` on the subscription (default: net);
// `?try=none` attempts nothing and keeps every event (the control: the
// plugin itself works, so a failed call is the sandbox's refusal).
import { filter, log } from '@spout/sdk';
import type { Subscription } from '@spout/sdk';

const attempts: Record<string, () => unknown> = {
  net: () => fetch('http://127.0.0.1:1/'),
  file: () => import(['', 'etc', 'passwd'].join('/')), // computed: the bundler must not inline it
};

export default filter({
  name: 'escape',
  keep(sub: Subscription): boolean {
    const what: string = sub.param('try') ?? 'net';
    if (what === 'none') return true;
    const attempt = attempts[what];
    if (!attempt) throw new Error(`escape: unknown attempt \`${what}\``);
    const got = attempt();
    log.error(`escape: ${what} attempt returned ${Object.prototype.toString.call(got)} instead of failing`);
    throw new Error(`escape: ${what} attempt was not refused`);
  },
});
