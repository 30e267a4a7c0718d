/**
 * Instruments the linked app script so that the guard (prelude/guard.ts) can
 * tell whether an execution touched state that existed before it began —
 * the condition under which a context may serve another execution. See
 * README.md, "Context reuse", for the whole argument; this pass supplies
 * these pieces of it:
 *
 * - Writes to object properties go through the guard first: `o.p = v`
 *   becomes `G.w(o, site).p = v` (and `G.wc` for computed keys, which also
 *   covers typed-array views over a registered buffer), so a write to a
 *   registered object taints the context.
 * - Every function activation whose variables are used by a closure records
 *   the epoch it began in (`const E = G.e`). A closure that assigns such a
 *   variable in a later epoch taints the context; a closure that reads one
 *   registers the value (`G.r`), so that writes to it are seen in turn. The
 *   same holds for `this` and `new.target` seen from arrow functions, and
 *   for `super.x` reads (the home object is as old as the class or object
 *   literal that made the method).
 * - Classes with private fields hand the guard a reader for them (a static
 *   block), so that registration reaches what they hold; derived classes with
 *   fields check `this` before defining them (a base constructor may return
 *   an object that existed before).
 * - The top-level bindings are handed to the guard (`G.roots`) so that it can
 *   register everything reachable from them when the context is sealed.
 *
 * Direct `eval` can reach local variables behind the instrumentation's back,
 * and a `delete` through an inner optional chain cannot be checked without
 * changing what it does: an app that uses either is reported as not reusable
 * (its code is left as it is there).
 */
import * as acorn from "acorn";
import * as eslintScope from "eslint-scope";
import MagicString from "magic-string";
import { findNameCalls } from "./functionNames.js";

// ESTree nodes as acorn produces them, loosely typed: the pass looks at a
// handful of fields and walks the rest generically.
interface Node {
  type: string;
  start: number;
  end: number;
  [key: string]: unknown;
}

export interface InstrumentResult {
  code: string;
  /** Source map of `code` in terms of the input script (JSON text). */
  map: string;
  /** False when contexts running the script must not be reused. */
  reusable: boolean;
  reason?: string;
  /** Offsets in the input script of the sites that can taint, by site id. */
  sites: number[];
}

/** The global the runtime script leaves for the app's prologue to take. */
export const GUARD_GLOBAL = "__tessera_guard";

/** Layers, for edits on the same source range: lower layers wrap first (innermost). */
enum Layer {
  Identifier = 0,
  MemberObject = 1,
  Write = 2,
  Function = 3,
  /** Wraps a class field's value, which may itself be an arrow function with its own edit. */
  Initializer = 4,
}

/**
 * Insertions made for one node. Edits are applied from the smallest node to
 * the largest (then by layer), each insertion either before what is already
 * inserted at its offset (`right`: a prefix, so outer prefixes end up first)
 * or after it (`left`: a suffix, so outer suffixes end up last).
 */
interface Edit {
  start: number;
  end: number;
  layer: Layer;
  inserts: Array<{ at: number; text: string; side: "left" | "right" }>;
}

/** An edit that wraps the range [start, end) in `prefix` … `suffix`. */
function wrap(start: number, end: number, layer: Layer, prefix: string, suffix: string): Edit {
  return {
    start,
    end,
    layer,
    inserts: [
      { at: start, text: prefix, side: "right" },
      { at: end, text: suffix, side: "left" },
    ],
  };
}

type Scope = eslintScope.Scope;

function isNode(value: unknown): value is Node {
  return typeof value === "object" && value !== null && typeof (value as Node).type === "string";
}

/** The child nodes of `node`, in source order. */
function children(node: Node): Node[] {
  const out: Node[] = [];
  for (const key in node) {
    if (key === "type" || key === "start" || key === "end" || key === "range") continue;
    const value = node[key];
    if (Array.isArray(value)) {
      for (const item of value) if (isNode(item)) out.push(item);
    } else if (isNode(value)) {
      out.push(value);
    }
  }
  return out;
}

const FUNCTION_TYPES = new Set([
  "FunctionDeclaration",
  "FunctionExpression",
  "ArrowFunctionExpression",
]);

/** A prefix no identifier (or any other text) of the script starts with. */
function freshPrefix(code: string): string {
  for (let i = 0; ; i++) {
    const prefix = i === 0 ? "$tsr" : `$tsr${i}x`;
    if (!code.includes(prefix)) return prefix;
  }
}

export function instrumentApp(code: string): InstrumentResult {
  const arrows: number[] = [];
  const ast = acorn.parse(code, {
    ecmaVersion: "latest",
    sourceType: "script",
    ranges: true,
    onToken: (token) => {
      if (token.type.label === "=>") arrows.push(token.end);
    },
  }) as unknown as Node;
  const manager = eslintScope.analyze(ast as never, {
    ecmaVersion: 2025 as never,
    sourceType: "script",
  });

  const body = ast.body as Node[];
  const iife = body[body.length - 1];
  const top = (iife?.expression as Node | undefined)?.callee as Node | undefined;
  if (
    iife?.type !== "ExpressionStatement" ||
    (iife.expression as Node).type !== "CallExpression" ||
    top?.type !== "ArrowFunctionExpression" ||
    (top.body as Node).type !== "BlockStatement"
  ) {
    throw new Error("instrumentApp: expected the linker's IIFE as the script's last statement");
  }
  const topScope = manager.acquire(top as never)!;

  const parents = new Map<Node, Node | null>();
  const stack: Array<[Node, Node | null]> = [[ast, null]];
  while (stack.length > 0) {
    const [node, parent] = stack.pop()!;
    parents.set(node, parent);
    for (const child of children(node)) stack.push([child, node]);
  }

  const P = freshPrefix(code);
  const G = `${P}g`;
  const edits: Edit[] = [];
  const sites: number[] = [];
  const site = (offset: number): number => sites.push(offset) - 1;
  /** Constructs the pass cannot instrument soundly: the app is then not reusable. */
  const problems: string[] = [];

  // Epoch bindings: one per function-like scope whose activation is referred to.
  const epochNames = new Map<Scope, string>();
  const epochOf = (scope: Scope): string => {
    let name = epochNames.get(scope);
    if (name === undefined) {
      name = `${P}e${epochNames.size}`;
      epochNames.set(scope, name);
    }
    return name;
  };
  /** Statements to run first in an arrow function's body (besides its epoch binding). */
  const arrowPrologues = new Map<Node, string[]>();

  /** The scope of a function-like node (the function's own scope, not its name's). */
  const scopeOf = (node: Node): Scope | null => manager.acquire(node as never, true) ?? null;

  /** The variable scope (function-like) in which `node` is evaluated. */
  const enclosingScope = (node: Node): Scope => {
    for (let p = parents.get(node); p; p = parents.get(p)) {
      if (FUNCTION_TYPES.has(p.type) || p.type === "StaticBlock") {
        const scope = scopeOf(p);
        if (scope) return scope.variableScope;
      }
      const parent = parents.get(p);
      if (parent?.type === "PropertyDefinition" && parent.value === p) {
        const scope = manager.acquire(p as never);
        if (scope) return scope.variableScope;
      }
    }
    return topScope;
  };

  /** True when `offset` lies in the parameter list of the function owning `scope`. */
  const inParams = (scope: Scope, offset: number): boolean => {
    const block = scope.block as unknown as Node;
    if (!FUNCTION_TYPES.has(block.type) || block === top) return false;
    const fnBody = block.body as Node;
    return offset >= block.start && offset < fnBody.start;
  };

  /** `(E === G.e || G.t(site))`: taints when the activation is from an earlier epoch. */
  const writeCheck = (declScope: Scope, at: number): string => {
    const s = site(at);
    if (inParams(declScope, at)) return `${G}.t(${s})`;
    return `(${epochOf(declScope)} === ${G}.e || ${G}.t(${s}))`;
  };

  /** Registers the value read at `node` when the activation it comes from is older. */
  const wrapRead = (declScope: Scope, node: Node, text: string): void => {
    const parent = parents.get(node);
    const shorthand =
      parent?.type === "Property" && parent.shorthand === true && parent.value === node
        ? `${text}: `
        : "";
    if (inParams(declScope, node.start)) {
      edits.push(wrap(node.start, node.end, Layer.Identifier, `${shorthand}${G}.r(`, ")"));
      return;
    }
    edits.push(
      wrap(
        node.start,
        node.end,
        Layer.Identifier,
        `${shorthand}(${epochOf(declScope)} === ${G}.e ? `,
        ` : ${G}.r(${text}))`,
      ),
    );
  };

  /** The expression or loop that performs a write to a pattern or identifier target. */
  const writeSite = (target: Node): Node | null => {
    let node = target;
    for (;;) {
      const parent = parents.get(node);
      if (!parent) return null;
      switch (parent.type) {
        case "ArrayPattern":
        case "ObjectPattern":
        case "RestElement":
        case "Property":
          node = parent;
          continue;
        case "AssignmentPattern":
          if (parent.left !== node) return null;
          node = parent;
          continue;
        case "AssignmentExpression":
          return parent.left === node ? parent : null;
        case "UpdateExpression":
          return parent;
        case "ForInStatement":
        case "ForOfStatement":
          return parent.left === node ? parent : null;
        default:
          return null;
      }
    }
  };

  const wrapWrite = (target: Node, check: string): void => {
    const at = writeSite(target);
    if (at === null) {
      problems.push(
        `a write at offset ${target.start} in a form the instrumentation does not know`,
      );
      return;
    }
    if (at.type === "ForInStatement" || at.type === "ForOfStatement") {
      // Checked once, before the first assignment: `for (x of (check, xs))`.
      const right = at.right as Node;
      edits.push(wrap(right.start, right.end, Layer.Write, `(${check}, `, ")"));
      return;
    }
    edits.push(wrap(at.start, at.end, Layer.Write, `(${check}, `, ")"));
  };

  let directEval = false;

  // Variable references.
  for (const scope of manager.scopes) {
    for (const ref of scope.references) {
      const id = ref.identifier as unknown as Node;
      const variable = ref.resolved;
      if (variable === null) {
        if (ref.isWrite()) wrapWrite(id, `${G}.t(${site(id.start)})`);
        const parent = parents.get(id);
        if (
          (id as { name?: string }).name === "eval" &&
          parent?.type === "CallExpression" &&
          parent.callee === id
        ) {
          directEval = true;
        }
        continue;
      }
      const declScope = variable.scope.variableScope;
      if (declScope.type === "global") continue;
      if (ref.from.variableScope === declScope) continue;
      if (ref.isWrite()) {
        if (ref.init) continue;
        wrapWrite(id, writeCheck(declScope, id.start));
      } else if (ref.isRead()) {
        // Bindings of the top-level function scope are registered when the
        // context is sealed (G.roots); block-scoped ones at top level are not.
        if (variable.scope === topScope) continue;
        wrapRead(declScope, id, (id as { name?: string }).name!);
      }
    }
  }

  // `this`, `new.target` and `super` seen from arrow functions, member writes,
  // home-object reads, classes.
  interface Provider {
    node: Node;
    scope: Scope | null;
    arrow: boolean;
  }
  const providers: Provider[] = [];

  /** The nearest non-arrow provider, and the arrows crossed on the way to it. */
  const provider = (): { p: Provider | undefined; arrowsCrossed: Node[] } => {
    const arrowsCrossed: Node[] = [];
    for (let i = providers.length - 1; i >= 0; i--) {
      const p = providers[i]!;
      if (p.arrow) {
        arrowsCrossed.push(p.node);
        continue;
      }
      return { p, arrowsCrossed };
    }
    return { p: undefined, arrowsCrossed };
  };

  const isCallee = (node: Node): boolean => {
    const p = parents.get(node);
    return (
      (p?.type === "CallExpression" && p.callee === node) ||
      (p?.type === "TaggedTemplateExpression" && p.tag === node) ||
      (p?.type === "ChainExpression" && isCallee(p))
    );
  };

  function isWriteTarget(node: Node, parent: Node | null): boolean {
    if (!parent) return false;
    switch (parent.type) {
      case "AssignmentExpression":
        return parent.left === node;
      case "UpdateExpression":
        return true;
      case "UnaryExpression":
        return parent.operator === "delete";
      case "ChainExpression": {
        const p = parents.get(parent);
        return p?.type === "UnaryExpression" && p.operator === "delete";
      }
      case "ForInStatement":
      case "ForOfStatement":
        return parent.left === node;
      case "ArrayPattern":
      case "RestElement":
        return true;
      case "AssignmentPattern":
        return parent.left === node;
      case "Property": {
        const p = parents.get(parent);
        return p?.type === "ObjectPattern" && parent.value === node;
      }
      default:
        return false;
    }
  }

  /** Whether an optional link precedes `node` in its chain (`a?.b.c`: before `.c`). */
  const innerOptional = (node: Node): boolean => {
    for (let n: Node | undefined = node; n; ) {
      if (n.type === "MemberExpression") {
        if (n !== node && n.optional === true) return true;
        n = n.object as Node;
      } else if (n.type === "CallExpression") {
        if (n.optional === true) return true;
        n = n.callee as Node;
      } else {
        return false;
      }
    }
    return false;
  };

  /** The scope in which the home object of the innermost method was made. */
  const homeScope = (): Scope | null => {
    const { p } = provider();
    if (!p) return null;
    let holder = parents.get(p.node);
    if (holder?.type === "MethodDefinition" || holder?.type === "PropertyDefinition") {
      holder = parents.get(parents.get(holder)!); // ClassBody → class
    } else if (holder?.type === "Property") {
      holder = parents.get(holder); // ObjectExpression
    } else if (p.node.type === "StaticBlock") {
      holder = parents.get(holder!);
    }
    return holder ? enclosingScope(holder) : null;
  };

  const visit = (node: Node, parent: Node | null): void => {
    switch (node.type) {
      case "ThisExpression":
      case "MetaProperty": {
        if (node.type === "MetaProperty" && (node.meta as { name: string }).name !== "new") break;
        const { p, arrowsCrossed } = provider();
        if (arrowsCrossed.length > 0 && p && p.node !== top && p.scope !== null) {
          wrapRead(p.scope, node, node.type === "ThisExpression" ? "this" : "new.target");
        }
        break;
      }
      case "Super": {
        // In an arrow, `super.m()` passes the arrow's captured `this` on: register it on entry.
        // (Not for `super()`, before which `this` is not bound.)
        if (parent?.type === "CallExpression" && parent.callee === node) break;
        const { p, arrowsCrossed } = provider();
        if (arrowsCrossed.length > 0 && p && p.scope !== null) {
          const check = `${epochOf(p.scope)} === ${G}.e || ${G}.r(this);`;
          for (const arrow of arrowsCrossed) {
            const list = arrowPrologues.get(arrow) ?? [];
            if (!list.includes(check)) list.push(check);
            arrowPrologues.set(arrow, list);
          }
        }
        break;
      }
      case "MemberExpression": {
        const object = node.object as Node;
        if (isWriteTarget(node, parent)) {
          if (object.type === "Super") {
            const insideArrow = provider().arrowsCrossed.length > 0;
            const at = writeSite(node) ?? enclosingDelete(node);
            if (at === null || at.type === "ForInStatement" || at.type === "ForOfStatement") {
              problems.push(`a write to a super property at offset ${node.start}`);
            } else {
              const s = site(node.start);
              // (wc: `super[0] = v` on a view writes its buffer.)
              const check = insideArrow ? `${G}.t(${s})` : `${G}.wc(this, ${s})`;
              edits.push(wrap(at.start, at.end, Layer.Write, `(${check}, `, ")"));
            }
          } else if (parent?.type === "ChainExpression" || node.optional === true) {
            // Only `delete` takes an optional chain.
            if (innerOptional(node)) {
              problems.push(`a delete through an optional chain at offset ${node.start}`);
            } else {
              const fn = node.computed === true ? "wc" : "w";
              edits.push(
                wrap(
                  object.start,
                  object.end,
                  Layer.MemberObject,
                  `${G}.${fn}((`,
                  `), ${site(node.start)})`,
                ),
              );
            }
          } else {
            const fn = node.computed === true ? "wc" : "w";
            edits.push(
              wrap(
                object.start,
                object.end,
                Layer.MemberObject,
                `${G}.${fn}((`,
                `), ${site(node.start)})`,
              ),
            );
          }
        } else if (object.type === "Super" && !isCallee(node)) {
          // `super.x` reads the home object's prototype chain, as old as the method's class.
          const scope = homeScope();
          if (scope !== null) {
            edits.push(
              wrap(node.start, node.end, Layer.Identifier, `(${G}.rs(${epochOf(scope)}, `, "))"),
            );
          }
        }
        break;
      }
      case "ClassBody":
        instrumentClass(node, parent!);
        break;
      case "CallExpression": {
        if ((node.callee as Node).type !== "Super") break;
        const owner = enclosingClass(node);
        if (!owner) break;
        const info = instrumentClass(owner.body, owner.cls);
        if (!info.checkSuper && !info.reader) break;
        edits.push(
          wrap(node.start, node.end, Layer.Write, `${G}.sc(`, `${superCheck(node.start, info)})`),
        );
        break;
      }
    }
  };

  const enclosingDelete = (node: Node): Node | null => {
    const p = parents.get(node);
    if (p?.type === "UnaryExpression" && p.operator === "delete") return p;
    return null;
  };

  /**
   * A class with private fields hands the guard a reader of them; a derived
   * class with instance fields checks `this` first (defining a field on an
   * object is a write, and super() may return one that existed before).
   */
  interface ClassInfo {
    /** Instance private fields: the class gets a reader method `#<P>r` for them. */
    reader: boolean;
    /** super() defines fields or brands private methods on the object it returns: check it. */
    checkSuper: boolean;
  }
  const classInfo = new Map<Node, ClassInfo>();

  /**
   * A class with private fields hands the guard a reader of them: static
   * fields through a static block, instance fields through a private method
   * each instance is recorded with when constructed (its prototype chain may
   * change later). A derived class that defines fields or private methods on
   * the object super() returns checks that object (a base constructor may
   * return one that existed before).
   */
  const instrumentClass = (classBody: Node, classNode: Node): ClassInfo => {
    const cached = classInfo.get(classBody);
    if (cached) return cached;
    const members = classBody.body as Node[];
    const instancePrivate: string[] = [];
    const staticPrivate: string[] = [];
    let defines = false;
    let constructorFn: Node | undefined;
    for (const m of members) {
      const key = m.key as Node | undefined;
      if (m.type === "PropertyDefinition") {
        if (m.static !== true) defines = true;
        if (key?.type === "PrivateIdentifier") {
          (m.static === true ? staticPrivate : instancePrivate).push(key.name as string);
        }
      } else if (m.type === "MethodDefinition") {
        if (m.kind === "constructor") constructorFn = m.value as Node;
        else if (m.static !== true && key?.type === "PrivateIdentifier") defines = true;
      }
    }
    const derived = classNode.superClass !== null && classNode.superClass !== undefined;
    const info: ClassInfo = { reader: instancePrivate.length > 0, checkSuper: derived && defines };
    classInfo.set(classBody, info);
    const inserts: Edit["inserts"] = [];
    const reads = (names: string[], o: string) =>
      names.map((n) => `#${n} in ${o} ? ${o}.#${n} : void 0`).join(", ");
    if (staticPrivate.length > 0) {
      inserts.push({
        at: classBody.start + 1,
        text: ` static { ${G}.pr(this, (o) => [${reads(staticPrivate, "o")}]); }`,
        side: "left",
      });
    }
    if (info.reader) {
      inserts.push({
        at: classBody.start + 1,
        text: ` #${P}r() { return [${reads(instancePrivate, "this")}]; }`,
        side: "left",
      });
    }
    // Base classes record their instances first thing in the constructor;
    // derived classes do it where super() returns (see visit).
    if (info.reader && !derived) {
      const record = `${G}.pf(this, this.#${P}r);`;
      if (constructorFn) {
        const fnBody = constructorFn.body as Node;
        inserts.push({ at: fnBody.start + 1, text: ` ${record}`, side: "right" });
      } else {
        inserts.push({
          at: classBody.start + 1,
          text: ` constructor() { ${record} }`,
          side: "left",
        });
      }
    } else if (info.checkSuper && !constructorFn) {
      // The implicit constructor, made explicit so that its super() is checked.
      const check = superCheck(classBody.start, info);
      inserts.push({
        at: classBody.start + 1,
        text: ` constructor(...args) { ${G}.sc(super(...args)${check}); }`,
        side: "left",
      });
    }
    if (inserts.length > 0) {
      edits.push({ start: classBody.start, end: classBody.end, layer: Layer.Function, inserts });
    }
    return info;
  };

  /** The rest of a `G.sc(super(…), site[, reader])` call. */
  const superCheck = (at: number, info: ClassInfo): string =>
    `, ${site(at)}${info.reader ? `, this.#${P}r` : ""}`;

  /** The class whose constructor a super() call belongs to. */
  const enclosingClass = (node: Node): { body: Node; cls: Node } | null => {
    for (let p = parents.get(node); p; p = parents.get(p)) {
      if (p.type === "ClassBody") return { body: p, cls: parents.get(p)! };
    }
    return null;
  };

  // A walk with the stack of providers of `this`.
  const walk = (node: Node, parent: Node | null): void => {
    let pushed = 0;
    if (parent?.type === "PropertyDefinition" && parent.value === node) {
      // A field initializer provides `this` (the instance); its scope's block is the value.
      providers.push({ node, scope: manager.acquire(node as never) ?? null, arrow: false });
      pushed++;
    }
    if (FUNCTION_TYPES.has(node.type)) {
      providers.push({
        node,
        scope: scopeOf(node),
        arrow: node.type === "ArrowFunctionExpression",
      });
      pushed++;
    } else if (node.type === "StaticBlock") {
      providers.push({ node, scope: manager.acquire(node as never) ?? null, arrow: false });
      pushed++;
    }
    visit(node, parent);
    for (const child of children(node)) walk(child, node);
    providers.length -= pushed;
  };
  walk(ast, null);

  // Function prologues: epoch bindings, now that every scope that needs one is known.
  const prologues = new Map<Node, string[]>(arrowPrologues);
  for (const [scope, name] of epochNames) {
    const block = scope.block as unknown as Node;
    const decl = `const ${name} = ${G}.e;`;
    if (block === top) continue; // declared in the script's prologue
    if (scope.type === "class-field-initializer") {
      edits.push(wrap(block.start, block.end, Layer.Initializer, `((${name}) => (`, `))(${G}.e)`));
    } else if (scope.type === "class-static-block") {
      const first = (block.body as Node[])[0];
      if (first) {
        edits.push({
          start: block.start,
          end: block.end,
          layer: Layer.Function,
          inserts: [{ at: first.start, text: `${decl} `, side: "right" }],
        });
      }
    } else if (FUNCTION_TYPES.has(block.type)) {
      // The epoch binding comes first: other prologue statements may use it.
      prologues.set(block, [decl, ...(prologues.get(block) ?? [])]);
    } else {
      throw new Error(`instrumentApp: unexpected scope ${scope.type} needs an epoch`);
    }
  }
  for (const [fn, statements] of prologues) {
    const text = statements.join(" ");
    const fnBody = fn.body as Node;
    if (fnBody.type === "BlockStatement") {
      let at = fnBody.start + 1;
      for (const statement of fnBody.body as Node[]) {
        if (statement.type === "ExpressionStatement" && typeof statement.directive === "string") {
          at = statement.end;
        } else {
          break;
        }
      }
      edits.push({
        start: fn.start,
        end: fn.end,
        layer: Layer.Function,
        inserts: [{ at, text: ` ${text}`, side: "right" }],
      });
    } else {
      // An expression body becomes a block that runs the prologue first.
      edits.push({
        start: fn.start,
        end: fn.end,
        layer: Layer.Function,
        inserts: [
          {
            at: arrowTokenEnd(arrows, fn.start, fnBody.start),
            text: ` { ${text} return (`,
            side: "right",
          },
          { at: fn.end, text: "); }", side: "left" },
        ],
      });
    }
  }

  // Apply from the innermost node out (see Edit).
  const s = new MagicString(code);
  edits.sort((a, b) => a.end - a.start - (b.end - b.start) || a.layer - b.layer);
  for (const edit of edits) {
    for (const insert of edit.inserts) {
      if (insert.side === "right") s.prependRight(insert.at, insert.text);
      else s.appendLeft(insert.at, insert.text);
    }
  }
  // Functions named as they are made rather than by `__name` (functionNames.ts).
  for (const call of findNameCalls(manager, (node) => parents.get(node))) {
    const key = JSON.stringify(call.name);
    s.overwrite(call.start, call.fnStart, `({ ${key}: `, { contentOnly: true });
    s.overwrite(call.fnEnd, call.end, ` })[${key}]`, { contentOnly: true });
  }
  const topBody = top.body as Node;
  const topNames = topScope.variables
    .filter((v) => v.name !== "arguments" && v.defs.length > 0)
    .map((v) => v.name);
  const e0 = epochNames.get(topScope) ?? `${P}e`;
  s.prependRight(
    topBody.start + 1,
    ` const ${G} = globalThis.${GUARD_GLOBAL}; ${G}.install(${JSON.stringify({ eval: !directEval })}); const ${e0} = ${G}.e;`,
  );
  s.appendLeft(topBody.end - 1, `\n${G}.roots(() => [${topNames.join(", ")}]);\n`);

  const map = s.generateMap({ hires: "boundary", includeContent: false });
  const reasons = [...(directEval ? ["the app uses direct eval"] : []), ...problems];
  // Code the pass could not instrument is left as it was (no edits there):
  // the app still runs, in a fresh context for every execution.
  return {
    code: s.toString(),
    map: map.toString(),
    reusable: reasons.length === 0,
    ...(reasons.length > 0 ? { reason: reasons.join("; ") } : {}),
    sites,
  };
}

/** End of the `=>` token of the arrow function starting at `start` whose body starts at `bodyStart`. */
function arrowTokenEnd(arrows: number[], start: number, bodyStart: number): number {
  // Binary search for the last `=>` ending at or before the body.
  let lo = 0;
  let hi = arrows.length - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (arrows[mid]! <= bodyStart) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  const end = found >= 0 ? arrows[found]! : -1;
  if (end < start) throw new Error("instrumentApp: arrow token not found");
  return end;
}
