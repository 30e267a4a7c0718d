/**
 * Cron jobs (`convex/crons.ts`: `cronJobs()` with `interval`, `cron`,
 * `hourly`, `daily`, `weekly`, `monthly`). The app's crons are registered
 * with each push (replacing the previous set) in the system table
 * `_cron_jobs`: one document per cron with its function, arguments,
 * schedule and next run. When a run falls due, one transaction schedules
 * the function (a `_scheduled_functions` job, run by the scheduler) and
 * moves the next run past now: a run is never doubled (the transaction
 * commits once), and after downtime at most one missed run is made up.
 * Times are UTC; cron expressions have five fields.
 */
import { CronExpressionParser } from "cron-parser";
import type { Database, Transaction } from "../database/index.js";
import { type JsonValue, type Value, valuesEqual } from "../values/index.js";
import { scheduleJob } from "./scheduler.js";

export const CRON_TABLE = "_cron_jobs";
const BY_NAME = "by_name";
const SYSTEM = { system: true } as const;

export type CronSchedule =
  | { type: "interval"; seconds?: number; minutes?: number; hours?: number }
  | { type: "cron"; cron: string }
  | { type: "hourly"; minuteUTC?: number }
  | { type: "daily"; hourUTC: number; minuteUTC?: number }
  | { type: "weekly"; dayOfWeek: string; hourUTC: number; minuteUTC?: number }
  | { type: "monthly"; day: number; hourUTC: number; minuteUTC?: number };

export interface CronSpec {
  /** The cron's identifier in crons.ts. */
  identifier: string;
  /** The function it runs (`file:export`). */
  name: string;
  /** Its arguments object (Convex JSON). */
  args: JsonValue;
  schedule: CronSchedule;
}

export class CronError extends Error {
  override name = "CronError";
}

const DAYS = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];

/** The cron expression of a calendar schedule, or null for intervals. */
function cronExpression(s: CronSchedule): string | null {
  switch (s.type) {
    case "interval":
      return null;
    case "cron":
      return s.cron;
    case "hourly":
      return `${s.minuteUTC ?? 0} * * * *`;
    case "daily":
      return `${s.minuteUTC ?? 0} ${s.hourUTC} * * *`;
    case "weekly": {
      const day = DAYS.indexOf(s.dayOfWeek);
      if (day < 0) throw new CronError(`Unknown day of the week ${JSON.stringify(s.dayOfWeek)}`);
      return `${s.minuteUTC ?? 0} ${s.hourUTC} * * ${day}`;
    }
    case "monthly":
      return `${s.minuteUTC ?? 0} ${s.hourUTC} ${s.day} * *`;
  }
}

function intervalMs(s: Extract<CronSchedule, { type: "interval" }>): number {
  const ms = (s.seconds ?? 0) * 1000 + (s.minutes ?? 0) * 60_000 + (s.hours ?? 0) * 3_600_000;
  if (!Number.isFinite(ms) || ms < 1000)
    throw new CronError("An interval must be at least 1 second");
  return ms;
}

/** The first run of `schedule` strictly after `afterMs` (an interval: one period after). */
export function nextRun(schedule: CronSchedule, afterMs: number): number {
  if (schedule.type === "interval") return afterMs + intervalMs(schedule);
  const expr = cronExpression(schedule)!;
  try {
    return CronExpressionParser.parse(expr, { currentDate: new Date(afterMs), tz: "UTC" })
      .next()
      .getTime();
  } catch (e) {
    throw new CronError(`Invalid cron schedule ${JSON.stringify(expr)}: ${(e as Error).message}`);
  }
}

/** Reads the app's crons from `crons.js`'s `export()` JSON, checking every schedule. */
export function parseCrons(exportJson: string): CronSpec[] {
  const raw = JSON.parse(exportJson) as Record<
    string,
    { name: string; args: JsonValue[]; schedule: CronSchedule }
  >;
  const out: CronSpec[] = [];
  for (const [identifier, job] of Object.entries(raw)) {
    if (typeof job?.name !== "string" || typeof job.schedule?.type !== "string")
      throw new CronError(`Cron ${JSON.stringify(identifier)} is malformed`);
    try {
      nextRun(job.schedule, Date.now());
    } catch (e) {
      throw new CronError(`Cron ${JSON.stringify(identifier)}: ${(e as Error).message}`);
    }
    out.push({
      identifier,
      name: job.name,
      args: (job.args?.[0] ?? {}) as JsonValue,
      schedule: job.schedule,
    });
  }
  return out;
}

async function ensureCronTable(db: Database): Promise<void> {
  if (db.catalog.table(CRON_TABLE) !== undefined) return;
  await db.run(async (tx) => {
    if (tx.table(CRON_TABLE) === undefined)
      await tx.createIndex(CRON_TABLE, BY_NAME, ["name"], SYSTEM);
  });
  await db.waitForBackgroundWork();
}

interface CronDoc {
  _id: string;
  name: string;
  cronSpec: { udfPath: string; udfArgs: JsonValue; cronSchedule: CronSchedule };
  nextRunMs: number;
  lastRunMs?: number;
}

async function cronDocs(tx: Transaction): Promise<CronDoc[]> {
  if (tx.table(CRON_TABLE) === undefined) return [];
  return (await tx.query(CRON_TABLE, BY_NAME).collect()) as unknown as CronDoc[];
}

// Stored documents keep their fields in sorted order, so a stored spec and
// the pushed one are compared without regard to key order (comparing their
// JSON text made every interval cron look changed at each push and restart,
// which restarted its interval and dropped the run missed while down).
const sameSpec = (doc: CronDoc, spec: CronSpec) =>
  doc.cronSpec.udfPath === spec.name &&
  valuesEqual(doc.cronSpec.udfArgs as Value, spec.args as Value) &&
  valuesEqual(doc.cronSpec.cronSchedule as Value, spec.schedule as Value);

/** Keeps `_cron_jobs` in step with the app's crons and turns due runs into scheduled jobs. */
export class CronRunner {
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private ticking: Promise<void> = Promise.resolve();

  constructor(
    private readonly db: Database,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /**
   * Registers `crons` as the complete set (others are removed). A cron that
   * is new or changed starts from now; an unchanged one keeps its next run.
   */
  async register(crons: readonly CronSpec[]): Promise<void> {
    await ensureCronTable(this.db);
    const now = Date.now();
    await this.db.run(async (tx) => {
      const existing = new Map((await cronDocs(tx)).map((d) => [d.name, d]));
      for (const spec of crons) {
        const doc = existing.get(spec.identifier);
        existing.delete(spec.identifier);
        if (doc !== undefined && sameSpec(doc, spec)) continue;
        const fields = {
          name: spec.identifier,
          cronSpec: { udfPath: spec.name, udfArgs: spec.args, cronSchedule: spec.schedule },
          nextRunMs: nextRun(spec.schedule, now),
        };
        if (doc === undefined) await tx.insert(CRON_TABLE, fields, SYSTEM);
        else await tx.replace(doc._id, fields, SYSTEM);
      }
      for (const gone of existing.values()) await tx.delete(gone._id, SYSTEM);
    });
    this.kick();
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
  }

  private kick(): void {
    this.ticking = this.ticking.then(() => this.tick().catch((e) => this.onError(e)));
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const now = Date.now();
    const { value: next } = await this.db.run(async (tx) => {
      let earliest = Number.POSITIVE_INFINITY;
      for (const doc of await cronDocs(tx)) {
        let due = doc.nextRunMs;
        if (due <= now) {
          // One run now, however many were missed; the next one after now.
          await scheduleJob(tx, doc.cronSpec.udfPath, doc.cronSpec.udfArgs, now / 1000);
          due = nextRun(doc.cronSpec.cronSchedule, now);
          await tx.patch(doc._id, { nextRunMs: due, lastRunMs: now }, SYSTEM);
        }
        earliest = Math.min(earliest, due);
      }
      return earliest;
    });
    if (this.closed || !Number.isFinite(next)) return;
    this.timer = setTimeout(
      () => this.kick(),
      Math.min(Math.max(0, next - Date.now()), 2 ** 31 - 1),
    );
    this.timer.unref();
  }
}
