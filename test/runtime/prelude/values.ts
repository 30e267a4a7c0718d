/**
 * Random JavaScript values as source text, so the same value can be built in
 * Node and inside the isolate and the results of structuredClone / inspect
 * compared.
 */
import fc from "fast-check";

function numberSource(n: number): string {
  if (Object.is(n, -0)) return "-0";
  if (Number.isNaN(n)) return "NaN";
  if (n === Number.POSITIVE_INFINITY) return "Infinity";
  if (n === Number.NEGATIVE_INFINITY) return "-Infinity";
  return n < 0 ? `(${n})` : `${n}`;
}

const str = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 8 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      "it's",
      'say "hi"',
      "both ' and \"",
      "a\nb\tc",
      "\u0000\u007f\u0085",
      "__proto__",
      "x".repeat(30),
    ),
  },
);

const primitiveSource = fc.oneof(
  fc.double().map(numberSource),
  fc.integer({ min: -1000, max: 1000 }).map(numberSource),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map((b) => (b < 0n ? `(${b}n)` : `${b}n`)),
  str.map((s) => JSON.stringify(s)),
  fc.constantFrom("true", "false", "null", "undefined"),
);

const keySource = fc.oneof(
  fc.constantFrom("a", "b", "_x", "$y", "key with space", "0", "12", "-1", "", "__proto__", "été"),
  fc.string({ maxLength: 6 }),
);

const dateSource = fc.oneof(
  fc.integer({ min: -8.64e15, max: 8.64e15 }).map((t) => `new Date(${t})`),
  fc.constant("new Date(NaN)"),
);

const regexpSource = fc
  .tuple(
    fc.constantFrom("a", "a\\/b", "[0-9]+", "^x$", "(?:y)", "\\u0041", "a|b"),
    fc.constantFrom("", "g", "gi", "muy", "s"),
  )
  .map(([src, flags]) => `/${src}/${flags}`);

const typedArraySource = fc.oneof(
  fc
    .array(fc.integer({ min: 0, max: 255 }), { maxLength: 12 })
    .map((a) => `new Uint8Array([${a}])`),
  fc
    .array(fc.integer({ min: -128, max: 127 }), { maxLength: 8 })
    .map((a) => `new Int8Array([${a}])`),
  fc
    .array(fc.integer({ min: -40000, max: 40000 }), { maxLength: 8 })
    .map((a) => `new Int32Array([${a}])`),
  fc.array(fc.double(), { maxLength: 6 }).map((a) => `new Float64Array([${a.map(numberSource)}])`),
  fc
    .array(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), { maxLength: 4 })
    .map((a) => `new BigInt64Array([${a.map((b) => `${b}n`)}])`),
  fc
    .tuple(fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 16 }), fc.nat(3))
    .map(([a, off]) => `new Uint8Array([${a}]).subarray(${off})`),
  fc
    .array(fc.integer({ min: 0, max: 255 }), { maxLength: 10 })
    .map((a) => `new Uint8Array([${a}]).buffer`),
  fc
    .array(fc.integer({ min: 0, max: 255 }), { minLength: 2, maxLength: 10 })
    .map((a) => `new DataView(new Uint8Array([${a}]).buffer, 1)`),
);

const boxedSource = fc.oneof(
  fc.double().map((n) => `new Number(${numberSource(n)})`),
  str.map((s) => `new String(${JSON.stringify(s)})`),
  fc.boolean().map((b) => `new Boolean(${b})`),
  fc.bigInt({ min: -100n, max: 100n }).map((b) => `Object(${b}n)`),
);

export interface ValueOptions {
  /** Include values structuredClone refuses (functions, symbols) and ones only inspect cares about. */
  forInspect?: boolean;
}

/** Source text of a random value. */
export function valueSource(options: ValueOptions = {}): fc.Arbitrary<string> {
  const extraLeaves: fc.Arbitrary<string>[] = options.forInspect
    ? [
        fc.constantFrom(
          "function foo() {}",
          "(() => 1)",
          "(async function af() {})",
          "(function* gen() {})",
          "class Animal {}",
          "class Dog extends Array {}",
          "Symbol()",
          'Symbol("desc")',
          "new WeakMap()",
          "Object.create(null)",
          "[]",
          "{}",
          "new Map()",
          "new Set()",
        ),
      ]
    : [];
  const { value } = fc.letrec<{ value: string }>((tie) => ({
    value: fc.oneof(
      { depthSize: "small", withCrossShrink: true },
      { weight: 5, arbitrary: primitiveSource },
      { weight: 1, arbitrary: dateSource },
      { weight: 1, arbitrary: regexpSource },
      { weight: 1, arbitrary: typedArraySource },
      { weight: 1, arbitrary: boxedSource },
      ...extraLeaves.map((arbitrary) => ({ weight: 1, arbitrary })),
      {
        weight: 2,
        arbitrary: fc.array(tie("value"), { maxLength: 5 }).map((items) => `[${items.join(", ")}]`),
      },
      {
        weight: 1,
        arbitrary: fc
          .tuple(fc.array(tie("value"), { minLength: 1, maxLength: 5 }), fc.nat(), fc.nat(3))
          .map(([items, hole, extra]) => {
            const h = hole % items.length;
            return `(() => { const a = [${items.join(", ")}]; delete a[${h}]; a.length += ${extra}; return a; })()`;
          }),
      },
      {
        weight: 2,
        arbitrary: fc
          .array(fc.tuple(keySource, tie("value")), { maxLength: 5 })
          .map(
            (entries) =>
              `({ ${entries.map(([k, v]) => `[${JSON.stringify(k)}]: ${v}`).join(", ")} })`,
          ),
      },
      {
        weight: 1,
        arbitrary: fc
          .array(fc.tuple(tie("value"), tie("value")), { maxLength: 4 })
          .map((entries) => `new Map([${entries.map(([k, v]) => `[${k}, ${v}]`).join(", ")}])`),
      },
      {
        weight: 1,
        arbitrary: fc
          .array(tie("value"), { maxLength: 4 })
          .map((items) => `new Set([${items.join(", ")}])`),
      },
      {
        weight: 1,
        arbitrary: fc.array(fc.tuple(keySource, tie("value")), { maxLength: 3 }).map(
          (entries) =>
            `(() => { class Point { constructor() { ${entries
              // Assigning "__proto__" would change the prototype, not add a key.
              .filter(([k]) => k !== "__proto__")
              .map(([k, v]) => `this[${JSON.stringify(k)}] = ${v};`)
              .join(" ")} } }; return new Point(); })()`,
        ),
      },
      {
        weight: 1,
        arbitrary: fc
          .array(fc.tuple(keySource, tie("value")), { maxLength: 3 })
          .map(
            (entries) =>
              `Object.assign(Object.create(null), { ${entries
                .map(([k, v]) => `[${JSON.stringify(k)}]: ${v}`)
                .join(", ")} })`,
          ),
      },
    ),
  }));
  return value;
}

/**
 * Source of `describe(value)`: a JSON description of a value's shape —
 * types, prototypes, own properties, identity of shared references — the
 * same in Node and in the isolate for equivalent values.
 */
export const DESCRIBE = `
function describe(root) {
  const ids = new Map();
  const boxed = [
    [Number.prototype.valueOf, "Number"],
    [String.prototype.valueOf, "String"],
    [Boolean.prototype.valueOf, "Boolean"],
    [BigInt.prototype.valueOf, "BigInt"],
  ];
  function d(v) {
    if (typeof v === "number") return { num: Object.is(v, -0) ? "-0" : String(v) };
    if (typeof v === "bigint") return { big: String(v) };
    if (v === undefined) return { undef: true };
    if (typeof v !== "object" || v === null) return v;
    if (ids.has(v)) return { ref: ids.get(v) };
    ids.set(v, ids.size);
    const proto = Object.getPrototypeOf(v);
    const out = {
      tag: Object.prototype.toString.call(v),
      proto: proto === null ? null : (proto.constructor && proto.constructor.name) || "?",
    };
    if (v instanceof Date) out.time = String(v.getTime());
    else if (v instanceof RegExp) {
      out.source = v.source;
      out.flags = v.flags;
      out.lastIndex = v.lastIndex;
    } else if (v instanceof Map) out.entries = [...v].map(([k, x]) => [d(k), d(x)]);
    else if (v instanceof Set) out.values = [...v].map(d);
    else if (ArrayBuffer.isView(v)) {
      out.buffer = d(v.buffer);
      out.byteOffset = v.byteOffset;
      out.byteLength = v.byteLength;
    } else if (v instanceof ArrayBuffer) out.bytes = Array.from(new Uint8Array(v));
    else if (v instanceof Error) {
      out.name = v.name;
      out.message = v.message;
      out.stack = typeof v.stack;
      out.cause = "cause" in v ? d(v.cause) : "none";
    }
    for (const [valueOf, name] of boxed) {
      try {
        out.boxed = [name, d(valueOf.call(v))];
      } catch {}
    }
    if (!ArrayBuffer.isView(v)) {
      out.props = Object.getOwnPropertyNames(v)
        .filter((k) => k !== "stack")
        .map((k) => {
          const desc = Object.getOwnPropertyDescriptor(v, k);
          return [k, desc.enumerable, "value" in desc ? d(desc.value) : "accessor"];
        });
      out.symbols = Object.getOwnPropertySymbols(v).length;
    }
    return out;
  }
  return JSON.stringify(d(root));
}
`;
