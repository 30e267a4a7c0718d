/**
 * `Event`, `CustomEvent`, `EventTarget`, `AbortController` and `AbortSignal`
 * (DOM standard), without a DOM tree: dispatch reaches only the target's own
 * listeners (no capture or bubble path).
 */
import { DOMException } from "./domexception.js";
import { guardInternals, guardReach, guardWrite, mapValues, weakMapGet } from "./guard.js";
import { abortSignalTimers } from "./timers.js";
import { preludeGlobal, requireArgs, setInterfaceName, toDOMString } from "./util.js";

/** The prelude's `reportError` (console.js, evaluated only when an error is reported). */
function reportError(error: unknown): void {
  (preludeGlobal("reportError") as (error: unknown) => void)(error);
}

interface EventData {
  type: string;
  bubbles: boolean;
  cancelable: boolean;
  composed: boolean;
  timeStamp: number;
  target: EventTarget | null;
  currentTarget: EventTarget | null;
  eventPhase: number;
  canceled: boolean;
  inPassiveListener: boolean;
  stopPropagation: boolean;
  stopImmediatePropagation: boolean;
  dispatching: boolean;
  initialized: boolean;
}

const eventData = new WeakMap<object, EventData>();

function ev(self: unknown): EventData {
  const d = typeof self === "object" && self !== null ? eventData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

/** The event's data, about to be changed (see guard.ts). */
function evWrite(self: unknown): EventData {
  const d = ev(self);
  guardWrite(self, "an Event");
  return d;
}

export class Event {
  static readonly NONE = 0;
  static readonly CAPTURING_PHASE = 1;
  static readonly AT_TARGET = 2;
  static readonly BUBBLING_PHASE = 3;

  constructor(type: unknown, init: unknown = {}) {
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    if (arguments.length === 0) {
      throw new TypeError("Failed to construct 'Event': 1 argument required, but only 0 present.");
    }
    const options = (init ?? {}) as { bubbles?: unknown; cancelable?: unknown; composed?: unknown };
    eventData.set(this, {
      type: toDOMString(type),
      bubbles: Boolean(options.bubbles),
      cancelable: Boolean(options.cancelable),
      composed: Boolean(options.composed),
      timeStamp: 0,
      target: null,
      currentTarget: null,
      eventPhase: 0,
      canceled: false,
      inPassiveListener: false,
      stopPropagation: false,
      stopImmediatePropagation: false,
      dispatching: false,
      initialized: true,
    });
  }

  get type(): string {
    return ev(this).type;
  }
  get target(): EventTarget | null {
    return guardReach(this, ev(this).target);
  }
  get srcElement(): EventTarget | null {
    return ev(this).target;
  }
  get currentTarget(): EventTarget | null {
    return guardReach(this, ev(this).currentTarget);
  }
  get eventPhase(): number {
    return ev(this).eventPhase;
  }
  get bubbles(): boolean {
    return ev(this).bubbles;
  }
  get cancelable(): boolean {
    return ev(this).cancelable;
  }
  get composed(): boolean {
    return ev(this).composed;
  }
  get defaultPrevented(): boolean {
    return ev(this).canceled;
  }
  get returnValue(): boolean {
    return !ev(this).canceled;
  }
  set returnValue(value: boolean) {
    if (!value) this.preventDefault();
  }
  get cancelBubble(): boolean {
    return ev(this).stopPropagation;
  }
  set cancelBubble(value: boolean) {
    if (value) evWrite(this).stopPropagation = true;
  }
  get isTrusted(): boolean {
    ev(this);
    return false;
  }
  get timeStamp(): number {
    return ev(this).timeStamp;
  }
  composedPath(): EventTarget[] {
    const d = ev(this);
    return d.dispatching && d.currentTarget !== null ? [d.currentTarget] : [];
  }
  preventDefault(): void {
    const d = evWrite(this);
    if (d.cancelable && !d.inPassiveListener) d.canceled = true;
  }
  stopPropagation(): void {
    evWrite(this).stopPropagation = true;
  }
  stopImmediatePropagation(): void {
    const d = evWrite(this);
    d.stopPropagation = true;
    d.stopImmediatePropagation = true;
  }
}
setInterfaceName(Event, "Event");
guardInternals(Event.prototype, (o) => {
  const d = weakMapGet(eventData, o);
  return d === undefined ? [] : [d.target, d.currentTarget, weakMapGet(customDetail, o)];
});
for (const [name, value] of [
  ["NONE", 0],
  ["CAPTURING_PHASE", 1],
  ["AT_TARGET", 2],
  ["BUBBLING_PHASE", 3],
] as const) {
  Object.defineProperty(Event.prototype, name, { value, enumerable: true });
}

const customDetail = new WeakMap<object, unknown>();

export class CustomEvent<T = unknown> extends Event {
  constructor(type: unknown, init: unknown = {}) {
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    if (arguments.length === 0) {
      throw new TypeError(
        "Failed to construct 'CustomEvent': 1 argument required, but only 0 present.",
      );
    }
    super(type, init);
    customDetail.set(this, (init as { detail?: unknown } | null)?.detail ?? null);
  }

  get detail(): T {
    ev(this);
    return guardReach(this, customDetail.get(this) as T);
  }
}
setInterfaceName(CustomEvent, "CustomEvent");

type Callback = ((event: Event) => unknown) | { handleEvent(event: Event): unknown };

interface Listener {
  callback: Callback;
  capture: boolean;
  once: boolean;
  passive: boolean;
  removed: boolean;
}

const listenersOf = new WeakMap<object, Map<string, Listener[]>>();

/** The target's listeners, about to be changed or called (see guard.ts). */
function listeners(self: unknown): Map<string, Listener[]> {
  const l = typeof self === "object" && self !== null ? listenersOf.get(self) : undefined;
  if (l === undefined) throw new TypeError("Illegal invocation");
  guardWrite(self, "an EventTarget");
  return l;
}

function flattenOptions(options: unknown): boolean {
  if (typeof options === "boolean") return options;
  if (typeof options === "object" && options !== null) {
    return Boolean((options as { capture?: unknown }).capture);
  }
  return false;
}

export class EventTarget {
  constructor() {
    listenersOf.set(this, new Map());
  }

  addEventListener(type: unknown, callback: unknown, options: unknown = {}): void {
    const all = listeners(this);
    // biome-ignore lint/complexity/noArguments: Web IDL counts the arguments actually passed.
    requireArgs(arguments.length, 2, "Failed to execute 'addEventListener' on 'EventTarget'");
    if (callback === null || callback === undefined) return;
    if (typeof callback !== "function" && typeof callback !== "object") {
      throw new TypeError(
        "Failed to execute 'addEventListener' on 'EventTarget': parameter 2 is not of type 'Object'.",
      );
    }
    const capture = flattenOptions(options);
    let once = false;
    let passive = false;
    let signal: AbortSignal | undefined;
    if (typeof options === "object" && options !== null) {
      const o = options as { once?: unknown; passive?: unknown; signal?: unknown };
      once = Boolean(o.once);
      passive = Boolean(o.passive);
      if (o.signal !== undefined) {
        if (!(o.signal instanceof AbortSignal)) {
          throw new TypeError(
            "Failed to execute 'addEventListener' on 'EventTarget': member signal is not of type AbortSignal.",
          );
        }
        signal = o.signal;
      }
    }
    if (signal?.aborted) return;
    const key = toDOMString(type);
    let list = all.get(key);
    if (list === undefined) {
      list = [];
      all.set(key, list);
    }
    if (list.some((l) => l.callback === callback && l.capture === capture)) return;
    const listener: Listener = {
      callback: callback as Callback,
      capture,
      once,
      passive,
      removed: false,
    };
    list.push(listener);
    signal?.addEventListener("abort", () => this.removeEventListener(key, callback, { capture }));
  }

  removeEventListener(type: unknown, callback: unknown, options: unknown = {}): void {
    const all = listeners(this);
    const key = toDOMString(type);
    const capture = flattenOptions(options);
    const list = all.get(key);
    if (list === undefined) return;
    const index = list.findIndex((l) => l.callback === callback && l.capture === capture);
    if (index === -1) return;
    list[index]!.removed = true;
    list.splice(index, 1);
  }

  dispatchEvent(event: Event): boolean {
    const all = listeners(this);
    if (!(event instanceof Event)) {
      throw new TypeError(
        "Failed to execute 'dispatchEvent' on 'EventTarget': parameter 1 is not of type 'Event'.",
      );
    }
    const d = evWrite(event);
    if (d.dispatching) {
      throw new DOMException("The event is already being dispatched.", "InvalidStateError");
    }
    d.dispatching = true;
    d.target = this;
    d.currentTarget = this;
    d.eventPhase = 2;
    d.timeStamp = d.timeStamp || 0;
    const list = all.get(d.type);
    if (list !== undefined) {
      for (const listener of list.slice()) {
        if (listener.removed) continue;
        if (listener.once) this.removeEventListener(d.type, listener.callback, listener.capture);
        if (listener.passive) d.inPassiveListener = true;
        try {
          const cb = listener.callback;
          if (typeof cb === "function") cb.call(this, event);
          else cb.handleEvent(event);
        } catch (err) {
          reportError(err);
        }
        d.inPassiveListener = false;
        if (d.stopImmediatePropagation) break;
      }
    }
    d.dispatching = false;
    d.currentTarget = null;
    d.eventPhase = 0;
    d.stopPropagation = false;
    d.stopImmediatePropagation = false;
    return !d.canceled;
  }
}
setInterfaceName(EventTarget, "EventTarget");
// Listeners are called only by dispatchEvent, which taints a registered target first.
guardInternals(EventTarget.prototype, (o) => {
  const all = weakMapGet(listenersOf, o);
  const out: unknown[] = [];
  if (all === undefined) return out;
  const lists = mapValues(all);
  for (let i = 0; i < lists.length; i++) {
    const list = lists[i]!;
    for (let j = 0; j < list.length; j++) out[out.length] = list[j]!.callback;
  }
  return out;
});

// ---------------------------------------------------------------------------
// AbortController / AbortSignal
// ---------------------------------------------------------------------------

interface SignalData {
  aborted: boolean;
  reason: unknown;
  onabort: ((event: Event) => unknown) | null;
  /** Signals created by AbortSignal.any that follow this one. */
  dependents: AbortSignal[];
}

const signalData = new WeakMap<object, SignalData>();
let creatingSignal = false;

function sig(self: unknown): SignalData {
  const d = typeof self === "object" && self !== null ? signalData.get(self) : undefined;
  if (d === undefined) throw new TypeError("Illegal invocation");
  return d;
}

/** The signal's data, about to be changed (see guard.ts). */
function sigWrite(self: unknown): SignalData {
  const d = sig(self);
  guardWrite(self, "an AbortSignal");
  return d;
}

function newSignal(): AbortSignal {
  creatingSignal = true;
  try {
    return new AbortSignal();
  } finally {
    creatingSignal = false;
  }
}

function signalAbort(signal: AbortSignal, reason: unknown): void {
  const d = sigWrite(signal);
  if (d.aborted) return;
  d.aborted = true;
  d.reason =
    reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
  const dependents = d.dependents;
  d.dependents = [];
  signal.dispatchEvent(new Event("abort"));
  for (const dep of dependents) signalAbort(dep, d.reason);
}

export class AbortSignal extends EventTarget {
  constructor() {
    if (!creatingSignal) throw new TypeError("Illegal constructor");
    super();
    signalData.set(this, { aborted: false, reason: undefined, onabort: null, dependents: [] });
  }

  static abort(reason?: unknown): AbortSignal {
    const signal = newSignal();
    const d = sig(signal);
    d.aborted = true;
    d.reason =
      reason === undefined ? new DOMException("This operation was aborted", "AbortError") : reason;
    return signal;
  }

  static timeout(ms: unknown): AbortSignal {
    const delay = Number(ms);
    if (!Number.isFinite(delay) || delay < 0) {
      throw new TypeError(`The provided value (${String(ms)}) is outside the valid range.`);
    }
    if (abortSignalTimers.timeout === undefined) {
      throw new Error("not supported yet: AbortSignal.timeout");
    }
    const signal = newSignal();
    abortSignalTimers.timeout(delay, () =>
      signalAbort(signal, new DOMException("signal timed out", "TimeoutError")),
    );
    return signal;
  }

  static any(signals: Iterable<AbortSignal>): AbortSignal {
    const list = [...signals];
    const result = newSignal();
    for (const s of list) {
      if (!(s instanceof AbortSignal)) {
        throw new TypeError("Failed to execute 'any' on 'AbortSignal': not an AbortSignal.");
      }
    }
    for (const s of list) {
      const d = sig(s);
      if (d.aborted) {
        const r = sig(result);
        r.aborted = true;
        r.reason = d.reason;
        return result;
      }
    }
    for (const s of list) sigWrite(s).dependents.push(result);
    return result;
  }

  get aborted(): boolean {
    return sig(this).aborted;
  }

  get reason(): unknown {
    return guardReach(this, sig(this).reason);
  }

  throwIfAborted(): void {
    const d = sig(this);
    if (d.aborted) throw d.reason;
  }

  get onabort(): ((event: Event) => unknown) | null {
    return guardReach(this, sig(this).onabort);
  }

  set onabort(handler: ((event: Event) => unknown) | null) {
    const d = sigWrite(this);
    if (d.onabort !== null) this.removeEventListener("abort", d.onabort);
    d.onabort = typeof handler === "function" ? handler : null;
    if (d.onabort !== null) this.addEventListener("abort", d.onabort);
  }
}
setInterfaceName(AbortSignal, "AbortSignal");
guardInternals(AbortSignal.prototype, (o) => {
  const d = weakMapGet(signalData, o);
  if (d === undefined) return [];
  const out: unknown[] = [d.reason, d.onabort];
  for (let i = 0; i < d.dependents.length; i++) out[out.length] = d.dependents[i];
  return out;
});

const controllerSignal = new WeakMap<object, AbortSignal>();

export class AbortController {
  constructor() {
    controllerSignal.set(this, newSignal());
  }

  get signal(): AbortSignal {
    const s = controllerSignal.get(this);
    if (s === undefined) throw new TypeError("Illegal invocation");
    return guardReach(this, s);
  }

  abort(reason?: unknown): void {
    signalAbort(this.signal, reason);
  }
}
setInterfaceName(AbortController, "AbortController");
guardInternals(AbortController.prototype, (o) => [weakMapGet(controllerSignal, o)]);
