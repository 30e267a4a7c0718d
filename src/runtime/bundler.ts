/**
 * Builds a module set from a `convex/` folder with esbuild, with the options
 * the official CLI uses for the isolate runtime (ESM, code splitting with
 * shared chunks under `_deps/`, minified syntax and identifiers with names
 * kept, source maps). Tests and tools use it; real pushes arrive already
 * bundled by the CLI.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";
import * as esbuild from "esbuild";
import { hasUseNodeDirective, type ModuleSet, type ModuleSource } from "./modules.js";

const ENTRY_EXTENSIONS = [".js", ".mjs", ".cjs", ".ts", ".tsx", ".mts", ".cts", ".jsx"];

/** Entry points the way the CLI picks them: every JS/TS file except `_generated/`, schema, dotfiles and multi-dot names. */
export function entryPoints(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const full = join(d, name);
      const rel = relative(dir, full);
      if (statSync(full).isDirectory()) {
        if (name === "node_modules" || name.startsWith(".")) continue;
        walk(full);
        continue;
      }
      if (!ENTRY_EXTENSIONS.some((e) => rel.endsWith(e))) continue;
      if (rel.startsWith(`_generated${sep}`) || name.startsWith(".") || name.startsWith("#"))
        continue;
      if (name === "schema.ts" || name === "schema.js") continue;
      if ((name.match(/\./g) ?? []).length > 1 || rel.includes(" ")) continue;
      out.push(full);
    }
  };
  walk(dir);
  return out;
}

export interface BundleOptions {
  /** Package aliases, e.g. `{ convex: "convex-1-17" }` to build against another version of the library (tests). */
  alias?: Record<string, string>;
}

async function build(
  dir: string,
  entries: string[],
  platform: "browser" | "node",
  chunks: string,
  options: BundleOptions = {},
): Promise<ModuleSource[]> {
  if (entries.length === 0) return [];
  const result = await esbuild.build({
    entryPoints: entries,
    bundle: true,
    platform,
    format: "esm",
    target: "esnext",
    jsx: "automatic",
    outdir: "out",
    outbase: dir,
    conditions: ["convex", "module"],
    write: false,
    sourcemap: true,
    sourcesContent: false,
    splitting: true,
    chunkNames: join(chunks, "[hash]"),
    treeShaking: true,
    minifySyntax: true,
    minifyIdentifiers: true,
    minifyWhitespace: false,
    keepNames: true,
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "silent",
    ...(options.alias ? { alias: options.alias } : {}),
  });
  const maps = new Map<string, string>();
  const modules: ModuleSource[] = [];
  for (const file of result.outputFiles) {
    const rel = relative("out", relative(process.cwd(), file.path)).split(sep).join("/");
    if (rel.endsWith(".map")) maps.set(rel.slice(0, -4), file.text);
    else
      modules.push({
        path: rel,
        source: file.text,
        environment: platform === "node" ? "node" : "isolate",
      });
  }
  for (const m of modules) m.sourceMap = maps.get(m.path);
  return modules;
}

/** Bundles a `convex/` folder into the module set a push would carry. */
export async function bundleConvexDir(
  dir: string,
  options: BundleOptions = {},
): Promise<ModuleSet> {
  const isolate: string[] = [];
  const node: string[] = [];
  for (const entry of entryPoints(dir)) {
    (hasUseNodeDirective(readFileSync(entry, "utf8")) ? node : isolate).push(entry);
  }
  return [
    ...(await build(dir, isolate, "browser", "_deps", options)),
    ...(await build(dir, node, "node", join("_deps", "node"), options)),
  ];
}

/** Bundles `schema.ts` on its own (the CLI sends it separately for schema evaluation). */
export async function bundleSchema(dir: string): Promise<ModuleSource | null> {
  const entry = ["schema.ts", "schema.js"].map((n) => join(dir, n)).find(isFile);
  if (!entry) return null;
  const [module] = await build(dir, [entry], "browser", "_deps");
  return module ?? null;
}

/** Bundles `auth.config.ts` on its own, one module named `auth.config.js` (the CLI sends it with the modules). */
export async function bundleAuthConfig(dir: string): Promise<ModuleSource | null> {
  const found = ["auth.config.ts", "auth.config.js"].map((n) => join(dir, n)).filter(isFile);
  if (found.length === 0) return null;
  if (found.length > 1) throw new Error(`Found both ${found.join(" and ")}, choose one.`);
  const modules = await build(dir, found, "browser", "_deps");
  const module = modules.find((m) => m.path === "auth.config.js");
  if (module === undefined || modules.length > 1)
    throw new Error("auth.config.ts must bundle into one module (no dynamic imports)");
  return module;
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}
