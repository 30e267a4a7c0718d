/**
 * What the analysis of a pushed app reports for each module: its registered
 * functions with kind, visibility and validators (JSON text from the server
 * library's `exportArgs`/`exportReturns`). One definition for the two places
 * that run app code: the isolate bootstrap and the Node.js child of "use node"
 * modules. Plain JavaScript, because the child runs without a compiler.
 */

/**
 * The specs of the functions `ns` (a module namespace) registers, in name
 * order; `messageOf` turns an exception of a validator export into its message.
 */
export function functionSpecs(ns, messageOf) {
  const functions = [];
  for (const name of Object.keys(ns).sort()) {
    const fn = ns[name];
    if ((typeof fn !== "function" && typeof fn !== "object") || fn === null) continue;
    const kind = fn.isQuery
      ? "query"
      : fn.isMutation
        ? "mutation"
        : fn.isAction
          ? "action"
          : fn.isHttp
            ? "httpAction"
            : null;
    if (kind === null) continue;
    const spec = {
      name,
      kind,
      visibility: fn.isInternal ? "internal" : "public",
      args: null,
      returns: null,
    };
    try {
      spec.args = typeof fn.exportArgs === "function" ? fn.exportArgs() : null;
      spec.returns = typeof fn.exportReturns === "function" ? fn.exportReturns() : null;
    } catch (e) {
      spec.error = messageOf(e);
    }
    functions.push(spec);
  }
  return functions;
}
