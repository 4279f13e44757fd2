#!/usr/bin/env node
// Builds a JavaScript Spout plugin into a wasm component, in one command:
//
//     node plugins/sdk-js/build.mjs [--world filter] only-mine.js -o only-mine.wasm
//
// The source is bundled first (rolldown: `@spout/sdk` and npm packages are
// inlined; `spout:plugin/*` stay imports), then componentize-js builds the
// component against ../wit for the world (guessed from the `@spout/sdk`
// helper the source imports when --world is not given). No WASI feature of
// the JS engine is compiled in unless --wasi asks for it, so the component
// imports `spout:plugin/*` alone; the output is replaced atomically, so a
// running Spout reloads it once, complete.
import { componentize } from '@bytecodealliance/componentize-js';
import { rolldown } from 'rolldown';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));

/** Each world's own exports (besides `lifecycle`), as JS names. */
const WORLDS = {
  filter: ['keep'],
  transform: ['apply'],
  auth: ['authenticate', 'onDisconnect'],
  batch: ['merge'],
  compress: ['encode'],
  source: ['poll', 'onInput'],
};
const WASI_FEATURES = ['stdio', 'random', 'clocks', 'http', 'fetch-event'];

const usage = `usage: node build.mjs [--world WORLD] SOURCE.js -o OUT.wasm [--wit DIR] [--wasi FEATURES] [--keep-bundle]

  --world WORLD    ${Object.keys(WORLDS).join(', ')} (default: the @spout/sdk helper SOURCE imports)
  -o, --out FILE   the component to write (default: SOURCE with .wasm)
  --wit DIR        the WIT package (default: plugins/wit of the repository)
  --wasi LIST      JS engine features to compile in, comma-separated:
                   stdio (console.*), random (Math.random, crypto), clocks
                   (Date.now, performance.now); default none: the component
                   then imports spout:plugin/* only. (http is refused by Spout.)
  --keep-bundle    leave the bundled JS next to the output (OUT.bundle.js)`;

let args;
try {
  args = parseArgs({
    allowPositionals: true,
    options: {
      world: { type: 'string' },
      out: { type: 'string', short: 'o' },
      wit: { type: 'string' },
      wasi: { type: 'string', default: '' },
      'keep-bundle': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
} catch (e) {
  fail(`${e.message}\n${usage}`);
}
if (args.values.help) {
  console.log(usage);
  process.exit(0);
}
if (args.positionals.length !== 1) fail(usage);

const source = resolve(args.positionals[0]);
const out = resolve(args.values.out ?? source.replace(/\.[mc]?[jt]s$/, '') + '.wasm');
// The repository's plugins/wit, next to this script's folder (a copy of the
// SDK installed elsewhere, e.g. node_modules/@spout/sdk, needs --wit).
const witPath = resolve(args.values.wit ?? join(here, '..', 'wit'));
if (!existsSync(join(witPath, 'spout.wit'))) fail(`no spout.wit in ${witPath}: pass --wit DIR (the repository's plugins/wit)`);
let sourceText;
try {
  sourceText = readFileSync(source, 'utf8');
} catch (e) {
  fail(`cannot read ${source}: ${e.message}`);
}
const world = args.values.world ?? guessWorld(sourceText);
if (!WORLDS[world]) fail(`unknown world \`${world}\` (one of: ${Object.keys(WORLDS).join(', ')})`);
const enabled = args.values.wasi.split(',').map((s) => s.trim()).filter(Boolean);
for (const f of enabled) {
  if (!WASI_FEATURES.includes(f) || f === 'http' || f === 'fetch-event') {
    fail(`--wasi: \`${f}\` is not one of stdio, random, clocks (Spout refuses wasi:http)`);
  }
}

const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'spout-js-'));
try {
  // The entry re-exports the world's exports from the module's default
  // export (what the helpers return) or its named exports.
  const names = ['lifecycle', ...WORLDS[world]];
  const entry = join(work, 'entry.js');
  // The prelude (prelude.js) runs first: host clocks for Date and
  // performance, no fake crypto randomness, console.* to the host log, for
  // the features left out.
  const prelude = join(work, 'prelude.js');
  const on = (f) => enabled.includes(f);
  writeFileSync(
    prelude,
    `import { install } from ${JSON.stringify(join(here, 'prelude.js'))};\n` +
      `install(${JSON.stringify({ clocks: on('clocks'), random: on('random'), stdio: on('stdio') })});\n`,
  );
  writeFileSync(
    entry,
    [
      `import ${JSON.stringify(prelude)};`,
      // The helper's result as the default export, or named exports.
      /\bexport\s+default\b|\bas\s+default\b/.test(sourceText)
        ? `import p from ${JSON.stringify(source)};`
        : `import * as p from ${JSON.stringify(source)};`,
      ...names.map(
        (n) =>
          `if (p.${n} === undefined) throw new Error(${JSON.stringify(
            `${basename(source)} does not export \`${n}\` (the ${world} world needs: ${names.join(', ')}); export default the result of the @spout/sdk helper`,
          )});`,
      ),
      ...names.map((n) => `export const ${n} = p.${n};`),
      '',
    ].join('\n'),
  );

  const bundle = await rolldown({
    input: entry,
    platform: 'neutral',
    external: [/^spout:/],
    // `@spout/sdk` is always this SDK (whatever a tsconfig `paths` or a
    // node_modules copy says), so the helpers match the build's prelude.
    plugins: [
      {
        name: 'spout-sdk',
        resolveId(id) {
          return id === '@spout/sdk' ? join(here, 'index.js') : null;
        },
      },
    ],
    logLevel: 'warn',
    onLog(level, log) {
      console.error(`build: ${level}: ${log.message}`);
    },
  });
  const { output } = await bundle.generate({ format: 'esm', codeSplitting: false });
  await bundle.close();
  const bundled = join(work, `${basename(out, '.wasm')}.js`);
  writeFileSync(bundled, output[0].code);
  if (args.values['keep-bundle']) writeFileSync(out.replace(/\.wasm$/, '') + '.bundle.js', output[0].code);

  const { component, imports } = await componentize({
    sourcePath: bundled,
    witPath,
    worldName: world,
    disableFeatures: WASI_FEATURES.filter((f) => !enabled.includes(f)),
  });
  const foreign = imports.map(([iface]) => iface).filter((i) => !i.startsWith('spout:plugin/'));
  if (enabled.length === 0 && foreign.length) {
    throw new Error(`the component imports ${[...new Set(foreign)].join(', ')}: not a pure spout:plugin component`);
  }
  const tmp = `${out}.tmp-${process.pid}`;
  writeFileSync(tmp, component);
  renameSync(tmp, out);
  const mib = (component.length / (1 << 20)).toFixed(1);
  console.error(`built ${out} (${world}, ${mib} MiB) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
} catch (e) {
  console.error(`build failed: ${e instanceof Error ? e.message : e}`);
  process.exitCode = 1;
} finally {
  rmSync(work, { recursive: true, force: true });
}

/** The world of the `@spout/sdk` helper the source imports, if exactly one. */
function guessWorld(text) {
  const found = new Set();
  for (const m of text.matchAll(/import\s*\{([^}]*)\}\s*from\s*['"]@spout\/sdk['"]/g)) {
    for (const name of m[1].split(',')) {
      const n = name.trim().split(/\s+as\s+/)[0];
      if (n in WORLDS) found.add(n);
    }
  }
  if (found.size === 1) return [...found][0];
  fail(`cannot tell the world from ${basename(source)}: pass --world (${Object.keys(WORLDS).join(', ')})`);
}

function fail(msg) {
  console.error(msg);
  process.exit(1);
}
