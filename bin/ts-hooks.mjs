// Module hooks that run Tessera's TypeScript sources: strip types with
// esbuild, one file at a time. tsx would do this too, but it always applies
// esbuild's keepNames, which wraps every named function expression in a
// call to Object.defineProperty when it is created; sources that are not
// minified keep their names without it, and on the server's hot paths the
// wrapping cost about a tenth of the CPU per call (see src/cli/README.md).
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { transform } from "esbuild";

const isRelativeOrFile = (s) => s.startsWith(".") || s.startsWith("/") || s.startsWith("file:");

export async function resolve(specifier, context, next) {
  try {
    return await next(specifier, context);
  } catch (e) {
    if (e?.code !== "ERR_MODULE_NOT_FOUND" || !isRelativeOrFile(specifier)) throw e;
    // Sources import each other by their compiled names (`./x.js` for
    // `./x.ts`); Convex apps (the bench's, convex/_generated) leave the
    // file's extension out, as a bundler allows. (Not handled: directory
    // imports, and specifiers with a query or a hash.)
    const candidates = specifier.endsWith(".js")
      ? [`${specifier.slice(0, -3)}.ts`]
      : /\.[cm]?[jt]s$/.test(specifier)
        ? []
        : [".ts", ".js"].map((suffix) => specifier + suffix);
    for (const candidate of candidates) {
      try {
        return await next(candidate, context);
      } catch {}
    }
    throw e;
  }
}

export async function load(url, context, next) {
  if (!url.startsWith("file:") || !(url.endsWith(".ts") || url.endsWith(".mts")))
    return next(url, context);
  const path = fileURLToPath(url);
  const { code } = await transform(await readFile(path, "utf8"), {
    loader: "ts",
    format: "esm",
    target: "node20",
    sourcemap: "inline",
    sourcefile: path,
    // As tsconfig.json's target (ES2022) implies, so that classes behave as tsc compiles them.
    tsconfigRaw: { compilerOptions: { useDefineForClassFields: true } },
  });
  return { format: "module", source: code, shortCircuit: true };
}
