/**
 * `console`: every call formats its arguments into one message (as Node's
 * `console` does, via util.format / util.inspect) and appends
 * `{ level, message }` to the execution's log buffer (see env.ts for limits).
 */
import { appendLog, type LogLevel, onBegin } from "./env.js";
import { format, type InspectOptions, inspect } from "./inspect.js";
import { mapSizeGetter as mapSize, setSizeGetter as setSize } from "./intrinsics.js";
import { performanceNow } from "./time.js";

let groupIndent = "";
const counts = new Map<string, number>();
const timers = new Map<string, number>();

onBegin(() => {
  groupIndent = "";
  counts.clear();
  timers.clear();
});

function emit(level: LogLevel, message: string): void {
  if (groupIndent.length !== 0) {
    if (message.includes("\n")) message = message.replaceAll("\n", `\n${groupIndent}`);
    message = groupIndent + message;
  }
  appendLog(level, message);
}

function formatTime(ms: number): string {
  if (ms >= 1000) return `${(ms / 1000).toFixed(3)}s`;
  return `${Number(ms.toFixed(3))}ms`;
}

// ---------------------------------------------------------------------------
// console.table (the layout of Node's)
// ---------------------------------------------------------------------------

function stringWidth(s: string): number {
  let width = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    // Combining marks and zero-width characters take no column.
    if ((cp >= 0x300 && cp <= 0x36f) || cp === 0x200b || cp === 0x200c || cp === 0x200d) continue;
    width += isWide(cp) ? 2 : 1;
  }
  return width;
}

function isWide(cp: number): boolean {
  return (
    cp >= 0x1100 &&
    (cp <= 0x115f ||
      cp === 0x2329 ||
      cp === 0x232a ||
      (cp >= 0x2e80 && cp <= 0x3247 && cp !== 0x303f) ||
      (cp >= 0x3250 && cp <= 0x4dbf) ||
      (cp >= 0x4e00 && cp <= 0xa4c6) ||
      (cp >= 0xa960 && cp <= 0xa97c) ||
      (cp >= 0xac00 && cp <= 0xd7a3) ||
      (cp >= 0xf900 && cp <= 0xfaff) ||
      (cp >= 0xfe10 && cp <= 0xfe19) ||
      (cp >= 0xfe30 && cp <= 0xfe6b) ||
      (cp >= 0xff01 && cp <= 0xff60) ||
      (cp >= 0xffe0 && cp <= 0xffe6) ||
      (cp >= 0x1b000 && cp <= 0x1b001) ||
      (cp >= 0x1f200 && cp <= 0x1f251) ||
      (cp >= 0x1f300 && cp <= 0x1f64f) ||
      (cp >= 0x20000 && cp <= 0x3fffd))
  );
}

function renderRow(row: string[], widths: number[]): string {
  let out = "│ ";
  for (let i = 0; i < row.length; i++) {
    const cell = row[i]!;
    out += cell + " ".repeat(Math.max(0, widths[i]! - stringWidth(cell)));
    if (i !== row.length - 1) out += " │ ";
  }
  return `${out} │`;
}

function renderTable(head: string[], columns: string[][]): string {
  const rows: string[][] = [];
  const widths = head.map(stringWidth);
  const longest = Math.max(0, ...columns.map((c) => c.length));
  for (let i = 0; i < head.length; i++) {
    const column = columns[i]!;
    for (let j = 0; j < longest; j++) {
      rows[j] ??= [];
      const value = Object.hasOwn(column, j) ? column[j]! : "";
      rows[j]![i] = value;
      widths[i] = Math.max(widths[i] ?? 0, stringWidth(value));
    }
  }
  const divider = widths.map((w) => "─".repeat(w + 2));
  let result = `┌${divider.join("┬")}┐\n${renderRow(head, widths)}\n├${divider.join("┼")}┤\n`;
  for (const row of rows) result += `${renderRow(row, widths)}\n`;
  result += `└${divider.join("┴")}┘`;
  return result;
}

function tableInspect(v: unknown): string {
  const depth =
    v !== null && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length > 2 ? -1 : 0;
  return inspect(v, { depth, maxArrayLength: 3 });
}

function isMapObject(v: object): v is Map<unknown, unknown> {
  try {
    mapSize.call(v);
    return true;
  } catch {
    return false;
  }
}
function isSetObject(v: object): v is Set<unknown> {
  try {
    setSize.call(v);
    return true;
  } catch {
    return false;
  }
}

function table(data: unknown, properties?: unknown): string | undefined {
  if (properties !== undefined && !Array.isArray(properties)) {
    throw new TypeError('The "properties" argument must be an instance of Array.');
  }
  if (data === null || typeof data !== "object") return undefined;
  const indexArray = (length: number) => Array.from({ length }, (_, i) => tableInspect(i));
  if (isMapObject(data)) {
    const keys: string[] = [];
    const values: string[] = [];
    for (const [k, v] of Map.prototype.entries.call(data)) {
      keys.push(tableInspect(k));
      values.push(tableInspect(v));
    }
    return renderTable(
      ["(iteration index)", "Key", "Values"],
      [indexArray(keys.length), keys, values],
    );
  }
  if (isSetObject(data)) {
    const values: string[] = [];
    for (const v of Set.prototype.values.call(data)) values.push(tableInspect(v));
    return renderTable(["(iteration index)", "Values"], [indexArray(values.length), values]);
  }
  const map: Record<string, string[]> = Object.create(null);
  let hasPrimitives = false;
  const valuesColumn: string[] = [];
  const indexKeys = Object.keys(data);
  for (let i = 0; i < indexKeys.length; i++) {
    const item = (data as Record<string, unknown>)[indexKeys[i]!];
    const primitive = item === null || (typeof item !== "function" && typeof item !== "object");
    if (properties === undefined && primitive) {
      hasPrimitives = true;
      valuesColumn[i] = tableInspect(item);
    } else {
      const keys = (properties as string[] | undefined) ?? Object.keys(item as object);
      for (const key of keys) {
        map[key] ??= [];
        if ((primitive && properties) || !Object.hasOwn(item as object, key)) map[key]![i] = "";
        else map[key]![i] = tableInspect((item as Record<string, unknown>)[key]);
      }
    }
  }
  const head = Object.keys(map);
  const columns = Object.values(map);
  if (hasPrimitives) {
    head.push("Values");
    columns.push(valuesColumn);
  }
  head.unshift("(index)");
  columns.unshift(indexKeys);
  return renderTable(head, columns);
}

// ---------------------------------------------------------------------------
// The console object
// ---------------------------------------------------------------------------

function logger(level: LogLevel) {
  return (...args: unknown[]): void => emit(level, format(...args));
}

export function createConsole(): Record<string, unknown> {
  const log = logger("LOG");
  const methods: Record<string, (...args: never[]) => void> = {
    log,
    info: logger("INFO"),
    warn: logger("WARN"),
    error: logger("ERROR"),
    debug: logger("DEBUG"),
    trace: (...args: unknown[]) => {
      const err = { name: "Trace", message: format(...args), stack: "" };
      const capture = (Error as { captureStackTrace?: (o: object, f: unknown) => void })
        .captureStackTrace;
      if (capture !== undefined) capture(err, methods.trace);
      emit("LOG", err.stack || `Trace: ${err.message}`);
    },
    dir: (obj: unknown, options?: InspectOptions) =>
      emit("LOG", inspect(obj, { customInspect: false, ...(options ?? {}) })),
    dirxml: log,
    table: (data: unknown, properties?: unknown) => {
      const rendered = table(data, properties);
      if (rendered === undefined) log(data);
      else emit("LOG", rendered);
    },
    assert: (condition: unknown, ...args: unknown[]) => {
      if (condition) return;
      if (typeof args[0] === "string") args[0] = `Assertion failed: ${args[0]}`;
      else args.unshift("Assertion failed");
      emit("ERROR", format(...args));
    },
    count: (label: unknown = "default") => {
      const key = `${label}`;
      const n = (counts.get(key) ?? 0) + 1;
      counts.set(key, n);
      emit("LOG", `${key}: ${n}`);
    },
    countReset: (label: unknown = "default") => {
      const key = `${label}`;
      if (!counts.has(key)) {
        emit("WARN", `Count for '${key}' does not exist`);
        return;
      }
      counts.delete(key);
    },
    time: (label: unknown = "default") => {
      const key = `${label}`;
      if (timers.has(key)) {
        emit("WARN", `Label '${key}' already exists for console.time()`);
        return;
      }
      timers.set(key, performanceNow());
    },
    timeLog: (label: unknown = "default", ...data: unknown[]) => {
      const key = `${label}`;
      const start = timers.get(key);
      if (start === undefined) {
        emit("WARN", `No such label '${key}' for console.timeLog()`);
        return;
      }
      const prefix = `${key}: ${formatTime(performanceNow() - start)}`;
      emit("LOG", data.length === 0 ? prefix : format(prefix, ...data));
    },
    timeEnd: (label: unknown = "default") => {
      const key = `${label}`;
      const start = timers.get(key);
      if (start === undefined) {
        emit("WARN", `No such label '${key}' for console.timeEnd()`);
        return;
      }
      timers.delete(key);
      emit("LOG", `${key}: ${formatTime(performanceNow() - start)}`);
    },
    group: (...label: unknown[]) => {
      if (label.length > 0) log(...label);
      groupIndent += "  ";
    },
    groupCollapsed: (...label: unknown[]) => {
      if (label.length > 0) log(...label);
      groupIndent += "  ";
    },
    groupEnd: () => {
      groupIndent = groupIndent.slice(0, Math.max(0, groupIndent.length - 2));
    },
    clear: () => {},
    profile: () => {},
    profileEnd: () => {},
    timeStamp: () => {},
  };
  const console: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(methods)) {
    Object.defineProperty(fn, "name", { value: name });
    Object.defineProperty(console, name, {
      value: fn,
      writable: true,
      enumerable: true,
      configurable: true,
    });
  }
  Object.defineProperty(console, Symbol.toStringTag, {
    value: "console",
    writable: false,
    enumerable: false,
    configurable: true,
  });
  return console;
}

/** `reportError` and uncaught errors in listeners and microtasks: logged as browsers do. */
export function reportError(error: unknown): void {
  emit("ERROR", `Uncaught ${inspect(error)}`);
}
