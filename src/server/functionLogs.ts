/**
 * Recent function executions for `npx convex logs` and the log tail of
 * `npx convex dev` (`GET /api/stream_function_logs?cursor=N`, long-polled).
 * Kept in memory, newest 10,000; a cursor is the sequence number of the last
 * entry a client has seen.
 */
import type { ExecutionRecord } from "../functions/runner.js";
import { logLine } from "../sync/queryCache.js";

/** An execution as the CLI reads it (`FunctionExecution`, kind "Completion"). */
export interface FunctionExecution {
  kind: "Completion";
  udfType: "Query" | "Mutation" | "Action" | "HttpAction";
  identifier: string;
  /** Seconds since the epoch. */
  timestamp: number;
  /** Seconds. */
  executionTime: number;
  logLines: string[];
  error: string | null;
}

const KEPT = 10_000;
/** How long a poll waits for a new execution before answering with none. */
const POLL_MS = 20_000;

export class FunctionLogs {
  private readonly entries: FunctionExecution[] = [];
  /** Sequence number of the newest entry (entries[i] has seq - entries.length + 1 + i). */
  private seq = 0;
  private readonly waiters = new Set<() => void>();

  record(r: ExecutionRecord): void {
    this.entries.push({
      kind: "Completion",
      udfType:
        r.kind === "query"
          ? "Query"
          : r.kind === "mutation"
            ? "Mutation"
            : r.kind === "action"
              ? "Action"
              : "HttpAction",
      identifier: r.path,
      timestamp: r.startedAtMs / 1000,
      executionTime: r.durationMs / 1000,
      logLines: r.logs.map(logLine),
      error: r.error,
    });
    if (this.entries.length > KEPT) this.entries.shift();
    this.seq++;
    for (const wake of [...this.waiters]) wake();
  }

  /**
   * Executions after `cursor`: at once if there are any (or the cursor is 0
   * or from before a restart), else when one happens, else empty after a while.
   */
  async since(
    cursor: number,
    signal: AbortSignal,
  ): Promise<{ entries: FunctionExecution[]; newCursor: number }> {
    if (cursor === this.seq && cursor !== 0 && !signal.aborted) {
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.waiters.delete(done);
          signal.removeEventListener("abort", done);
          resolve();
        };
        const timer = setTimeout(done, POLL_MS);
        this.waiters.add(done);
        signal.addEventListener("abort", done);
      });
    }
    const first = this.seq - this.entries.length;
    const from = cursor > this.seq || cursor < first ? 0 : cursor - first;
    return { entries: this.entries.slice(from), newCursor: this.seq };
  }

  /** Answers every waiting poll (shutdown). */
  close(): void {
    for (const wake of [...this.waiters]) wake();
  }
}
