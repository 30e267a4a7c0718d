/**
 * Instruments the linked app script so that the guard (prelude/guard.ts) can
 * tell whether an execution touched state that existed before it began —
 * the condition under which a context may serve another execution. See
 * README.md, "Context reuse", for the whole argument; this pass supplies
 * three of its pieces:
 *
 * - Writes to object properties go through the guard first: `o.p = v`
 *   becomes `G.w(o, site).p = v` (and `G.wc` for computed keys, which also
 *   covers typed-array views over a registered buffer), so a write to a
 *   registered object taints the context before it happens.
 * - Every function activation whose variables are used by a closure records
 *   the epoch it began in (`const E = G.e`). A closure that assigns such a
 *   variable in a later epoch taints the context; a closure that reads one
 *   registers the value (`G.r`), so that writes to it are seen in turn. The
 *   same holds for `this` seen from arrow functions and for private fields.
 * - The top-level bindings are handed to the guard (`G.roots`) so that it can
 *   register everything reachable from them when the context is sealed.
 *
 * Direct `eval` can reach local variables behind the instrumentation's back:
 * an app that uses it is reported as not reusable.
 */
import * as acorn from "acorn";
import * as eslintScope from "eslint-scope";
import MagicString from "magic-string";

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
  /** False when the script uses direct eval: contexts must not be reused. */
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
  PrivateRead = 1,
  MemberObject = 2,
  Write = 3,
  Function = 4,
  /** Wraps a class field's value, which may itself be an arrow function with its own edit. */
  Initializer = 5,
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

/** Calls `visit` on every node, parents before children, with each node's parent. */
function walk(root: Node, visit: (node: Node, parent: Node | null) => void): void {
  const stack: Array<[Node, Node | null]> = [[root, null]];
  while (stack.length > 0) {
    const [node, parent] = stack.pop()!;
    visit(node, parent);
    const children: Node[] = [];
    for (const key in node) {
      if (key === "type" || key === "start" || key === "end" || key === "range") continue;
      const value = node[key];
      if (Array.isArray(value)) {
        for (const item of value) if (isNode(item)) children.push(item);
      } else if (isNode(value)) {
        children.push(value);
      }
    }
    for (let i = children.length - 1; i >= 0; i--) stack.push([children[i]!, node]);
  }
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
  walk(ast, (node, parent) => parents.set(node, parent));

  const P = freshPrefix(code);
  const G = `${P}g`;
  const edits: Edit[] = [];
  const sites: number[] = [];
  const site = (offset: number): number => sites.push(offset) - 1;

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

  /** True when `offset` lies in the parameter list of the function owning `scope`. */
  const inParams = (scope: Scope, offset: number): boolean => {
    const block = scope.block as unknown as Node;
    if (!FUNCTION_TYPES.has(block.type)) return false;
    const fnBody = block.body as Node;
    return offset >= block.start && offset < fnBody.start && block !== top;
  };

  /** `(E === G.e || G.t(site))`: taints when the activation is from an earlier epoch. */
  const writeCheck = (declScope: Scope, at: number): string => {
    const s = site(at);
    if (inParams(declScope, at)) return `${G}.t(${s})`;
    return `(${epochOf(declScope)} === ${G}.e || ${G}.t(${s}))`;
  };

  const wrapRead = (declScope: Scope, node: Node, text: string): void => {
    const shorthand = (() => {
      const parent = parents.get(node);
      return parent?.type === "Property" && parent.shorthand === true && parent.value === node
        ? `${text}: `
        : "";
    })();
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
      const loopBody = at.body as Node;
      edits.push(wrap(loopBody.start, loopBody.end, Layer.Write, `{ ${check}; `, " }"));
      return;
    }
    edits.push(wrap(at.start, at.end, Layer.Write, `(${check}, `, ")"));
  };

  let directEval = false;
  /** Constructs the pass cannot instrument soundly: the app is then not reusable. */
  const problems: string[] = [];

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

  // `this` seen from arrow functions, member writes, private reads.
  const thisProviders: Array<{ node: Node; scope: Scope | null; arrow: boolean }> = [];

  const visit = (node: Node, parent: Node | null): void => {
    switch (node.type) {
      case "ThisExpression": {
        // Nearest non-arrow provider of `this`.
        let crossed = false;
        for (let i = thisProviders.length - 1; i >= 0; i--) {
          const p = thisProviders[i]!;
          if (p.arrow) {
            crossed = true;
            continue;
          }
          if (crossed && p.node !== top && p.scope !== null) {
            wrapRead(p.scope, node, "this");
          }
          break;
        }
        break;
      }
      case "MemberExpression": {
        const object = node.object as Node;
        const property = node.property as Node;
        const isTarget = isWriteTarget(node, parent);
        if (isTarget) {
          if (object.type === "Super") {
            const insideArrow = thisProviders.some((p) => p.arrow);
            const at = writeSite(node) ?? enclosingDelete(node);
            if (at === null || at.type === "ForInStatement" || at.type === "ForOfStatement") {
              problems.push(`a write to a super property at offset ${node.start}`);
            } else {
              const s = site(node.start);
              const check = insideArrow ? `${G}.t(${s})` : `${G}.w(this, ${s})`;
              edits.push(wrap(at.start, at.end, Layer.Write, `(${check}, `, ")"));
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
        } else if (
          property.type === "PrivateIdentifier" &&
          !(parent?.type === "CallExpression" && parent.callee === node) &&
          !(parent?.type === "TaggedTemplateExpression" && parent.tag === node) &&
          !(parent?.type === "ChainExpression" && isCallee(parent))
        ) {
          if (object.type === "ThisExpression" || object.type === "Identifier") {
            const holder = object.type === "ThisExpression" ? "this" : (object.name as string);
            edits.push(wrap(node.start, node.end, Layer.PrivateRead, `${G}.rv(${holder}, `, ")"));
          } else {
            // Evaluate the object once, into a scratch slot of the guard.
            edits.push({
              start: node.start,
              end: node.end,
              layer: Layer.PrivateRead,
              inserts: [
                { at: node.start, text: `(${G}.$ = `, side: "right" },
                { at: object.end, text: `, ${G}.rv(${G}.$, ${G}.$`, side: "left" },
                { at: node.end, text: "))", side: "left" },
              ],
            });
          }
        }
        break;
      }
    }
  };

  const isCallee = (chain: Node): boolean => {
    const p = parents.get(chain);
    return p?.type === "CallExpression" && p.callee === chain;
  };

  const enclosingDelete = (node: Node): Node | null => {
    const p = parents.get(node);
    if (p?.type === "UnaryExpression" && p.operator === "delete") return p;
    return null;
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

  // A second walk with the stack of `this` providers.
  const walkThis = (node: Node, parent: Node | null): void => {
    let pushed = 0;
    if (parent?.type === "PropertyDefinition" && parent.value === node) {
      // A field initializer provides `this` (the instance); its scope's block is the value.
      thisProviders.push({ node, scope: manager.acquire(node as never) ?? null, arrow: false });
      pushed++;
    }
    if (FUNCTION_TYPES.has(node.type)) {
      thisProviders.push({
        node,
        scope: manager.acquire(node as never, true) ?? null,
        arrow: node.type === "ArrowFunctionExpression",
      });
      pushed++;
    } else if (node.type === "StaticBlock") {
      thisProviders.push({ node, scope: manager.acquire(node as never) ?? null, arrow: false });
      pushed++;
    }
    visit(node, parent);
    for (const key in node) {
      if (key === "type" || key === "start" || key === "end" || key === "range") continue;
      const value = node[key];
      if (Array.isArray(value)) {
        for (const item of value) if (isNode(item)) walkThis(item, node);
      } else if (isNode(value)) {
        walkThis(value, node);
      }
    }
    thisProviders.length -= pushed;
  };
  walkThis(ast, null);

  // Epoch bindings, now that every scope that needs one is known.
  for (const [scope, name] of epochNames) {
    const block = scope.block as unknown as Node;
    const decl = `const ${name} = ${G}.e;`;
    if (block === top) continue; // declared in the prologue
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
      const fnBody = block.body as Node;
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
          start: block.start,
          end: block.end,
          layer: Layer.Function,
          inserts: [{ at, text: ` ${decl}`, side: "right" }],
        });
      } else {
        // An expression body becomes a block that binds the epoch first.
        edits.push({
          start: block.start,
          end: block.end,
          layer: Layer.Function,
          inserts: [
            {
              at: arrowTokenEnd(arrows, block.start, fnBody.start),
              text: ` { ${decl} return (`,
              side: "right",
            },
            { at: block.end, text: "); }", side: "left" },
          ],
        });
      }
    } else {
      throw new Error(`instrumentApp: unexpected scope ${scope.type} needs an epoch`);
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
