// Runs before the plugin's own code (build.mjs imports it first) and makes
// the JS engine's globals tell the truth inside a Spout component.
//
// A component is built by running the module once (Wizer) and snapshotting
// the heap; with the engine's WASI features left out (the default: the
// component then imports spout:plugin/* alone), what would read the outside
// world reads the snapshot or traps instead:
//   - Date.now() and `new Date()` return the build time, forever;
//   - performance.now() traps (`unreachable`);
//   - Math.random() and crypto.getRandomValues() replay the same values in
//     every instance (seeded at build time);
//   - console.* prints nothing.
// So, for each feature left out: clocks come from the host's `clock`
// import, Math.random is reseeded from it (not cryptographic), crypto
// randomness throws (there is no entropy to give), and console.* goes to
// the host log.
import { monotonicNs, wallMs } from 'spout:plugin/clock@0.1.0';
import { write } from 'spout:plugin/log@0.1.0';

/** @param {{clocks: boolean, random: boolean, stdio: boolean}} enabled */
export function install(enabled) {
  if (!enabled.clocks) {
    const RealDate = Date;
    const now = () => Number(wallMs());
    // `new Date()` and `Date()` read the host clock; every other form is the
    // engine's own (same prototype, statics inherited).
    function HostDate(...args) {
      if (!new.target) return new RealDate(now()).toString();
      return Reflect.construct(RealDate, args.length === 0 ? [now()] : args, new.target);
    }
    Object.setPrototypeOf(HostDate, RealDate);
    HostDate.prototype = RealDate.prototype;
    HostDate.now = now;
    globalThis.Date = HostDate;
    if (typeof performance === 'object' && performance !== null) {
      let origin;
      Object.defineProperty(performance, 'now', {
        configurable: true,
        writable: true,
        value() {
          const ns = monotonicNs();
          origin ??= ns;
          return Number(ns - origin) / 1e6;
        },
      });
    }
  }
  if (!enabled.random) {
    // Not cryptographic (neither is the engine's), but no longer the same
    // sequence in every instance: sfc32 seeded from the host clocks on
    // first use.
    let a, b, c, d;
    Math.random = function random() {
      if (a === undefined) {
        const m = monotonicNs();
        const w = wallMs();
        a = Number(m & 0xffffffffn) | 0;
        b = Number((m >> 32n) & 0xffffffffn) | 0;
        c = Number(w & 0xffffffffn) | 0;
        d = 1;
        for (let i = 0; i < 15; i++) random();
      }
      a |= 0; b |= 0; c |= 0; d |= 0;
      const t = (((a + b) | 0) + d) | 0;
      d = (d + 1) | 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) | 0;
      c = (c << 21) | (c >>> 11);
      c = (c + t) | 0;
      return (t >>> 0) / 4294967296;
    };
  }
  if (!enabled.random && typeof crypto === 'object' && crypto !== null) {
    const refuse = (what) =>
      function () {
        throw new Error(`${what}: no entropy in this component (its snapshot would replay the same bytes); build with --wasi random`);
      };
    for (const what of ['getRandomValues', 'randomUUID']) {
      try {
        Object.defineProperty(crypto, what, { configurable: true, writable: true, value: refuse(`crypto.${what}`) });
      } catch {
        // Not configurable: leave it.
      }
    }
  }
  if (!enabled.stdio && typeof console === 'object' && console !== null) {
    const show = (v) => {
      if (typeof v === 'string') return v;
      if (v instanceof Error) return v.stack ? `${v}\n${v.stack}` : String(v);
      try {
        const j = JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}` : x));
        return j === undefined ? String(v) : j;
      } catch {
        return String(v);
      }
    };
    const to = (level) => (...args) => write(level, args.map(show).join(' '));
    console.log = to('info');
    console.info = to('info');
    console.warn = to('warn');
    console.error = to('error');
    console.debug = to('debug');
    console.trace = to('trace');
  }
}
