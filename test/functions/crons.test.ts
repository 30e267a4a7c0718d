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
import { ensureSchedulerTable, SCHEDULED_TABLE } from "../../src/functions/scheduler.js";
import { openTestDb, sleep, type TestDb, waitFor } from "../helpers.js";

const SYSTEM = { system: true } as const;

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

  it("makes up one run, not every one, missed while the server was down", async () => {
    const spec: CronSpec = {
      identifier: "catchup",
      name: "a:catchup",
      args: {},
      schedule: { type: "interval", hours: 1 },
    };
    const before = new CronRunner(t.db);
    try {
      await before.register([spec]);
    } finally {
      before.close();
    }
    // Down for three and a half hours: three runs fell due meanwhile.
    const downtimeMs = 3.5 * 3_600_000;
    await t.db.run(async (tx) => {
      const [doc] = await tx.query(CRON_TABLE, "by_name").collect();
      await tx.patch(doc!._id, { nextRunMs: Date.now() - downtimeMs + 3_600_000 }, SYSTEM);
    });
    const jobs = async () => {
      const tx = t.db.begin({ readOnly: true });
      try {
        return (await tx.query(SCHEDULED_TABLE, "by_creation_time").collect()).filter(
          (j) => j.name === "a:catchup",
        );
      } finally {
        tx.abort();
      }
    };
    expect(await jobs()).toEqual([]);
    const restarted = new CronRunner(t.db);
    try {
      const startedMs = Date.now();
      // The push after the restart leaves an unchanged cron's next run as it was: in the past.
      await restarted.register([spec]);
      await waitFor("the missed run", async () => (await docs())[0]!.nextRunMs > startedMs);
      const made = await jobs();
      expect(made).toHaveLength(1);
      expect(made[0]!.scheduledTime).toBeGreaterThanOrEqual(startedMs);
      const next = (await docs())[0]!.nextRunMs;
      expect(next).toBeLessThanOrEqual(Date.now() + 3_600_000);
      // Nothing more is made up later.
      await sleep(200);
      expect(await jobs()).toHaveLength(1);
    } finally {
      restarted.close();
    }
  });
});
