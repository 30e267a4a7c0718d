/**
 * Walking a long list of sessions or watchers without holding the event
 * loop: a few hundred at a time, a turn of the loop between (keep-alives,
 * a changed result's watchers).
 */

/**
 * Calls `each` on every item in order, in slices with a turn of the event
 * loop between two; `sliceFull(calls, startedMs)` is asked after each call
 * with the calls made in the current slice and when it began
 * (`performance.now()`). `done` runs after the last call.
 */
export function inSlices<T>(
  items: readonly T[],
  sliceFull: (calls: number, startedMs: number) => boolean,
  each: (item: T) => void,
  done?: () => void,
): void {
  let next = 0;
  const slice = () => {
    const started = performance.now();
    let calls = 0;
    while (next < items.length) {
      each(items[next++]!);
      if (sliceFull(++calls, started)) break;
    }
    if (next < items.length) setImmediate(slice);
    else done?.();
  };
  slice();
}
