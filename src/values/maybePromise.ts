/**
 * Results that are often ready at once: an embedded store answers reads
 * synchronously, so the database and the syscalls pass values through
 * without a promise when nothing waits, and a function execution can get
 * its answer within the same entry into the isolate (see runtime/execution.ts).
 */

/** A value now, or a promise of it. */
export type MaybePromise<T> = T | Promise<T>;

/** `f(v)` now when `v` is ready, else once it is. */
export function andThen<T, U>(v: MaybePromise<T>, f: (v: T) => MaybePromise<U>): MaybePromise<U> {
  return v instanceof Promise ? v.then(f) : f(v);
}
