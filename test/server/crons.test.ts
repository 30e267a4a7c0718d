/**
 * Crons on a real `tessera serve` process (the fixture app in
 * test/fixtures/crons): they run on schedule as scheduled functions, their
 * registrations are readable in `_cron_jobs`, and after downtime at most one
 * missed run is made up, never several.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServerProcess, startServer } from "./serverProcess.js";

// biome-ignore lint/suspicious/noExplicitAny: the fixture app is addressed untyped
const api = anyApi as any;
const convexDir = join(import.meta.dirname, "../fixtures/crons/convex");

let server: ServerProcess;

beforeAll(async () => {
  server = await startServer({ convexDir });
}, 60_000);

afterAll(async () => {
  await server?.dispose();
  if (server !== undefined) rmSync(server.dataDir, { recursive: true, force: true });
});

const count = (name: string) =>
  new ConvexHttpClient(server.url, { logger: false }).query(api.tick.count, {
    name,
  }) as Promise<number>;

const jobs = (name: string) =>
  new ConvexHttpClient(server.url, { logger: false }).query(api.tick.jobs, {
    name,
  }) as Promise<Array<{ scheduledTime: number; state: string }>>;

/** The "interval" cron's jobs due at or after `t`. */
const since = async (t: number) => (await jobs("interval")).filter((j) => j.scheduledTime >= t);

describe("crons", () => {
  it("run on schedule and are registered in _cron_jobs", async () => {
    await expect
      .poll(() => count("interval"), { timeout: 15_000, interval: 200 })
      .toBeGreaterThanOrEqual(3);
    const { crons } = (await new ConvexHttpClient(server.url).query(api.tick.crons, {})) as {
      crons: Array<{ name: string; nextRunMs: number; cronSpec: { udfPath: string } }>;
    };
    expect(crons.map((c) => c.name).sort()).toEqual(["every minute", "every second", "nightly"]);
    const nightly = crons.find((c) => c.name === "nightly")!;
    expect(nightly.cronSpec.udfPath).toBe("tick:bump");
    expect(new Date(nightly.nextRunMs).toISOString()).toMatch(/T03:30:00\.000Z$/);
    expect(await count("nightly")).toBe(0);
  }, 30_000);

  it("make up at most one missed run after downtime", async () => {
    await server.stop();
    // Every job the old process scheduled is due at or before this.
    const stoppedAt = Date.now();
    // Four runs fall due while it is down.
    await new Promise((r) => setTimeout(r, 4000));
    // Every job the new process schedules is due at or after this.
    const restartAt = Date.now();
    server = await startServer({ convexDir, dataDir: server.dataDir });
    // Runs go on: the made-up one and regular ones after it.
    await expect
      .poll(async () => (await since(restartAt)).filter((j) => j.state === "success").length, {
        timeout: 15_000,
        interval: 200,
      })
      .toBeGreaterThanOrEqual(3);
    const all = await jobs("interval");
    // No run is made up at the time it was missed (while the server was down)...
    expect(all.filter((j) => j.scheduledTime > stoppedAt && j.scheduledTime < restartAt)).toEqual(
      [],
    );
    // ...nor several at once after the restart: the made-up run and the regular
    // ones come a second apart, however slowly the machine starts up. (Measured
    // on due times, not on how many ran by some moment, which load would skew.)
    const times = (await since(restartAt)).map((j) => j.scheduledTime);
    const gaps = times.slice(1).map((t, i) => t - times[i]!);
    expect(gaps.filter((g) => g < 900)).toEqual([]);
  }, 40_000);
});
