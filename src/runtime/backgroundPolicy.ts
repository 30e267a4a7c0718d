/**
 * Longest a query or mutation stays on the server's thread in one entry into
 * its isolate. One that computes longer is stopped and runs again from the
 * start on the isolate's own thread, where the rest of the server keeps
 * serving meanwhile (README.md, "Limits and determinism"). The deadline is
 * rounded up like every other (sharedDeadline): such an entry holds the
 * thread for 20 to 70 ms.
 */
export const SYNC_SLICE_MS = 20;

/**
 * How long one entry of a query or mutation into its isolate may answer its
 * async syscalls within the call; after that, the next one ends the entry
 * and is answered after a turn of the event loop.
 */
export const YIELD_AFTER_MS = 10;

/** Background runs after which a function is tried on the server's thread again. */
const RETRY_AFTER_RUNS = 16;

/**
 * Which queries and mutations start on their isolate's own thread instead of
 * the server's (execution.ts, modes "slice" and "background"). A function
 * that outgrew the slice once starts there until one of its executions there
 * used under half a slice of the isolate's time (it computes too little to
 * meet the slice: an entry that makes syscalls ends every YIELD_AFTER_MS
 * anyway), or after RETRY_AFTER_RUNS runs there (a load spike can stop a
 * short function: the slice is wall time). A function that is long every
 * time then costs the server's thread one slice per RETRY_AFTER_RUNS calls,
 * not one at every call.
 */
export class BackgroundPolicy {
  /** Functions starting in the background, with their runs there since they moved. */
  private readonly there = new Map<string, number>();
  private readonly byFunction = new Map<string, { moved: number; ran: number }>();
  /** Executions stopped by the slice and run again in the background. */
  moved = 0;
  /** Executions run in the background (moved there or started there). */
  ran = 0;

  startsThere(fn: string): boolean {
    return this.there.has(fn);
  }

  noteMoved(fn: string): void {
    this.moved++;
    this.countsOf(fn).moved++;
    this.there.set(fn, 0);
  }

  noteRan(fn: string, userTimeMs: number): void {
    this.ran++;
    this.countsOf(fn).ran++;
    const runs = (this.there.get(fn) ?? 0) + 1;
    if (userTimeMs < SYNC_SLICE_MS / 2 || runs >= RETRY_AFTER_RUNS) this.there.delete(fn);
    else this.there.set(fn, runs);
  }

  /** What the metrics endpoint reports. */
  get counts(): { moved: number; ran: number } {
    return { moved: this.moved, ran: this.ran };
  }

  /** One function's moves and background runs. */
  countsOf(fn: string): { moved: number; ran: number } {
    let c = this.byFunction.get(fn);
    if (c === undefined) {
      c = { moved: 0, ran: 0 };
      this.byFunction.set(fn, c);
    }
    return c;
  }
}
