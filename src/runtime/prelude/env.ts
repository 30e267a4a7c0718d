/**
 * Per-execution state of the isolate: the execution mode, the seeded random
 * number generator, the frozen clock and the console log buffer. The host
 * drives it through `globalThis.__tessera_env` (see globals.ts).
 */
import { Xoshiro128 } from "./prng.js";

export type Mode = "import" | "query" | "mutation" | "action";
export type LogLevel = "LOG" | "INFO" | "WARN" | "ERROR" | "DEBUG";

export interface LogLine {
  level: LogLevel;
  message: string;
}

export interface BeginOptions {
  mode: Mode;
  seed: string;
  nowMs: number;
}

/** At most this many console lines per execution (Convex's documented limit). */
export const MAX_LOG_LINES = 256;
/** At most this many bytes (UTF-8) per console line (Convex's documented limit). */
export const MAX_LOG_LINE_BYTES = 4096;

export const DEFAULT_IMPORT_SEED = "tessera-import-seed";

const MODES: readonly string[] = ["import", "query", "mutation", "action"];

interface State {
  mode: Mode;
  nowMs: number;
  /** The seed of this execution. */
  seed: string;
  /** The generator, created (seeded with `seed`) on first use. */
  rng: Xoshiro128 | undefined;
  logs: LogLine[];
  /** Lines accepted this execution (including ones already taken). */
  lineCount: number;
  /** Whether the "lines dropped" notice was recorded this execution. */
  overflowed: boolean;
  /** Hooks that reset per-execution state elsewhere (console counters and timers). */
  resetHooks: (() => void)[];
}

const state: State = {
  mode: "import",
  nowMs: 0,
  seed: DEFAULT_IMPORT_SEED,
  rng: undefined,
  logs: [],
  lineCount: 0,
  overflowed: false,
  resetHooks: [],
};

export function begin(options: BeginOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new TypeError("begin: expected { mode, seed, nowMs }");
  }
  const { mode, seed, nowMs } = options;
  if (typeof mode !== "string" || !MODES.includes(mode)) {
    throw new TypeError(`begin: mode must be one of ${MODES.join(", ")}, got ${String(mode)}`);
  }
  if (typeof seed !== "string" || seed.length < 16) {
    throw new TypeError("begin: seed must be a string of at least 16 characters");
  }
  if (typeof nowMs !== "number" || !Number.isFinite(nowMs)) {
    throw new TypeError("begin: nowMs must be a finite number");
  }
  state.mode = mode;
  state.nowMs = nowMs;
  state.seed = seed;
  state.rng?.reseed(seed);
  state.logs = [];
  state.lineCount = 0;
  state.overflowed = false;
  for (const hook of state.resetHooks) hook();
}

export function takeLogs(): LogLine[] {
  const logs = state.logs;
  state.logs = [];
  return logs;
}

export function currentMode(): Mode {
  return state.mode;
}

/** V8's own clock, taken before any user code could replace `Date`. */
const wallClock = Date.now;

/** The frozen time of this execution, in ms since the epoch; in actions, the real time. */
export function now(): number {
  return state.mode === "action" ? wallClock() : state.nowMs;
}

/** Milliseconds since the execution started: 0 in queries and mutations (the clock is frozen). */
export function elapsed(): number {
  return state.mode === "action" ? wallClock() - state.nowMs : 0;
}

export function rng(): Xoshiro128 {
  state.rng ??= new Xoshiro128(state.seed);
  return state.rng;
}

export function onBegin(hook: () => void): void {
  state.resetHooks.push(hook);
}

/** Appends a console line, applying the per-execution line and size limits. */
export function appendLog(level: LogLevel, message: string): void {
  if (state.lineCount >= MAX_LOG_LINES) {
    if (!state.overflowed) {
      state.overflowed = true;
      state.logs.push({
        level: "WARN",
        message: `Log overflow (maximum ${MAX_LOG_LINES} lines per execution). Further log lines were dropped.`,
      });
    }
    return;
  }
  state.lineCount++;
  state.logs.push({ level, message: truncateLine(message) });
}

const TRUNCATION_SUFFIX = " (truncated)";

/** Cuts `message` to at most MAX_LOG_LINE_BYTES UTF-8 bytes, on a character boundary, marking the cut. */
export function truncateLine(message: string): string {
  // Fast path: no UTF-16 code unit takes more than 3 bytes in UTF-8.
  if (message.length * 3 <= MAX_LOG_LINE_BYTES) return message;
  const budget = MAX_LOG_LINE_BYTES - TRUNCATION_SUFFIX.length;
  const n = message.length;
  let bytes = 0;
  let i = 0;
  let cut = 0;
  while (i < n) {
    const c = message.charCodeAt(i);
    let size = 3;
    let units = 1;
    if (c < 0x80) size = 1;
    else if (c < 0x800) size = 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < n) {
      const d = message.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        size = 4;
        units = 2;
      }
    }
    if (bytes + size > MAX_LOG_LINE_BYTES) return message.slice(0, cut) + TRUNCATION_SUFFIX;
    bytes += size;
    i += units;
    if (bytes <= budget) cut = i;
  }
  return message;
}
