/**
 * Host side: bundles the prelude (globals.ts and what it imports, including
 * whatwg-url and @noble/hashes) into one classic script with esbuild. The
 * script is built once per process and cached.
 *
 * The script runs in every fresh context, so the less it does when it runs
 * the better: the modules globals.ts loads with require() become functions
 * called on first use of their globals (see globals.ts).
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

let cached: Promise<string> | undefined;

/** The prelude script text (an IIFE); evaluate it in a fresh context before anything else. */
export function buildPrelude(): Promise<string> {
  if (cached === undefined) {
    cached = build().catch((err: unknown) => {
      cached = undefined;
      throw err;
    });
  }
  return cached;
}

/** A prelude source next to this file: `name`.ts from sources (vitest, bin/ts-register.mjs), `name`.js from dist/. */
function sourceFile(name: string): string {
  const dir = dirname(fileURLToPath(import.meta.url));
  for (const file of [`${name}.ts`, `${name}.js`]) {
    const path = join(dir, file);
    if (existsSync(path)) return path;
  }
  throw new Error(`prelude source ${name}.ts or ${name}.js not found in ${dir}`);
}

/** Sends whatwg-url's `require("tr46")` to tr46_fast, which loads the real tr46 only for non-ASCII domains. */
const fastTr46: esbuild.Plugin = {
  name: "tessera-fast-tr46",
  setup(build) {
    build.onResolve({ filter: /^tr46$/ }, () => ({ path: sourceFile("tr46_fast") }));
  },
};

/**
 * Options shared by the prelude build and the prebundled modules. Platform
 * "neutral" looks at no package.json main fields by default; CommonJS builds
 * come first since esbuild wraps a CommonJS module whole in a function called
 * on first require(), while an ES module required from CommonJS code (as
 * tr46 requires punycode) gets its exports object built when the script runs.
 */
const common = {
  bundle: true,
  platform: "neutral",
  target: "es2022",
  mainFields: ["main", "module"],
  minify: false,
  sourcemap: false,
  write: false,
  logLevel: "silent",
  charset: "utf8",
} satisfies esbuild.BuildOptions;

/**
 * Modules the prelude loads lazily with require() that are built first, on
 * their own, into one CommonJS module each: the prelude script then holds one
 * lazily called function for each rather than one per module inside it
 * (whatwg-url is some twenty modules, @noble/hashes five), which every fresh
 * context would create when the script runs, and no exports object built
 * then (an ES module loaded with require() gets one).
 */
const PREBUNDLED = [
  /^whatwg-url$/,
  /^@noble\/hashes\/(?:legacy|sha2)\.js$/,
  /^web-streams-polyfill$/,
];

/**
 * Globals a prebundled module sees replaced by a prelude module's exports
 * (esbuild `inject`). web-streams-polyfill transfers the buffers of byte
 * stream chunks with `structuredClone(buffer, { transfer })` when that
 * exists; the prelude's structuredClone cannot detach a buffer (no engine
 * hook in V8 11.3) and would copy every chunk, so the polyfill sees none and
 * uses its own fallback for engines without transfer (the same buffer).
 */
const INJECTED: Record<string, string> = { "web-streams-polyfill": "streams_inject" };

const prebundle: esbuild.Plugin = {
  name: "tessera-prebundle",
  setup(build) {
    for (const filter of PREBUNDLED) {
      build.onResolve({ filter }, (args) => ({ path: args.path, namespace: "tessera-prebundle" }));
    }
    build.onLoad({ filter: /.*/, namespace: "tessera-prebundle" }, async (args) => {
      const resolveDir = dirname(sourceFile("globals"));
      const result = await esbuild.build({
        ...common,
        stdin: { contents: `module.exports = require(${JSON.stringify(args.path)});`, resolveDir },
        format: "cjs",
        plugins: [fastTr46],
        inject: args.path in INJECTED ? [sourceFile(INJECTED[args.path]!)] : [],
      });
      const file = result.outputFiles[0];
      if (file === undefined) throw new Error(`esbuild produced no output for ${args.path}`);
      return { contents: file.text, loader: "js", resolveDir };
    });
  },
};

async function build(): Promise<string> {
  const result = await esbuild.build({
    ...common,
    entryPoints: [sourceFile("globals")],
    format: "iife",
    plugins: [fastTr46, prebundle],
  });
  const file = result.outputFiles[0];
  if (file === undefined) throw new Error("esbuild produced no output for the prelude");
  return file.text;
}
