/**
 * Cron schedules (next run of every schedule kind, in UTC) and the
 * registration of an app's crons: a push replaces the set, an unchanged
 * cron keeps its next run, a changed one starts over.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CRON_TABLE,
  CronRunner,
  type CronSpec,
  nextRun,
  parseCrons,
} from "../../src/functions/crons.js";
import { ensureSchedulerTable } from "../../src/functions/scheduler.js";
import { openTestDb, type TestDb } from "../helpers.js";

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number) => new Date(ms).toISOString();

describe("nextRun", () => {
  const from = at("2026-11-21T10:52:30.000Z"); // a Saturday
  it("computes every schedule kind in UTC", () => {
    expect(nextRun({ type: "interval", seconds: 30 }, from)).toBe(from + 30_000);
    expect(nextRun({ type: "interval", minutes: 2 }, from)).toBe(from + 120_000);
    expect(nextRun({ type: "interval", hours: 1 }, from)).toBe(from + 3_600_000);
    expect(iso(nextRun({ type: "cron", cron: "*/5 * * * *" }, from))).toBe(
      "2026-11-21T10:55:00.000Z",
    );
    expect(iso(nextRun({ type: "hourly", minuteUTC: 15 }, from))).toBe("2026-11-21T11:15:00.000Z");
    expect(iso(nextRun({ type: "daily", hourUTC: 3, minuteUTC: 30 }, from))).toBe(
      "2026-11-22T03:30:00.000Z",
    );
    expect(iso(nextRun({ type: "weekly", dayOfWeek: "monday", hourUTC: 9 }, from))).toBe(
      "2026-11-23T09:00:00.000Z",
    );
    expect(iso(nextRun({ type: "monthly", day: 1, hourUTC: 0 }, from))).toBe(
      "2026-12-01T00:00:00.000Z",
    );
  });

  it("refuses bad schedules with a clear error", () => {
    expect(() => nextRun({ type: "cron", cron: "61 * * * *" }, from)).toThrow(
      /Invalid cron schedule/,
    );
    expect(() => nextRun({ type: "interval", seconds: 0 }, from)).toThrow(/at least 1 second/);
    expect(() =>
      parseCrons(
        JSON.stringify({
          x: { name: "a:b", args: [{}], schedule: { type: "cron", cron: "nope" } },
        }),
      ),
    ).toThrow(/Cron "x"/);
  });
});

describe("CronRunner.register", () => {
  let t: TestDb;
  beforeAll(async () => {
    t = await openTestDb();
    await ensureSchedulerTable(t.db);
  });
  afterAll(async () => {
    await t?.close();
  });

  const docs = async () => {
    const tx = t.db.begin({ readOnly: true });
    try {
      return (await tx.query(CRON_TABLE, "by_name").collect()).map((d) => ({
        name: d.name as string,
        nextRunMs: d.nextRunMs as number,
        udfPath: (d.cronSpec as { udfPath: string }).udfPath,
      }));
    } finally {
      tx.abort();
    }
  };

  it("replaces the set: keeps unchanged crons' next runs, restarts changed ones, drops removed ones", async () => {
    const runner = new CronRunner(t.db);
    try {
      const daily = (name: string, fn: string): CronSpec => ({
        identifier: name,
        name: fn,
        args: {},
        schedule: { type: "daily", hourUTC: 3 },
      });
      const hourly: CronSpec = {
        identifier: "hourly",
        name: "a:hourly",
        args: {},
        schedule: { type: "interval", hours: 1 },
      };
      await runner.register([daily("keep", "a:keep"), daily("change", "a:old"), hourly]);
      const first = await docs();
      expect(first.map((d) => d.name).sort()).toEqual(["change", "hourly", "keep"]);
      await new Promise((r) => setTimeout(r, 20));
      await runner.register([daily("keep", "a:keep"), daily("change", "a:new")]);
      const second = await docs();
      expect(second.map((d) => d.name).sort()).toEqual(["change", "keep"]);
      expect(second.find((d) => d.name === "change")!.udfPath).toBe("a:new");
      expect(second.find((d) => d.name === "keep")!.nextRunMs).toBe(
        first.find((d) => d.name === "keep")!.nextRunMs,
      );
      await runner.register([]);
      expect(await docs()).toEqual([]);
    } finally {
      runner.close();
    }
  });
});
