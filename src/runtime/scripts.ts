/**
 * Scripts that run inside isolates are written in TypeScript under
 * `bootstrap/` (and `prelude/`) and bundled into plain scripts with esbuild
 * on first use. This works from the TypeScript sources and from the compiled
 * `dist/` alike: the entry is looked up next to this file.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const cache = new Map<string, Promise<string>>();

/** Bundles `<dir>/<entry>.ts` (or `.js` in dist/) relative to this module into an IIFE script. */
export function buildIsolateScript(relativeEntry: string): Promise<string> {
  let script = cache.get(relativeEntry);
  if (!script) {
    script = (async () => {
      const base = fileURLToPath(new URL(relativeEntry, import.meta.url));
      const entry = [`${base}.ts`, `${base}.js`].find((p) => existsSync(p));
      if (!entry)
        throw new Error(`isolate script ${relativeEntry} not found next to ${import.meta.url}`);
      const result = await esbuild.build({
        entryPoints: [entry],
        bundle: true,
        write: false,
        format: "iife",
        platform: "neutral",
        target: "es2022",
        logLevel: "silent",
      });
      return result.outputFiles[0]!.text;
    })();
    cache.set(relativeEntry, script);
  }
  return script;
}

export function buildBootstrap(): Promise<string> {
  return buildIsolateScript("./bootstrap/index");
}
