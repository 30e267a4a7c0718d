/**
 * Finds the calls of esbuild's `__name` helper that name a function made on
 * the spot, so the linker can give the function its name as it is created.
 *
 * The official CLI bundles with `keepNames`, so every function expression
 * whose name minification would lose is wrapped: `__name(() => …, "get")`,
 * where the helper calls `Object.defineProperty(fn, "name", {value,
 * configurable: true})`. V8 makes that slow (~0.7 µs a call here, against
 * ~20 ns for the closure itself: the function's map is copied), and the
 * `convex` library makes a dozen such closures per execution (`ctx.db`,
 * query builders). `({ "get": () => … })["get"]` gives the same function the
 * same name and the same property (non-writable, non-enumerable,
 * configurable) by the language's own naming of anonymous functions.
 *
 * Only provable cases are rewritten: the helper is a never-reassigned binding
 * whose body is exactly that `defineProperty` call on a never-reassigned
 * binding of the global `Object.defineProperty`; the call passes an anonymous
 * function or arrow expression and a string literal. Named functions and
 * classes keep the call (their naming is not the same). One difference
 * remains: a rewritten call reached before the helper's `var` is initialised
 * no longer throws (esbuild puts its helpers first, so bundles never do).
 */

type Scope = import("eslint-scope").Scope;
type ScopeManager = import("eslint-scope").ScopeManager;
type Variable = import("eslint-scope").Variable;

/** ESTree nodes as acorn produces them (instrument.ts's type, loosely). */
interface Node {
  type: string;
  start: number;
  end: number;
  [key: string]: unknown;
}

/** One call to rewrite: `[start, fnStart)` and `[fnEnd, end)` become the object literal around the function. */
export interface NameCall {
  start: number;
  fnStart: number;
  fnEnd: number;
  end: number;
  name: string;
}

const isIdentifier = (node: unknown, name?: string): node is Node & { name: string } =>
  (node as Node | undefined)?.type === "Identifier" &&
  (name === undefined || (node as { name: string }).name === name);

const isTrue = (node: Node): boolean =>
  (node.type === "Literal" && node.value === true) ||
  // minified: `!0`
  (node.type === "UnaryExpression" &&
    node.operator === "!" &&
    (node.argument as Node).type === "Literal" &&
    (node.argument as Node).value === 0);

/** What each identifier that is a reference resolves to (null: a global). */
type Resolver = (identifier: Node) => Variable | null | undefined;

/** A binding with one definition, initialised there and never assigned again. */
function constantInit(variable: Variable): Node | null {
  if (variable.defs.length !== 1) return null;
  const def = variable.defs[0]!;
  if (def.type !== "Variable") return null;
  const init = (def.node as unknown as Node).init as Node | null | undefined;
  if (!init) return null;
  for (const ref of variable.references) {
    if (ref.isWrite() && !(ref.init === true)) return null;
  }
  return init;
}

/** True when `variable` is a constant binding of the global `Object.defineProperty`. */
function isDefinePropertyBinding(resolve: Resolver, variable: Variable): boolean {
  const init = constantInit(variable);
  if (init?.type !== "MemberExpression" || init.computed || init.optional) return false;
  const object = init.object as Node;
  if (!isIdentifier(object, "Object") || !isIdentifier(init.property, "defineProperty")) {
    return false;
  }
  // `Object` must be the global one, not a binding of the script's.
  return resolve(object) === null;
}

/** True when `variable` is a constant binding of esbuild's `__name` helper. */
function isNameHelper(resolve: Resolver, variable: Variable): boolean {
  const init = constantInit(variable);
  if (init?.type !== "ArrowFunctionExpression" || init.async || init.expression !== true) {
    return false;
  }
  const params = init.params as Node[];
  if (params.length !== 2 || !isIdentifier(params[0]) || !isIdentifier(params[1])) return false;
  const [target, value] = params as [Node & { name: string }, Node & { name: string }];
  const body = init.body as Node;
  if (body.type !== "CallExpression" || body.optional || !isIdentifier(body.callee)) return false;
  const args = body.arguments as Node[];
  if (args.length !== 3) return false;
  const [first, key, descriptor] = args as [Node, Node, Node];
  if (!isIdentifier(first, target.name)) return false;
  if (key.type !== "Literal" || key.value !== "name") return false;
  if (descriptor.type !== "ObjectExpression") return false;
  const props = descriptor.properties as Node[];
  if (props.length !== 2) return false;
  const byKey = new Map<string, Node>();
  for (const p of props) {
    if (p.type !== "Property" || p.kind !== "init" || p.computed || p.method) return false;
    const k = p.key as Node;
    const name = isIdentifier(k) ? k.name : k.type === "Literal" ? String(k.value) : null;
    if (name === null) return false;
    byKey.set(name, p.value as Node);
  }
  const v = byKey.get("value");
  const c = byKey.get("configurable");
  if (!v || !c || !isIdentifier(v, value.name) || !isTrue(c)) return false;
  const callee = resolve(body.callee as Node);
  return callee !== null && callee !== undefined && isDefinePropertyBinding(resolve, callee);
}

/** The `__name(fn, "…")` calls of the script that can be rewritten (see the module comment). */
export function findNameCalls(
  manager: ScopeManager,
  parentOf: (node: Node) => Node | null | undefined,
): NameCall[] {
  const resolved = new Map<Node, Variable | null>();
  for (const scope of manager.scopes as Scope[]) {
    for (const ref of scope.references)
      resolved.set(ref.identifier as unknown as Node, ref.resolved);
  }
  const resolve: Resolver = (identifier) => resolved.get(identifier);
  const helpers = new Map<Variable, boolean>();
  const out: NameCall[] = [];
  for (const scope of manager.scopes as Scope[]) {
    for (const ref of scope.references) {
      const variable = ref.resolved;
      if (variable === null || !ref.isRead()) continue;
      let helper = helpers.get(variable);
      if (helper === undefined) {
        helper = isNameHelper(resolve, variable);
        helpers.set(variable, helper);
      }
      if (!helper) continue;
      const call = parentOf(ref.identifier as unknown as Node);
      if (!call) continue;
      out.push(...nameCall(call, ref.identifier as unknown as Node));
    }
  }
  return out;
}

function nameCall(call: Node, callee: Node): NameCall[] {
  if (call.type !== "CallExpression" || call.callee !== callee || call.optional) return [];
  const args = call.arguments as Node[];
  if (args.length !== 2) return [];
  const [fn, name] = args as [Node, Node];
  const anonymous =
    fn.type === "ArrowFunctionExpression" || (fn.type === "FunctionExpression" && fn.id === null);
  if (!anonymous) return [];
  if (name.type !== "Literal" || typeof name.value !== "string") return [];
  // `{"__proto__": f}` would set the prototype instead of defining a property.
  if (name.value === "__proto__") return [];
  return [{ start: call.start, fnStart: fn.start, fnEnd: fn.end, end: call.end, name: name.value }];
}
