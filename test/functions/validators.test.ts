import { defineSchema, defineTable, makeFunctionReference, queryGeneric } from "convex/server";
import { type ValidatorJSON as OfficialValidatorJSON, v } from "convex/values";
import { convexTest } from "convex-test";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  type ConvexValidationError,
  parseArgsValidator,
  parseReturnsValidator,
  parseValidatorJson,
  renderValidator,
  renderValue,
  schemaValidatorsFromJson,
  type ValidationContext,
  type ValidatorJSON,
  validateArgs,
  validateDocument,
  validateReturns,
  validateValue,
  validateWrite,
} from "../../src/functions/validators.js";
import {
  value as anyValue,
  bytes,
  float64,
  int64,
  string,
} from "../../src/values/arbitraries.test-util.js";
import { newDocumentId } from "../../src/values/ids.js";
import { isPlainObject, type Value, valuesEqual } from "../../src/values/value.js";

// Our ValidatorJSON must accept everything the official type describes.
const _assignable = (j: OfficialValidatorJSON): ValidatorJSON => j;
void _assignable;

// biome-ignore lint/suspicious/noExplicitAny: the official validators' `json` getter is @internal.
type AnyValidator = any;
/** The JSON of an official validator, as `exportArgs()` / schema `export()` produce it. */
function json(validator: AnyValidator): ValidatorJSON {
  return JSON.parse(JSON.stringify(validator.json));
}

const TABLES: Record<string, number> = {
  users: 1,
  messages: 2,
  _storage: 10_001,
  _scheduled_functions: 10_002,
};
const ctx: ValidationContext = {
  tableNumberForName: (name) => TABLES[name],
  tableNameForNumber: (n) => Object.keys(TABLES).find((k) => TABLES[k] === n),
};
const id = (table: string) => newDocumentId(TABLES[table]!);

function accepts(validator: AnyValidator, value: Value | undefined): boolean {
  return validateValue(json(validator), value, ctx) === null;
}

describe("scalars", () => {
  it("v.number() accepts every float64 and nothing else", () => {
    for (const n of [0, -0, 1.5, NaN, Infinity, -Infinity, Number.MIN_VALUE, -Number.MAX_VALUE]) {
      expect(accepts(v.number(), n)).toBe(true);
      expect(accepts(v.float64(), n)).toBe(true);
    }
    for (const x of [1n, "1", true, null, [], {}, new ArrayBuffer(1), undefined]) {
      expect(accepts(v.number(), x as Value)).toBe(false);
    }
  });

  it("v.int64() / v.bigint() / v.commitTs() accept only bigints", () => {
    for (const validator of [v.int64(), v.bigint(), v.commitTs()]) {
      expect(accepts(validator, 0n)).toBe(true);
      expect(accepts(validator, -(2n ** 63n))).toBe(true);
      expect(accepts(validator, 1)).toBe(false);
      expect(accepts(validator, "1")).toBe(false);
    }
  });

  it("string, boolean, null, bytes", () => {
    expect(accepts(v.string(), "")).toBe(true);
    expect(accepts(v.string(), id("users"))).toBe(true);
    expect(accepts(v.string(), 1)).toBe(false);
    expect(accepts(v.boolean(), false)).toBe(true);
    expect(accepts(v.boolean(), 0)).toBe(false);
    expect(accepts(v.null(), null)).toBe(true);
    expect(accepts(v.null(), undefined)).toBe(false);
    expect(accepts(v.bytes(), new ArrayBuffer(3))).toBe(true);
    expect(accepts(v.bytes(), new Uint8Array(3) as unknown as Value)).toBe(false);
    expect(accepts(v.bytes(), [])).toBe(false);
  });

  it("v.any() accepts every value, but a missing value is not a value", () => {
    fc.assert(fc.property(anyValue, (x) => accepts(v.any(), x)));
    expect(accepts(v.any(), undefined)).toBe(false);
  });

  it("v.literal() compares by Convex value equality", () => {
    expect(accepts(v.literal("a"), "a")).toBe(true);
    expect(accepts(v.literal("a"), "b")).toBe(false);
    expect(accepts(v.literal(5n), 5n)).toBe(true);
    expect(accepts(v.literal(5n), 5)).toBe(false);
    expect(accepts(v.literal(5), 5n)).toBe(false);
    expect(accepts(v.literal(5), 5)).toBe(true);
    expect(accepts(v.literal(-(2n ** 63n)), -(2n ** 63n))).toBe(true);
    expect(accepts(v.literal(true), true)).toBe(true);
    expect(accepts(v.literal(true), 1)).toBe(false);
    // -0 and 0 are different Convex values; NaN is equal to itself.
    expect(accepts(v.literal(0), -0)).toBe(false);
    expect(accepts(v.literal(-0), -0)).toBe(true);
    expect(accepts(v.literal(NaN), NaN)).toBe(true);
    expect(accepts(v.literal(Infinity), Infinity)).toBe(true);
  });
});

describe("objects, arrays, records, unions", () => {
  const obj = v.object({ a: v.string(), b: v.optional(v.number()) });

  it("objects: required, optional and extra fields", () => {
    expect(accepts(obj, { a: "x" })).toBe(true);
    expect(accepts(obj, { a: "x", b: 1 })).toBe(true);
    expect(accepts(obj, { b: 1 })).toBe(false);
    expect(accepts(obj, { a: "x", c: 1 })).toBe(false);
    expect(accepts(obj, { a: "x", b: "1" })).toBe(false);
    expect(accepts(v.object({}), {})).toBe(true);
    expect(accepts(v.object({}), { a: null })).toBe(false);
    expect(accepts(v.object({ a: v.any() }), {})).toBe(false);
    expect(accepts(v.object({ a: v.optional(v.any()) }), {})).toBe(true);
  });

  it("a field set to undefined is an absent field, as on the wire", () => {
    expect(accepts(obj, { a: "x", b: undefined } as unknown as Value)).toBe(true);
    expect(accepts(obj, { a: undefined } as unknown as Value)).toBe(false);
    expect(accepts(obj, { a: "x", zzz: undefined } as unknown as Value)).toBe(true);
    const f = validateValue(json(obj), { a: undefined } as unknown as Value, ctx);
    expect(f?.kind).toBe("missingField");
  });

  it("only plain objects are objects", () => {
    for (const x of [
      [],
      new ArrayBuffer(0),
      new Date(0),
      new Map(),
      new (class X {})(),
      null,
      "{}",
    ]) {
      expect(accepts(v.object({}), x as Value)).toBe(false);
      expect(accepts(v.record(v.string(), v.any()), x as Value)).toBe(false);
    }
    expect(accepts(v.object({}), Object.create(null))).toBe(true);
  });

  it("field names that are Object.prototype members are not mistaken for present fields", () => {
    const o = v.object({ constructor: v.optional(v.string()), toString: v.string() });
    expect(accepts(o, { toString: "x" })).toBe(true);
    expect(accepts(o, {})).toBe(false);
    const missing = validateValue(json(o), {}, ctx);
    expect(missing?.field).toBe("toString");
    expect(accepts(v.object({}), JSON.parse('{"__proto__": 1}'))).toBe(false);
  });

  it("arrays check every element", () => {
    expect(accepts(v.array(v.number()), [])).toBe(true);
    expect(accepts(v.array(v.number()), [1, 2, NaN])).toBe(true);
    expect(accepts(v.array(v.number()), [1, "2"])).toBe(false);
    expect(accepts(v.array(v.number()), { 0: 1 })).toBe(false);
    expect(accepts(v.array(v.any()), [1, undefined] as unknown as Value)).toBe(false);
  });

  it("records check keys and values", () => {
    const r = v.record(v.string(), v.number());
    expect(accepts(r, {})).toBe(true);
    expect(accepts(r, { a: 1, "b c": 2 })).toBe(true);
    expect(accepts(r, { a: "1" })).toBe(false);
    expect(accepts(r, { a: 1, b: undefined } as unknown as Value)).toBe(true);
    const u = id("users");
    const m = id("messages");
    const byUser = v.record(v.id("users"), v.boolean());
    expect(accepts(byUser, { [u]: true })).toBe(true);
    expect(accepts(byUser, { [m]: true })).toBe(false);
    expect(accepts(byUser, { alice: true })).toBe(false);
    const either = v.record(v.union(v.id("users"), v.id("messages")), v.boolean());
    expect(accepts(either, { [u]: true, [m]: false })).toBe(true);
    const key = validateValue(json(byUser), { alice: true }, ctx);
    expect(key?.kind).toBe("recordKey");
    expect(key?.path).toBe(".alice");
    expect(key?.message).toContain('Key: "alice"');
    const table = validateValue(json(byUser), { [m]: true }, ctx);
    expect(table?.kind).toBe("idTable");
    expect(table?.message).toContain("from table `messages`");
  });

  it("unions accept a value matching any member", () => {
    const u = v.union(v.literal("a"), v.null(), v.object({ k: v.literal("b"), x: v.number() }));
    expect(accepts(u, "a")).toBe(true);
    expect(accepts(u, null)).toBe(true);
    expect(accepts(u, { k: "b", x: 1 })).toBe(true);
    expect(accepts(u, { k: "b" })).toBe(false);
    expect(accepts(u, "b")).toBe(false);
    expect(accepts(v.union(), null)).toBe(false);
  });
});

describe("v.id()", () => {
  it("accepts real IDs of the right table, system tables included", () => {
    expect(accepts(v.id("users"), id("users"))).toBe(true);
    expect(accepts(v.id("_storage"), id("_storage"))).toBe(true);
    expect(accepts(v.id("users"), id("messages"))).toBe(false);
    expect(accepts(v.id("_storage"), id("users"))).toBe(false);
    expect(accepts(v.id("users"), id("_storage"))).toBe(false);
  });

  it("refuses strings that are not IDs, and IDs of a table that does not exist", () => {
    const good = id("users");
    for (const s of [
      "",
      "users",
      `${good}x`,
      good.slice(1),
      good.toUpperCase(),
      `${good.slice(0, -1)}0`,
    ]) {
      if (s === good) continue;
      expect(accepts(v.id("users"), s)).toBe(false);
    }
    expect(accepts(v.id("nosuchtable"), good)).toBe(false);
    expect(accepts(v.id("users"), newDocumentId(77))).toBe(false);
    const unknown = validateValue(json(v.id("users")), newDocumentId(77), ctx);
    expect(unknown?.message).toContain("unknown table (number 77)");
  });

  it("names the table an ID came from", () => {
    const m = id("messages");
    const f = validateValue(json(v.object({ author: v.id("users") })), { author: m }, ctx)!;
    expect(f.kind).toBe("idTable");
    expect(f.path).toBe(".author");
    expect(f.message).toBe(
      `Found ID "${m}" from table \`messages\`, which does not match the table name in validator \`v.id("users")\`.\nPath: .author`,
    );
  });
});

describe("rendering", () => {
  it("renders validators as v.… source text", () => {
    const cases: [AnyValidator, string][] = [
      [v.null(), "v.null()"],
      [v.number(), "v.float64()"],
      [v.int64(), "v.int64()"],
      [v.commitTs(), "v.commitTs()"],
      [v.boolean(), "v.boolean()"],
      [v.string(), "v.string()"],
      [v.bytes(), "v.bytes()"],
      [v.any(), "v.any()"],
      [v.literal("a"), 'v.literal("a")'],
      [v.literal(3), "v.literal(3.0)"],
      [v.literal(2.5), "v.literal(2.5)"],
      [v.literal(7n), "v.literal(7n)"],
      [v.literal(false), "v.literal(false)"],
      [v.literal(NaN), "v.literal(NaN)"],
      [v.id("users"), 'v.id("users")'],
      [v.array(v.string()), "v.array(v.string())"],
      [v.record(v.id("users"), v.number()), 'v.record(v.id("users"), v.float64())'],
      [v.union(v.literal("a"), v.null()), 'v.union(v.literal("a"), v.null())'],
      [v.optional(v.string()), "v.string()"],
      [
        v.object({ b: v.optional(v.string()), a: v.array(v.null()), "x-y": v.any() }),
        'v.object({a: v.array(v.null()), b: v.optional(v.string()), "x-y": v.any()})',
      ],
    ];
    for (const [validator, text] of cases) expect(renderValidator(json(validator))).toBe(text);
  });

  it("renders values compactly", () => {
    expect(
      renderValue({ userId: "test_user", paginationOpts: { numItems: 10, cursor: null } }),
    ).toBe('{paginationOpts: {cursor: null, numItems: 10.0}, userId: "test_user"}');
    expect(renderValue([1.5, -0, NaN, -Infinity, 3n, true, new Uint8Array([1, 2, 3]).buffer])).toBe(
      '[1.5, -0.0, NaN, -Infinity, 3n, true, bytes("AQID")]',
    );
    expect(renderValue({ "a b": 1, c: undefined } as unknown as Value)).toBe('{"a b": 1.0}');
    expect(renderValue(undefined)).toBe("undefined");
  });

  it("truncates huge values without walking all of them", () => {
    const huge = Array.from({ length: 200_000 }, (_, i) => ({ i, s: "x".repeat(10) }));
    const text = renderValue(huge);
    expect(text.length).toBeLessThanOrEqual(1003);
    expect(text.endsWith("...")).toBe(true);
    expect(renderValue("y".repeat(1 << 20)).length).toBeLessThanOrEqual(1003);
    const f = validateValue(json(v.string()), huge, ctx)!;
    expect(f.message.length).toBeLessThan(1200);
    // Rendering stops reading elements once the text is long enough.
    let reads = 0;
    const watched = new Proxy(huge, {
      get(target, key, receiver) {
        if (typeof key === "string" && /^\d+$/.test(key)) reads++;
        return Reflect.get(target, key, receiver);
      },
    });
    renderValue(watched);
    expect(reads).toBeLessThan(100);
  });
});

describe("messages", () => {
  const messages = v.object({
    messages: v.array(v.object({ author: v.string(), body: v.string() })),
  });

  it("a mismatch names the path, the expected validator and the value", () => {
    const f = validateValue(
      json(messages),
      {
        messages: [
          { author: "a", body: "b" },
          { author: "a", body: "b" },
          { author: 3, body: "b" },
        ],
      },
      ctx,
    )!;
    expect(f.kind).toBe("noMatch");
    expect(f.path).toBe(".messages[2].author");
    expect(f.expected).toBe("v.string()");
    expect(f.actual).toBe("3.0");
    expect(f.message).toBe(
      "Value does not match validator.\nPath: .messages[2].author\nValue: 3.0\nValidator: v.string()",
    );
  });

  it("missing and extra fields show the object and its validator", () => {
    const missing = validateValue(json(messages), { messages: [{ author: "a" }] }, ctx)!;
    expect(missing.kind).toBe("missingField");
    expect(missing.path).toBe(".messages[0].body");
    expect(missing.objectPath).toBe(".messages[0]");
    expect(missing.message).toBe(
      "Object is missing the required field `body`. Consider wrapping the field validator in " +
        "`v.optional(...)` if this is expected.\nPath: .messages[0]\n\n" +
        'Object: {author: "a"}\nValidator: v.object({author: v.string(), body: v.string()})',
    );
    const extra = validateValue(json(messages), { messages: [], userId: "u" }, ctx)!;
    expect(extra.kind).toBe("extraField");
    expect(extra.path).toBe(".userId");
    expect(extra.message).toBe(
      "Object contains extra field `userId` that is not in the validator.\n\n" +
        'Object: {messages: [], userId: "u"}\n' +
        "Validator: v.object({messages: v.array(v.object({author: v.string(), body: v.string()}))})",
    );
  });

  it("field names that are not identifiers are quoted in paths", () => {
    const f = validateValue(json(v.record(v.string(), v.number())), { "a b": "x" }, ctx)!;
    expect(f.path).toBe('["a b"]');
  });

  it("validateArgs wraps messages as ArgumentValidationError", () => {
    const args = json(v.object({ ownerId: v.id("users") }));
    const e = validateArgs(args, { ownerId: "user_demo_001" }, ctx)!;
    expect(e.target).toBe("arguments");
    expect(e.message).toBe(
      'ArgumentValidationError: Value does not match validator.\nPath: .ownerId\nValue: "user_demo_001"\nValidator: v.id("users")',
    );
    expect(validateArgs(args, { ownerId: id("users") }, ctx)).toBeNull();
  });

  it("validateReturns wraps messages as ReturnsValidationError", () => {
    const e = validateReturns(json(v.object({ a: v.string() })), { a: "x", b: 1 }, ctx)!;
    expect(e.target).toBe("returns");
    expect(e.message.startsWith("ReturnsValidationError: Object contains extra field `b`")).toBe(
      true,
    );
  });
});

describe("arguments and return values", () => {
  it("without declared args (v.any()) any object is accepted, but only an object", () => {
    const anyArgs = parseArgsValidator(
      (queryGeneric({ handler: async () => null }) as AnyValidator).exportArgs(),
    );
    expect(anyArgs).toEqual({ type: "any" });
    expect(validateArgs(anyArgs, { x: [1n, new ArrayBuffer(2)] }, ctx)).toBeNull();
    expect(validateArgs(anyArgs, undefined, ctx)).toBeNull();
    for (const bad of [[], null, 1, "x", new ArrayBuffer(0)]) {
      const e = validateArgs(anyArgs, bad as Value, ctx)!;
      expect(e.message).toContain(
        "ArgumentValidationError: The arguments to a Convex function must be an object. Received: ",
      );
    }
  });

  it("declared args come as an object validator; undefined args are {}", () => {
    const fn = queryGeneric({
      args: { a: v.optional(v.string()) },
      returns: v.null(),
      handler: async () => null,
    }) as AnyValidator;
    const args = parseArgsValidator(fn.exportArgs());
    expect(args.type).toBe("object");
    expect(validateArgs(args, undefined, ctx)).toBeNull();
    expect(validateArgs(args, { a: "x" }, ctx)).toBeNull();
    expect(validateArgs(args, { b: "x" }, ctx)?.failure?.kind).toBe("extraField");
    const returns = parseReturnsValidator(fn.exportReturns());
    expect(returns).toEqual({ type: "null" });
    expect(validateReturns(returns, undefined, ctx)).toBeNull();
    expect(validateReturns(returns, 0, ctx)).not.toBeNull();
  });

  it("no returns validator: nothing is checked", () => {
    const fn = queryGeneric({ handler: async () => null }) as AnyValidator;
    const returns = parseReturnsValidator(fn.exportReturns());
    expect(returns).toBeNull();
    expect(validateReturns(returns, { anything: 1n }, ctx)).toBeNull();
  });

  it("returns given as a plain object of validators becomes an object validator", () => {
    const fn = queryGeneric({ returns: { a: v.string() }, handler: async () => ({ a: "x" }) });
    const returns = parseReturnsValidator((fn as AnyValidator).exportReturns());
    expect(validateReturns(returns, { a: "x" }, ctx)).toBeNull();
    expect(validateReturns(returns, { a: 1 }, ctx)).not.toBeNull();
  });
});

describe("validator JSON parsing", () => {
  it("refuses unknown or malformed validators", () => {
    expect(() => parseValidatorJson({ type: "set" })).toThrow(/unknown validator type "set"/);
    expect(() => parseValidatorJson({ type: "array" })).toThrow(/at \.value/);
    expect(() =>
      parseValidatorJson({ type: "object", value: { a: { fieldType: { type: "string" } } } }),
    ).toThrow(/optional/);
    expect(() => parseValidatorJson({ type: "literal", value: [1] })).toThrow(/literal/);
    expect(() => parseValidatorJson({ type: "id" })).toThrow(/tableName/);
    expect(() => parseArgsValidator(JSON.stringify({ type: "string" }))).toThrow(/object or any/);
  });
});

describe("documents", () => {
  const users = v.object({ name: v.string(), age: v.optional(v.number()) });

  it("checks system fields and allows them although the validator does not list them", () => {
    const doc = { _id: id("users"), _creationTime: 1.7e12, name: "ada" };
    expect(validateDocument("users", json(users), doc, ctx)).toBeNull();
    expect(validateDocument("users", json(users), { name: "ada" }, ctx)).toBeNull();
    const wrongTable = validateDocument(
      "users",
      json(users),
      { ...doc, _id: id("messages") },
      ctx,
    )!;
    expect(wrongTable.failure?.path).toBe("._id");
    expect(wrongTable.message).toContain("Path: ._id");
    expect(wrongTable.message).toContain('v.id("users")');
    const badTime = validateDocument("users", json(users), { ...doc, _creationTime: "now" }, ctx)!;
    expect(badTime.message).toBe(
      'Failed to insert or update a document in table "users" because it does not match the schema: ' +
        'Value does not match validator.\nPath: ._creationTime\nValue: "now"\nValidator: v.float64()',
    );
  });

  it("words document errors as the official backend does", () => {
    const e = validateDocument(
      "users",
      json(users),
      { _id: id("users"), age: 3 },
      ctx,
    )! as ConvexValidationError;
    expect(e.target).toBe("document");
    expect(e.tableName).toBe("users");
    expect(e.message).toBe(
      'Failed to insert or update a document in table "users" because it does not match the schema: ' +
        "Object is missing the required field `name`. Consider wrapping the field validator in " +
        "`v.optional(...)` if this is expected.\n\nObject: {age: 3.0}\n" +
        "Validator: v.object({age: v.optional(v.float64()), name: v.string()})",
    );
    const extra = validateDocument("users", json(users), { name: "a", nick: "b" }, ctx)!;
    expect(extra.message).toContain(
      "Object contains extra field `nick` that is not in the validator.",
    );
  });

  it("union and any table validators", () => {
    const events = v.union(
      v.object({ kind: v.literal("click"), x: v.number() }),
      v.object({ kind: v.literal("key"), key: v.string() }),
    );
    const base = { _id: id("messages"), _creationTime: 1 };
    expect(
      validateDocument("messages", json(events), { ...base, kind: "click", x: 1 }, ctx),
    ).toBeNull();
    expect(
      validateDocument("messages", json(events), { ...base, kind: "key", x: 1 }, ctx),
    ).not.toBeNull();
    expect(
      validateDocument("messages", json(v.any()), { ...base, whatever: [1n] }, ctx),
    ).toBeNull();
    expect(
      validateDocument("messages", json(v.any()), { ...base, _id: id("users") }, ctx),
    ).not.toBeNull();
  });

  it("reads a schema's export() and enforces it only where asked", () => {
    const schema = defineSchema({
      users: defineTable(users),
      files: defineTable({ id: v.id("_storage") }),
    });
    const s = schemaValidatorsFromJson((schema as AnyValidator).export());
    expect(s.schemaValidation).toBe(true);
    expect([...s.tables.keys()]).toEqual(["users", "files"]);
    expect(validateWrite(s, "users", { name: 1 }, ctx)).not.toBeNull();
    expect(validateWrite(s, "files", { id: id("_storage") }, ctx)).toBeNull();
    expect(validateWrite(s, "files", { id: id("users") }, ctx)).not.toBeNull();
    // Tables the schema does not list are not validated.
    expect(validateWrite(s, "other", { name: 1 }, ctx)).toBeNull();
    const off = defineSchema({ users: defineTable(users) }, { schemaValidation: false });
    const so = schemaValidatorsFromJson((off as AnyValidator).export());
    expect(so.schemaValidation).toBe(false);
    expect(validateWrite(so, "users", { name: 1 }, ctx)).toBeNull();
    expect(validateWrite(null, "users", { name: 1 }, ctx)).toBeNull();
  });
});

// ---------------------------------------------------------------------------
// Property tests: random official validators, values that conform to them,
// values that are broken in one place, and an independent oracle.

const issued = new Map<string, string>();
function trackedId(table: string): string {
  const s = id(table);
  issued.set(s, table);
  return s;
}

interface Options {
  ids: boolean;
  /** Field names like `toString` (convex-test reads them off Object.prototype). */
  prototypeNames: boolean;
  records: boolean;
  specialLiterals: boolean;
}

function validatorArb(o: Options): fc.Arbitrary<AnyValidator> {
  const names = [
    "a",
    "b",
    "c",
    "_d",
    "e1",
    ...(o.prototypeNames ? ["toString", "constructor"] : []),
  ];
  const literal = fc.oneof(
    string.map((s) => v.literal(s)),
    fc.boolean().map((b) => v.literal(b)),
    fc.constantFrom(1, 2.5, 42).map((n) => v.literal(n)),
    ...(o.specialLiterals
      ? [
          int64.map((b) => v.literal(b)),
          fc.constantFrom(0, -0, NaN, Infinity).map((n) => v.literal(n)),
        ]
      : []),
  );
  const leaves: fc.Arbitrary<AnyValidator>[] = [
    fc.constantFrom(v.null(), v.number(), v.int64(), v.boolean(), v.string(), v.bytes(), v.any()),
    literal,
  ];
  if (o.ids) leaves.push(fc.constantFrom("users", "messages", "_storage").map((t) => v.id(t)));
  const keyValidator = o.ids
    ? fc.constantFrom(v.string(), v.id("users"), v.union(v.id("users"), v.id("_storage")))
    : fc.constant(v.string());
  return fc.letrec<{ validator: AnyValidator }>((tie) => ({
    validator: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      ...leaves,
      tie("validator").map((e) => v.array(e)),
      fc
        .dictionary(fc.constantFrom(...names), fc.tuple(tie("validator"), fc.boolean()), {
          maxKeys: 4,
        })
        .map((fields) =>
          v.object(
            Object.fromEntries(
              Object.entries(fields).map(([k, [f, opt]]) => [k, opt ? v.optional(f) : f]),
            ),
          ),
        ),
      fc.array(tie("validator"), { minLength: 1, maxLength: 3 }).map((ms) => v.union(...ms)),
      ...(o.records
        ? [fc.tuple(keyValidator, tie("validator")).map(([k, val]) => v.record(k, val))]
        : []),
    ),
  })).validator;
}

/** Values conforming to a validator (JSON form). */
function conforming(validator: ValidatorJSON): fc.Arbitrary<Value> {
  switch (validator.type) {
    case "null":
      return fc.constant(null);
    case "number":
      return float64;
    case "bigint":
    case "commitTs":
      return int64;
    case "boolean":
      return fc.boolean();
    case "string":
      return string;
    case "bytes":
      return bytes;
    case "any":
      return anyValue;
    case "literal":
      return fc.constant(literalOf(validator));
    case "id":
      return fc.constant(null).map(() => trackedId(validator.tableName));
    case "array":
      return fc.array(conforming(validator.value), { maxLength: 3 });
    case "union":
      return fc.oneof(...validator.value.map(conforming));
    case "object": {
      const entries = Object.entries(validator.value);
      return fc.record(Object.fromEntries(entries.map(([k, f]) => [k, conforming(f.fieldType)])), {
        requiredKeys: entries.filter(([, f]) => !f.optional).map(([k]) => k),
      }) as fc.Arbitrary<Value>;
    }
    case "record":
      return fc
        .array(
          fc.tuple(
            conforming(validator.keys) as fc.Arbitrary<string>,
            conforming(validator.values.fieldType),
          ),
          {
            maxLength: 3,
          },
        )
        .map((pairs) => Object.fromEntries(pairs));
  }
}

function literalOf(validator: { value: unknown }): Value {
  const j = validator.value;
  if (isPlainObject(j) && typeof j.$integer === "string")
    return Buffer.from(j.$integer, "base64").readBigInt64LE();
  if (isPlainObject(j) && typeof j.$float === "string")
    return Buffer.from(j.$float, "base64").readDoubleLE();
  return j as Value;
}

/** An independent, plain reading of the semantics (the oracle). */
function oracle(validator: ValidatorJSON, x: Value | undefined): boolean {
  if (x === undefined) return false;
  const t = typeof x;
  switch (validator.type) {
    case "any":
      return true;
    case "null":
      return x === null;
    case "number":
      return t === "number";
    case "bigint":
    case "commitTs":
      return t === "bigint";
    case "boolean":
      return t === "boolean";
    case "string":
      return t === "string";
    case "bytes":
      return x instanceof ArrayBuffer;
    case "literal":
      return valuesEqual(literalOf(validator), x);
    case "id":
      // Every ID the generators hand out is remembered with its table, so the
      // oracle needs no decoder of its own; other strings are not IDs.
      return typeof x === "string" && issued.get(x) === validator.tableName;
    case "array":
      return Array.isArray(x) && x.every((e) => oracle(validator.value, e));
    case "union":
      return validator.value.some((m) => oracle(m, x));
    case "object": {
      if (!isPlainObject(x)) return false;
      const present = Object.keys(x).filter((k) => x[k] !== undefined);
      if (present.some((k) => !Object.hasOwn(validator.value, k))) return false;
      return Object.entries(validator.value).every(([k, f]) =>
        present.includes(k) ? oracle(f.fieldType, x[k] as Value) : f.optional,
      );
    }
    case "record": {
      if (!isPlainObject(x)) return false;
      return Object.keys(x)
        .filter((k) => x[k] !== undefined)
        .every(
          (k) => oracle(validator.keys, k) && oracle(validator.values.fieldType, x[k] as Value),
        );
    }
  }
}

/** Replaces the value at a random path of `x` with `replacement`; returns the new value and the path. */
function mutateAt(x: Value, choices: number[], replacement: Value): { value: Value; path: string } {
  const path: string[] = [];
  const go = (cur: Value, depth: number): Value => {
    const c = choices[depth];
    if (c === undefined) return replacement;
    if (Array.isArray(cur) && cur.length > 0) {
      const i = c % cur.length;
      path.push(`[${i}]`);
      const copy = cur.slice();
      copy[i] = go(cur[i]!, depth + 1);
      return copy;
    }
    if (isPlainObject(cur) && !(cur instanceof ArrayBuffer)) {
      const keys = Object.keys(cur);
      if (keys.length > 0) {
        const k = keys[c % keys.length]!;
        path.push(/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${JSON.stringify(k)}]`);
        return { ...cur, [k]: go(cur[k] as Value, depth + 1) };
      }
    }
    return replacement;
  };
  const value = go(x, 0);
  return { value, path: path.join("") };
}

describe("property tests", () => {
  const full: Options = { ids: true, prototypeNames: true, records: true, specialLiterals: true };

  it("values built to conform are accepted", () => {
    fc.assert(
      fc.property(
        validatorArb(full).chain((val) => {
          const j = json(val);
          return fc.tuple(fc.constant(j), conforming(j));
        }),
        ([j, x]) => {
          const f = validateValue(j, x, ctx);
          if (f !== null)
            throw new Error(`${renderValidator(j)} refused ${renderValue(x)}: ${f.message}`);
        },
      ),
      { numRuns: 1500 },
    );
  });

  it("agrees with the oracle on arbitrary values, including IDs of other tables", () => {
    const idValue = fc.constantFrom("users", "messages", "_storage").map(trackedId);
    const candidate = fc.oneof(anyValue, idValue, fc.array(idValue, { maxLength: 2 }));
    fc.assert(
      fc.property(validatorArb(full), candidate, (val, x) => {
        const j = json(val);
        expect(validateValue(j, x, ctx) === null).toBe(oracle(j, x));
      }),
      { numRuns: 1500 },
    );
  });

  it("a value broken in one place is judged like the oracle, and the failure points on the way to it", () => {
    const replacement = fc.oneof(
      anyValue,
      fc.constantFrom("users", "messages", "_storage").map(trackedId),
      fc.constant(undefined as unknown as Value),
    );
    fc.assert(
      fc.property(
        validatorArb(full).chain((val) => {
          const j = json(val);
          return fc.tuple(
            fc.constant(j),
            conforming(j),
            fc.array(fc.nat(), { maxLength: 4 }),
            replacement,
          );
        }),
        ([j, x, choices, r]) => {
          const { value, path } = mutateAt(x, choices, r);
          const f = validateValue(j, value, ctx);
          expect(f === null).toBe(oracle(j, value));
          if (f !== null) {
            // Either on the way to the broken place, or inside the replacement.
            expect(path.startsWith(f.objectPath) || f.path.startsWith(path)).toBe(true);
            expect(f.message).toContain(f.expected);
            if (f.objectPath) expect(f.message).toContain(`Path: ${f.objectPath}`);
          }
        },
      ),
      { numRuns: 1500 },
    );
  });

  it("messages always carry the path, the expected validator and the actual value", () => {
    fc.assert(
      fc.property(validatorArb(full), anyValue, (val, x) => {
        const g = validateValue(json(v.object({ wrapper: v.array(val) })), { wrapper: [x] }, ctx);
        if (g === null) return;
        expect(g.path.startsWith(".wrapper")).toBe(true);
        expect(g.message).toContain(`Path: ${g.objectPath || g.path}`);
        expect(g.message).toContain(g.expected);
        expect(g.message).toContain(g.actual);
      }),
      { numRuns: 1000 },
    );
  });
});

// ---------------------------------------------------------------------------
// The official mock, convex-test, validates arguments with its own code: on
// the validators it models the same way (no IDs, whose format differs; no
// records, which it does not check; no bigint or special-float literals, which
// it compares with `!==` against their JSON form) it must agree with us.

describe("agreement with convex-test", () => {
  const current: { validator: AnyValidator } = { validator: v.any() };
  const modules = {
    "./_generated/api.js": async () => ({}),
    "./probe.js": async () => ({
      check: queryGeneric({ args: { x: current.validator }, handler: async () => null }),
    }),
  };
  const probe = makeFunctionReference<"query">("probe:check");

  async function mockAccepts(validator: AnyValidator, x: Value): Promise<boolean> {
    current.validator = validator;
    const t = convexTest(undefined, modules);
    try {
      await t.query(probe, { x } as never);
      return true;
    } catch (e) {
      const message = String((e as Error).message);
      // Its own refusals; the TypeError its object check throws on `null`; the
      // TypeError it throws while wording a refusal of a null-prototype object.
      if (
        /^Validator error|^Cannot convert undefined or null to object|^Cannot convert object to primitive value/.test(
          message,
        )
      ) {
        return false;
      }
      throw e;
    }
  }

  it("accepts and refuses the same arguments", async () => {
    const modelled: Options = {
      ids: false,
      prototypeNames: false,
      records: false,
      specialLiterals: false,
    };
    let refusals = 0;
    await fc.assert(
      fc.asyncProperty(
        validatorArb(modelled).chain((val) =>
          fc.tuple(fc.constant(val), fc.oneof(conforming(json(val)), anyValue)),
        ),
        async ([val, x]) => {
          // convex-test treats -0 and 0 alike in literals; ours are Convex values.
          const ours = validateArgs(json(v.object({ x: val })), { x }, ctx) === null;
          if (!ours) refusals++;
          expect(await mockAccepts(val, x)).toBe(ours);
        },
      ),
      { numRuns: Number(process.env.MOCK_RUNS ?? 400) },
    );
    expect(refusals).toBeGreaterThan(20);
  });

  it("agrees on documents written under a schema", async () => {
    const schema = defineSchema({
      users: defineTable({ name: v.string(), tags: v.optional(v.array(v.string())) }),
    });
    const table = json((schema as AnyValidator).tables.users.validator);
    const t = convexTest(schema, modules);
    const docs: Value[] = [
      { name: "a" },
      { name: "a", tags: ["x"] },
      { name: 1 },
      { tags: [] },
      { name: "a", tags: [1] },
      { name: "a", extra: true },
    ];
    for (const doc of docs) {
      const ours = validateDocument("users", table, doc, ctx) === null;
      let theirs = true;
      try {
        await t.run(async (c) => {
          await c.db.insert("users", doc as never);
        });
      } catch {
        theirs = false;
      }
      expect(theirs).toBe(ours);
    }
  });
});
