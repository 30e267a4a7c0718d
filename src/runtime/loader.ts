/**
 * Turns a pushed module set into one script for the isolate: every isolate
 * module is linked (imports between modules resolved inside the set) and
 * wrapped so that evaluating the script defines `globalThis.__tessera_app`
 * with each module's namespace. The script is evaluated in each context the
 * runtime makes (appRuntime.ts), with the deployment's frozen time and seed,
 * and instrumented (instrument.ts, on a thread of its own: instrumentThread.ts)
 * so that contexts can be reused safely.
 *
 * Linking is done by esbuild over an in-memory file system; the CLI's source
 * maps are chained into the script's map, so stack traces point at the
 * user's TypeScript.
 */
import { isBuiltin } from "node:module";
import { posix } from "node:path";
import { originalPositionFor, TraceMap } from "@jridgewell/trace-mapping";
import * as esbuild from "esbuild";
import { instrumentOffThread } from "./instrumentThread.js";
import type { ModuleSet, ModuleSource } from "./modules.js";

export class ModuleLoadError extends Error {
  override name = "ModuleLoadError";
}

export interface LinkedApp {
  /** Script that defines `globalThis.__tessera_app = { modules: { [path]: namespace } }`. */
  script: string;
  /** Source map of `script`, chained through the pushed modules' own maps. */
  sourceMap: string;
  /** Paths of the isolate modules it contains (entry modules, not chunks). */
  modulePaths: string[];
  /**
   * Whether a context may serve several executions of this app (see
   * instrument.ts; the runtime also checks the imported state when it seals
   * a context), and if not, why.
   */
  reuse: { possible: true } | { possible: false; reason: string };
  /**
   * Describes why an execution tainted its context (the guard's reason: a
   * site id of the instrumentation, or the name of a built-in), with the
   * user's file and line where known.
   */
  describeTaint(reason: number | string): string;
}

const NAMESPACE = "tessera-module";
const ENTRY = "tessera-entry";
export const APP_SCRIPT_NAME = "tessera:app.js";
// esbuild quotes the offending text in its messages: a malformed source map of
// many megabytes would otherwise come back whole in the push's 400.
const MAX_LOAD_ERRORS = 20;
const MAX_LOAD_ERROR_CHARS = 500;

function clip(text: string, max: number): string {
  return text.length <= max
    ? text
    : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

function isNodeBuiltin(specifier: string): boolean {
  return specifier.startsWith("node:") || isBuiltin(specifier);
}

function withInlineMap(module: ModuleSource): string {
  const source = module.source.replace(/\n\/\/# sourceMappingURL=[^\n]*\s*$/, "\n");
  if (!module.sourceMap) return source;
  return `${source}\n//# sourceMappingURL=data:application/json;base64,${Buffer.from(module.sourceMap).toString("base64")}\n`;
}

/**
 * Links the isolate modules of a module set into one script. Fails with a
 * `ModuleLoadError` naming the file and the import when a module imports a
 * Node.js built-in (only `"use node"` files may) or something that is not in
 * the set.
 */
export async function linkModules(modules: ModuleSet): Promise<LinkedApp> {
  const byPath = new Map<string, ModuleSource>();
  for (const m of modules) {
    if (m.environment !== "isolate") continue;
    if (
      !/^[^/].*\.[cm]?js$/.test(m.path) ||
      m.path.split("/").some((p) => p === ".." || p === ".")
    ) {
      throw new ModuleLoadError(`Invalid module path ${JSON.stringify(m.path)}`);
    }
    byPath.set(m.path, m);
  }
  // Chunks are linked as dependencies; entry modules are the function files.
  const entries = [...byPath.keys()].filter((p) => !p.startsWith("_deps/")).sort();
  const entrySource = [
    ...entries.map((p, i) => `import * as m${i} from ${JSON.stringify(`${NAMESPACE}:${p}`)};`),
    "Object.defineProperty(globalThis, '__tessera_app', { value: { modules: {",
    ...entries.map((p, i) => `  ${JSON.stringify(p)}: m${i},`),
    "} }, enumerable: false });",
  ].join("\n");

  const problems: string[] = [];
  const plugin: esbuild.Plugin = {
    name: "tessera-modules",
    setup(build) {
      build.onResolve({ filter: /.*/ }, (args) => {
        if (args.kind === "entry-point") return { path: ENTRY, namespace: ENTRY };
        if (args.path.startsWith(`${NAMESPACE}:`)) {
          return { path: args.path.slice(NAMESPACE.length + 1), namespace: NAMESPACE };
        }
        const importer = args.importer;
        if (args.path.startsWith("./") || args.path.startsWith("../")) {
          const resolved = posix.normalize(posix.join(posix.dirname(importer), args.path));
          if (byPath.has(resolved)) return { path: resolved, namespace: NAMESPACE };
          problems.push(
            `${importer} imports ${JSON.stringify(args.path)}, which is not among the pushed modules`,
          );
          return { path: args.path, external: true };
        }
        if (isNodeBuiltin(args.path)) {
          problems.push(
            `${importer} imports the Node.js built-in ${JSON.stringify(args.path)}: only files that start with "use node" can use Node.js APIs (see https://docs.convex.dev/functions/runtimes)`,
          );
        } else {
          problems.push(
            `${importer} imports ${JSON.stringify(args.path)}, which is not among the pushed modules (the CLI bundles packages into the modules it pushes)`,
          );
        }
        return { path: args.path, external: true };
      });
      build.onLoad({ filter: /.*/, namespace: ENTRY }, () => ({
        contents: entrySource,
        loader: "js",
      }));
      build.onLoad({ filter: /.*/, namespace: NAMESPACE }, (args) => ({
        contents: withInlineMap(byPath.get(args.path)!),
        loader: "js",
      }));
    },
  };

  let result: esbuild.BuildResult & { outputFiles: esbuild.OutputFile[] };
  try {
    result = await esbuild.build({
      entryPoints: [ENTRY],
      bundle: true,
      write: false,
      format: "iife",
      platform: "neutral",
      target: "esnext",
      sourcemap: "external",
      outfile: APP_SCRIPT_NAME,
      // ES modules are strict code; so is the script that links them.
      banner: { js: '"use strict";' },
      plugins: [plugin],
      logLevel: "silent",
      treeShaking: false,
    });
  } catch (e) {
    const errors = (e as { errors?: esbuild.Message[] }).errors;
    const detail = errors?.length
      ? errors
          .slice(0, MAX_LOAD_ERRORS)
          .map(
            (m) =>
              `${m.location ? `${m.location.file}:${m.location.line}: ` : ""}${clip(m.text, MAX_LOAD_ERROR_CHARS)}`,
          )
          .concat(
            errors.length > MAX_LOAD_ERRORS
              ? [`…and ${errors.length - MAX_LOAD_ERRORS} more errors`]
              : [],
          )
          .join("\n")
      : String(e);
    throw new ModuleLoadError(`Failed to load the pushed modules:\n${detail}`);
  }
  if (problems.length > 0) throw new ModuleLoadError(problems.join("\n"));
  const linked = result.outputFiles.find((f) => !f.path.endsWith(".map"))!.text;
  const linkedMap = result.outputFiles.find((f) => f.path.endsWith(".map"))!.text;
  // Hundreds of milliseconds of synchronous work for a typical app: not on this thread.
  const instrumented = await instrumentOffThread(linked, linkedMap);
  return {
    script: instrumented.code,
    sourceMap: instrumented.sourceMap,
    modulePaths: entries,
    reuse: instrumented.reusable
      ? { possible: true }
      : { possible: false, reason: instrumented.reason ?? "unknown" },
    describeTaint: (reason) => describeTaint(reason, linked, linkedMap, instrumented.sites),
  };
}

function describeTaint(
  reason: number | string,
  linked: string,
  linkedMap: string,
  sites: number[],
): string {
  if (typeof reason === "string") return reason;
  const offset = sites[reason];
  if (offset === undefined) return `site ${reason}`;
  let line = 1;
  let lineStart = 0;
  for (let i = linked.indexOf("\n"); i !== -1 && i < offset; i = linked.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  const pos = originalPositionFor(new TraceMap(linkedMap), { line, column: offset - lineStart });
  return pos.source === null
    ? `a write at ${APP_SCRIPT_NAME}:${line}:${offset - lineStart + 1}`
    : `a write at ${pos.source}:${pos.line}:${(pos.column ?? 0) + 1}`;
}
