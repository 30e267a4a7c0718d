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
    const before = await count("interval");
    await server.stop();
    // Four runs fall due while it is down.
    await new Promise((r) => setTimeout(r, 4000));
    server = await startServer({ convexDir, dataDir: server.dataDir });
    const readyAt = Date.now();
    await new Promise((r) => setTimeout(r, 600));
    const after = await count("interval");
    // Regular runs come once a second from registration (just before "ready"):
    // one, unless the machine was slow enough for more to fall due meanwhile.
    const regular = 1 + Math.floor((Date.now() - readyAt) / 1000);
    // At most: a run scheduled just before the stop, the one made up, and the regular ones.
    expect(after - before).toBeLessThanOrEqual(2 + regular);
    await expect
      .poll(() => count("interval"), { timeout: 10_000, interval: 200 })
      .toBeGreaterThanOrEqual(after + 2);
  }, 40_000);
});
