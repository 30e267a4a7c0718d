/**
 * A module set: what a push carries for the isolate runtime, as the official
 * CLI bundles it — ES modules (one per function file, shared chunks under
 * `_deps/`) with their source maps, keyed by path relative to `convex/`.
 */
export interface ModuleSource {
  /** Path relative to the functions directory, POSIX separators, e.g. `messages.js` or `_deps/ABC123.js`. */
  path: string;
  source: string;
  sourceMap?: string;
  /** Where the module runs: the V8 isolate runtime or Node.js (`"use node"` files). */
  environment: "isolate" | "node";
}

export type ModuleSet = ReadonlyArray<ModuleSource>;

/** The module path of a function path: `messages:list` → `messages.js`, `dir/file` → `dir/file.js`. */
export function modulePathOf(functionPath: string): { module: string; exportName: string } {
  const colon = functionPath.lastIndexOf(":");
  const file = colon === -1 ? functionPath : functionPath.slice(0, colon);
  const exportName = colon === -1 ? "default" : functionPath.slice(colon + 1);
  const module = /\.[cm]?js$/.test(file) ? file : `${file}.js`;
  return { module, exportName };
}

/** Whether a module's source starts with a `"use node"` directive (before any other statement). */
export function hasUseNodeDirective(source: string): boolean {
  // Skip a shebang, whitespace, comments and other directives, then look for "use node".
  const directive =
    /^(?:#![^\n]*\n)?(?:\s+|\/\/[^\n]*\n|\/\*[\s\S]*?\*\/|(["'])use (?!node)[^"']*\1;?)*(["'])use node\2/;
  return directive.test(source);
}
