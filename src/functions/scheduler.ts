/**
 * Scheduled functions (`ctx.scheduler.runAfter / runAt / cancel`): jobs are
 * documents of the system table `_scheduled_functions` with the fields the
 * Convex docs give (`name`, `args`, `scheduledTime`, `completedTime`,
 * `state: {kind: "pending" | "inProgress" | "success" | "failed" | "canceled"}`).
 * Scheduling from a mutation is a write of its transaction: the job exists
 * only if the mutation commits.
 *
 * `JobExecutor` runs due jobs, at most `concurrency` at a time so that a burst
 * never starves client requests. A scheduled mutation's own writes and its job
 * turning "success" commit in one transaction: it runs exactly once. A
 * scheduled action is marked "inProgress" before it starts and never retried:
 * at most once (one still "inProgress" when the deployment starts was cut off
 * by a restart and is marked failed). Jobs survive restarts: they are data.
 */
import type { Database, Transaction } from "../database/index.js";
import type { SchedulerUsage } from "../runtime/syscalls.js";
import {
  compareKeys,
  decodeKey,
  encodeKey,
  fromJson,
  type JsonValue,
  type Value,
} from "../values/index.js";

export const SCHEDULED_TABLE = "_scheduled_functions";
const BY_STATE = "by_state";
const SYSTEM = { system: true } as const;

/** Documented limits: functions one call may schedule, and the size of their arguments. */
export const SCHEDULER_LIMITS = {
  maxJobsPerCall: 1000,
  maxArgsBytesPerCall: 8 * 1024 * 1024,
} as const;

/** Due jobs read per index scan. */
const DUE_BATCH = 1000;
/** Started jobs remembered for `announce`. */
const DISPATCHED_KEPT = 200_000;
/** Every so often a scan starts from the beginning anyway (belt and braces). */
const FULL_SCAN_EVERY_MS = 60_000;
/** How every `by_state` key of a pending job begins (`["pending", …]` encoded). */
const PENDING_PREFIX = encodeKey(["pending"]);
const STRING_TAG = 0x07;

export class SchedulerError extends Error {
  override name = "SchedulerError";
}

export type JobState =
  | { kind: "pending" }
  | { kind: "inProgress" }
  | { kind: "success" }
  | { kind: "failed"; error: string }
  | { kind: "canceled" };

/** Creates the jobs table and its index if the deployment has none yet. */
export async function ensureSchedulerTable(db: Database): Promise<void> {
  if (db.catalog.table(SCHEDULED_TABLE) !== undefined) return;
  await db.run(async (tx) => {
    if (tx.table(SCHEDULED_TABLE) === undefined)
      await tx.createIndex(SCHEDULED_TABLE, BY_STATE, ["state.kind", "scheduledTime"], SYSTEM);
  });
  await db.waitForBackgroundWork();
}

/** Counts what one call schedules, against the documented limits. */
export class ScheduleBudget {
  private jobs = 0;
  private bytes = 0;

  /** What this call has scheduled so far, and the limits (`ctx.meta.getTransactionMetrics`). */
  get usage(): SchedulerUsage {
    return {
      jobs: this.jobs,
      maxJobs: SCHEDULER_LIMITS.maxJobsPerCall,
      argsBytes: this.bytes,
      maxArgsBytes: SCHEDULER_LIMITS.maxArgsBytesPerCall,
    };
  }

  charge(argsJson: string): void {
    this.jobs++;
    this.bytes += Buffer.byteLength(argsJson, "utf8");
    if (this.jobs > SCHEDULER_LIMITS.maxJobsPerCall)
      throw new SchedulerError(
        `Too many functions scheduled: one call may schedule at most ${SCHEDULER_LIMITS.maxJobsPerCall}`,
      );
    if (this.bytes > SCHEDULER_LIMITS.maxArgsBytesPerCall)
      throw new SchedulerError(
        `The arguments of the functions one call schedules may total at most ${SCHEDULER_LIMITS.maxArgsBytesPerCall} bytes (8 MiB)`,
      );
  }
}

/** Writes a pending job in `tx`; returns its ID. `atSeconds` is what the library sends (Unix seconds). */
export async function scheduleJob(
  tx: Transaction,
  name: string,
  argsJson: JsonValue,
  atSeconds: number,
): Promise<string> {
  if (!Number.isFinite(atSeconds)) throw new SchedulerError("The scheduled time must be finite");
  const args = fromJson(argsJson);
  return tx.insert(
    SCHEDULED_TABLE,
    {
      name,
      args: [args as Value],
      scheduledTime: atSeconds * 1000,
      state: { kind: "pending" },
    },
    SYSTEM,
  );
}

/** Cancels a job that has not finished (a running action goes on; its outcome is not recorded). */
export async function cancelJob(tx: Transaction, id: string): Promise<void> {
  const table = tx.tableOfId(id);
  if (table === undefined || table.name !== SCHEDULED_TABLE)
    throw new SchedulerError(`${JSON.stringify(id)} is not the ID of a scheduled function`);
  const job = await tx.get(id);
  if (job === null) return;
  const kind = (job.state as { kind: string }).kind;
  if (kind !== "pending" && kind !== "inProgress") return;
  await tx.patch(id, { state: { kind: "canceled" }, completedTime: Date.now() }, SYSTEM);
}

/** A job as the executor reads it. */
export interface Job {
  id: string;
  name: string;
  args: Value;
  scheduledTime: number;
}

/** What the executor runs jobs with (the deployment's current function runner). */
export interface JobTarget {
  /** The kind of a function path, or undefined if there is none. */
  kindOf(path: string): "query" | "mutation" | "action" | "httpAction" | undefined;
  /** Runs a mutation; `finish` runs in its transaction after the function, before the commit. */
  mutation(path: string, args: Value, finish: (tx: Transaction) => Promise<void>): Promise<unknown>;
  action(path: string, args: Value): Promise<unknown>;
}

/** Thrown inside a job's transaction when the job is no longer pending (canceled meanwhile). */
class JobGone extends Error {}

export class JobExecutor {
  private readonly running = new Set<string>();
  /** Due jobs read and not yet started. */
  private due: Job[] = [];
  /** No pending job is due before this (see `announce`). */
  private lowWater = Number.NEGATIVE_INFINITY;
  private announcedDuringScan = Number.POSITIVE_INFINITY;
  /**
   * The `by_state` key of the last job a scan handed out: every pending job
   * at or before it has been handed out too (unless `announce` says
   * otherwise), so the next scan continues after it (null: from `lowWater`).
   */
  private cursor: Buffer | null = null;
  private scanning = false;
  /** A job was announced while a scan was under way: the key it ends at is no cursor. */
  private announcedWhileScanning = false;
  private lastFullScan = 0;
  /** Jobs this executor started (recent ones): their keys leaving "pending" are no news. */
  private readonly dispatched = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private again = false;
  private closed = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly db: Database,
    private readonly target: () => JobTarget,
    private readonly concurrency = 10,
    private readonly onError: (e: unknown) => void = () => {},
  ) {
    this.unsubscribe = db.onPublish((commits) => {
      const table = db.catalog.table(SCHEDULED_TABLE);
      if (table === undefined) return;
      const byState = db.catalog.index(table.number, BY_STATE)?.number;
      let touched = false;
      for (const c of commits) {
        for (const k of c.keys) {
          if (k.tableNumber !== table.number) continue;
          touched = true;
          if (k.indexNumber === byState) this.announce(k.key);
        }
      }
      if (touched) this.wake();
    });
  }

  /** Marks actions cut off by a restart as failed, then runs what is due. */
  async start(): Promise<void> {
    await ensureSchedulerTable(this.db);
    const { jobs: stale } = await this.readJobs("inProgress", Number.POSITIVE_INFINITY, 10_000);
    for (const job of stale) {
      await this.finish(job.id, {
        kind: "failed",
        error: "The deployment restarted while this action was running (actions run at most once)",
      });
    }
    this.wake();
  }

  /**
   * A commit wrote this `by_state` key: if it is a pending job due before
   * where scans start, they must start there (a job scheduled in the past,
   * or committed after the last scan read its snapshot).
   */
  private announce(key: Buffer): void {
    // Jobs finishing write keys outside "pending": no news.
    if (
      key.length < PENDING_PREFIX.length ||
      !PENDING_PREFIX.equals(key.subarray(0, PENDING_PREFIX.length))
    )
      return;
    // A job this executor ran leaving the pending range: not a new job.
    // (Its ID ends the key; most keys are these, so they are not decoded.)
    const id = trailingId(key);
    if (id !== undefined && this.dispatched.has(id)) return;
    let fields: Array<unknown>;
    try {
      fields = decodeKey(key);
    } catch {
      fields = [];
    }
    const t = typeof fields[1] === "number" ? fields[1] : Number.NEGATIVE_INFINITY;
    if (t < this.lowWater) this.lowWater = t;
    if (t < this.announcedDuringScan) this.announcedDuringScan = t;
    if (this.scanning) this.announcedWhileScanning = true;
    else if (this.cursor !== null && (fields.length === 0 || compareKeys(key, this.cursor) <= 0))
      this.cursor = null;
  }

  close(): void {
    this.closed = true;
    this.unsubscribe();
    if (this.timer !== null) clearTimeout(this.timer);
  }

  /** Jobs running now (for tests). */
  get active(): number {
    return this.running.size;
  }

  private wake(): void {
    if (this.closed) return;
    if (this.polling) {
      this.again = true;
      return;
    }
    this.polling = true;
    setImmediate(() => {
      this.poll()
        .catch((e) => this.onError(e))
        .finally(() => {
          this.polling = false;
          if (this.again) {
            this.again = false;
            this.wake();
          }
        });
    });
  }

  private async poll(): Promise<void> {
    if (this.closed) return;
    const now = Date.now();
    // Due jobs are read in batches and handed out as slots free up: a burst
    // costs one index scan per batch, not one per job.
    if (this.due.length === 0 && this.running.size < this.concurrency) {
      // Scans start at the low-water mark: jobs that ran leave their old
      // "pending" index keys behind until retention garbage collection, and
      // after a burst a scan from the beginning would walk thousands of them.
      // And they continue after the last job the previous scan handed out:
      // in a burst due at one moment the low-water mark stays put, and each
      // batch would walk the keys every earlier batch left behind.
      if (now - this.lastFullScan > FULL_SCAN_EVERY_MS) {
        this.lowWater = Number.NEGATIVE_INFINITY;
        this.cursor = null;
        this.lastFullScan = now;
      }
      this.announcedDuringScan = Number.POSITIVE_INFINITY;
      this.announcedWhileScanning = false;
      this.scanning = true;
      let read: { jobs: Job[]; lastKey: Buffer | null };
      try {
        read = await this.readJobs(
          "pending",
          now,
          DUE_BATCH + this.running.size,
          undefined,
          this.lowWater,
          this.cursor,
        );
      } finally {
        this.scanning = false;
      }
      const batch = read.jobs;
      this.due = batch.filter((j) => !this.running.has(j.id));
      const earliest = batch.length > 0 ? batch[0]!.scheduledTime : now;
      this.lowWater = Math.min(earliest, this.announcedDuringScan);
      // A job committed after the scan's snapshot may sort before where it ended.
      if (this.announcedWhileScanning) this.cursor = null;
      else if (read.lastKey !== null) this.cursor = read.lastKey;
    }
    while (this.running.size < this.concurrency && this.due.length > 0) {
      const job = this.due.shift()!;
      if (this.running.has(job.id)) continue;
      this.running.add(job.id);
      this.dispatched.add(job.id);
      if (this.dispatched.size > DISPATCHED_KEPT)
        this.dispatched.delete(this.dispatched.values().next().value as string);
      void this.run(job)
        .catch((e) => this.onError(e))
        .finally(() => {
          this.running.delete(job.id);
          this.wake();
        });
    }
    if (this.due.length > 0) return;
    // Sleep until the next job falls due (or a commit to the table wakes us).
    const {
      jobs: [next],
    } = await this.readJobs("pending", Number.POSITIVE_INFINITY, 1, now);
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    if (next !== undefined && !this.closed) {
      const delay = Math.min(Math.max(0, next.scheduledTime - Date.now()), 2 ** 31 - 1);
      this.timer = setTimeout(() => this.wake(), delay);
      this.timer.unref();
    }
  }

  /**
   * Jobs in `state` due at or before `until` (after `after`, or from `from`,
   * if given; after the index key `afterKey`, if given), earliest first, and
   * the index key of the last one.
   */
  private async readJobs(
    state: "pending" | "inProgress",
    until: number,
    limit: number,
    after?: number,
    from?: number,
    afterKey?: Buffer | null,
  ): Promise<{ jobs: Job[]; lastKey: Buffer | null }> {
    // The jobs' own transactions read their documents again in a moment.
    const tx = this.db.begin({ readOnly: true, cacheReads: state === "pending" });
    try {
      if (tx.table(SCHEDULED_TABLE) === undefined) return { jobs: [], lastKey: null };
      const range = [
        { type: "Eq" as const, fieldPath: "state.kind", value: state },
        ...(after !== undefined
          ? [{ type: "Gt" as const, fieldPath: "scheduledTime", value: after }]
          : from !== undefined && Number.isFinite(from)
            ? [{ type: "Gte" as const, fieldPath: "scheduledTime", value: from }]
            : []),
        ...(Number.isFinite(until)
          ? [{ type: "Lte" as const, fieldPath: "scheduledTime", value: until }]
          : []),
      ];
      const scan = tx.query(
        SCHEDULED_TABLE,
        BY_STATE,
        range,
        "asc",
        afterKey != null ? { after: afterKey } : {},
      );
      const docs = await scan.next(limit);
      const jobs = docs.map((d) => ({
        id: d._id as string,
        name: d.name as string,
        args: (d.args as Value[])[0] ?? {},
        scheduledTime: d.scheduledTime as number,
      }));
      return { jobs, lastKey: scan.lastKey };
    } finally {
      tx.abort();
    }
  }

  private async run(job: Job): Promise<void> {
    const target = this.target();
    const kind = target.kindOf(job.name);
    if (kind !== "mutation" && kind !== "action") {
      await this.finish(job.id, {
        kind: "failed",
        error:
          kind === undefined
            ? `Could not find function for '${job.name}'`
            : `Only mutations and actions can be scheduled; ${job.name} is a ${kind}`,
      });
      return;
    }
    if (kind === "mutation") {
      try {
        await target.mutation(job.name, job.args, async (tx) => {
          await this.transition(tx, job.id, "pending", { kind: "success" });
        });
      } catch (e) {
        if (e instanceof JobGone) return;
        await this.finish(job.id, { kind: "failed", error: errorText(e) }, "pending");
      }
      return;
    }
    // An action: claimed first, so that it starts at most once.
    const claimed = await this.db
      .run(async (tx) => {
        await this.transition(tx, job.id, "pending", { kind: "inProgress" }, false);
        return true;
      })
      .then(
        () => true,
        (e) => {
          if (e instanceof JobGone) return false;
          throw e;
        },
      );
    if (!claimed) return;
    let outcome: JobState;
    try {
      await target.action(job.name, job.args);
      outcome = { kind: "success" };
    } catch (e) {
      outcome = { kind: "failed", error: errorText(e) };
    }
    await this.finish(job.id, outcome, "inProgress");
  }

  /** Moves a job from `from` to `to` in `tx`; throws JobGone if it is not in `from`. */
  private async transition(
    tx: Transaction,
    id: string,
    from: string,
    to: JobState,
    completed = true,
  ): Promise<void> {
    const job = await tx.get(id);
    if (job === null || (job.state as { kind: string }).kind !== from) throw new JobGone();
    await tx.patch(
      id,
      completed ? { state: to, completedTime: Date.now() } : { state: to },
      SYSTEM,
    );
  }

  /** Records a job's outcome (unless it left `from` meanwhile, e.g. canceled). */
  private async finish(id: string, to: JobState, from?: string): Promise<void> {
    await this.db
      .run(async (tx) => {
        const job = await tx.get(id);
        if (job === null) return;
        const kind = (job.state as { kind: string }).kind;
        if (from !== undefined && kind !== from) return;
        await tx.patch(id, { state: to, completedTime: Date.now() }, SYSTEM);
      })
      .catch((e) => this.onError(e));
  }
}

/**
 * The document ID that ends a `by_state` key (a string element: tag, ASCII
 * ID characters, terminator), or undefined if the key does not end so.
 */
function trailingId(key: Buffer): string | undefined {
  const end = key.length - 1;
  if (end < 1 || key[end] !== 0x00) return undefined;
  let i = end - 1;
  while (i >= 0 && key[i]! > 0x20 && key[i]! < 0x7f) i--;
  if (i < 0 || key[i] !== STRING_TAG || i === end - 1) return undefined;
  return key.toString("latin1", i + 1, end);
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
