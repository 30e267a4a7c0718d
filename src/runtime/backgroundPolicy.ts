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
 * Which queries and mutations start on their isolate's own thread instead of
 * the server's (execution.ts, modes "slice" and "background"). A function
 * that outgrew the slice once starts there until one of its executions there
 * took under half a slice of wall time, which it would have fitted on the
 * server's thread too (the isolate's thread is the slower of the two): a
 * function that is long every time then costs the server's thread one slice
 * once, not at every call.
 */
export class BackgroundPolicy {
  private readonly there = new Set<string>();
  /** Executions stopped by the slice and run again in the background. */
  moved = 0;
  /** Executions run in the background (moved there or started there). */
  ran = 0;

  startsThere(fn: string): boolean {
    return this.there.has(fn);
  }

  noteMoved(fn: string): void {
    this.moved++;
    this.there.add(fn);
  }

  noteRan(fn: string, wallMs: number): void {
    this.ran++;
    if (wallMs < SYNC_SLICE_MS / 2) this.there.delete(fn);
  }

  /** What the metrics endpoint reports. */
  get counts(): { moved: number; ran: number } {
    return { moved: this.moved, ran: this.ran };
  }
}
