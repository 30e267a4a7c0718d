/**
 * The frozen clock: `Date.now()`, `new Date()`, `Date()`, `performance.now()`
 * and `Intl.DateTimeFormat#format()` without a date all read the execution's
 * frozen time (env.ts) instead of the wall clock.
 */
import { guardInternals } from "./guard.js";

const ReflectApply = Reflect.apply;

import { elapsed, now } from "./env.js";
import { provideGlobals, setInterfaceName } from "./util.js";

const OriginalDate = Date;

/** performance.now(): time since the execution's time origin (frozen at 0 outside actions). */
export function performanceNow(): number {
  return elapsed();
}

/** Builds the replacement `Date` constructor; `Date.prototype` stays the same object. */
export function createDate(): DateConstructor {
  // A plain function (not a class) so that calling `Date()` without `new` works.
  const FrozenDate = function FrozenDate(this: unknown, ...args: unknown[]): unknown {
    if (new.target === undefined) {
      return new OriginalDate(now()).toString();
    }
    if (args.length === 0) {
      return Reflect.construct(OriginalDate, [now()], new.target);
    }
    return Reflect.construct(OriginalDate, args, new.target);
  } as unknown as DateConstructor;

  Object.defineProperty(FrozenDate, "length", { value: 7, configurable: true });
  Object.defineProperty(FrozenDate, "name", { value: "Date", configurable: true });
  Object.defineProperty(FrozenDate, "prototype", {
    value: OriginalDate.prototype,
    writable: false,
    enumerable: false,
    configurable: false,
  });
  const dateNow = function now_() {
    return now();
  };
  Object.defineProperty(dateNow, "name", { value: "now" });
  defineMethod(FrozenDate, "now", dateNow);
  defineMethod(FrozenDate, "parse", OriginalDate.parse);
  defineMethod(FrozenDate, "UTC", OriginalDate.UTC);
  Object.defineProperty(OriginalDate.prototype, "constructor", {
    value: FrozenDate,
    writable: true,
    enumerable: false,
    configurable: true,
  });
  return FrozenDate;
}

function defineMethod(target: object, name: string, value: unknown): void {
  Object.defineProperty(target, name, {
    value,
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

/** Makes `Intl.DateTimeFormat.prototype.format()` / `formatToParts()` use the frozen time when no date is given. */
export function patchIntl(): void {
  if (typeof Intl !== "object" || typeof Intl.DateTimeFormat !== "function") return;
  const proto = Intl.DateTimeFormat.prototype;
  const formatDesc = Object.getOwnPropertyDescriptor(proto, "format");
  const getFormat = formatDesc?.get;
  if (getFormat !== undefined) {
    const bound = new WeakMap<object, (date?: unknown) => string>();
    const get = function format(this: Intl.DateTimeFormat) {
      let fn = bound.get(this);
      if (fn === undefined) {
        const original = getFormat.call(this) as (date?: unknown) => string;
        fn = (date?: unknown) => original(date === undefined ? now() : date);
        bound.set(this, fn);
      }
      return fn;
    };
    Object.defineProperty(proto, "format", {
      get,
      enumerable: formatDesc!.enumerable ?? false,
      configurable: true,
    });
    // The bound function is made on first use and kept: a formatter that
    // existed before an execution gets it when it is registered.
    guardInternals(proto, (o) => [ReflectApply(get, o, [])]);
  }
  const originalFormatToParts = proto.formatToParts;
  Object.defineProperty(proto, "formatToParts", {
    value: function formatToParts(
      this: Intl.DateTimeFormat,
      date?: unknown,
    ): Intl.DateTimeFormatPart[] {
      return originalFormatToParts.call(this, (date === undefined ? now() : date) as number);
    },
    writable: true,
    enumerable: false,
    configurable: true,
  });
}

/**
 * Creates `Performance` and the `performance` object and hands them to
 * provideGlobals. Called on first use of either global (see globals.ts): the
 * class would otherwise be created in every fresh context.
 */
export function providePerformance(): void {
  /** `performance`: `now()` (frozen at 0 during an execution) and `timeOrigin` (the frozen time). */
  class Performance {
    get timeOrigin(): number {
      return now() - elapsed();
    }

    now(): number {
      return performanceNow();
    }

    toJSON(): { timeOrigin: number } {
      return { timeOrigin: this.timeOrigin };
    }
  }
  setInterfaceName(Performance, "Performance");
  provideGlobals({ performance: Object.freeze(new Performance()), Performance });
}
