/**
 * Scheduled functions on a real `tessera serve` process: runAfter/runAt from
 * mutations (transactional) and actions, the `_scheduled_functions` states
 * readable through `ctx.db.system`, cancel, failures recorded, actions run
 * at most once, the per-call limit, a burst of jobs, and jobs that fell due
 * while the server was down running after a restart.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { rejection, sleep } from "../helpers.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

// biome-ignore lint/suspicious/noExplicitAny: the fixture app is addressed untyped
const api = anyApi as any;

let server: ServerProcess;
let target: Server;
let targetUrl: string;
let hits = 0;

interface JobDoc {
  _id: string;
  name: string;
  args: unknown[];
  scheduledTime: number;
  completedTime?: number;
  state: { kind: string; error?: string };
}

beforeAll(async () => {
  target = createServer((req, res) => {
    hits++;
    if (req.url === "/slow") {
      setTimeout(() => res.end("slow"), 4000).unref();
      return;
    }
    res.end("fetched");
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
  server = await startServer();
}, 60_000);

afterAll(async () => {
  await server?.dispose();
  if (server !== undefined)
    (await import("node:fs")).rmSync(server.dataDir, { recursive: true, force: true });
  target?.closeAllConnections();
  target?.close();
});

const http = () => new ConvexHttpClient(server.url, { logger: false });
const job = (id: string) => http().query(api.jobs.job, { id }) as Promise<JobDoc | null>;
const counter = (name: string) => http().query(api.counters.get, { name }) as Promise<number>;

describe("the scheduler", () => {
  it("runs a scheduled mutation once and records it", async () => {
    const id = (await http().mutation(api.jobs.later, { name: "s-once", delayMs: 0 })) as string;
    await expect.poll(() => counter("s-once"), { timeout: 10_000 }).toBe(1);
    await expect.poll(async () => (await job(id))?.state.kind).toBe("success");
    const done = (await job(id))!;
    expect(done).toMatchObject({ name: "counters:increment", args: [{ name: "s-once" }] });
    expect(done.completedTime).toBeGreaterThanOrEqual(done.scheduledTime);
  });

  it("schedules only if the mutation commits", async () => {
    await rejection(http().mutation(api.jobs.laterThenFail, { name: "s-rolled-back" }));
    const all = (await http().query(api.jobs.all, {})) as JobDoc[];
    expect(all.filter((j) => (j.args[0] as { name?: string }).name === "s-rolled-back")).toEqual(
      [],
    );
  });

  it("cancels a pending job", async () => {
    // The cancel must commit before the job falls due. Three calls can outlast a short
    // delay on a loaded machine, so when the cancel came back only after the job was due
    // (and only then: it may rightly have run) this is tried again with a longer delay.
    for (const delayMs of [3_000, 10_000, 20_000]) {
      const name = `s-cancel-${delayMs}`;
      const start = Date.now();
      const id = (await http().mutation(api.jobs.later, { name, delayMs })) as string;
      const before = (await job(id))!;
      await http().mutation(api.jobs.cancel, { id });
      const canceledBy = Date.now();
      const after = (await job(id))!;
      if (canceledBy >= start + delayMs) continue;
      expect(before.state.kind).toBe("pending");
      expect(after.state.kind).toBe("canceled");
      // Once it is due, a job scheduled after it runs: the scheduler has got past the
      // canceled one, which must not have run.
      await sleep(Math.max(0, after.scheduledTime + 100 - Date.now()));
      const next = (await http().mutation(api.jobs.later, {
        name: `${name}-next`,
        delayMs: 0,
      })) as string;
      await expect.poll(async () => (await job(next))?.state.kind).toBe("success");
      expect(await counter(name)).toBe(0);
      expect((await job(id))?.state.kind).toBe("canceled");
      return;
    }
    expect.fail("every cancel came back after its job was due (a very slow machine)");
  }, 90_000);

  it("records a failed job with its error", async () => {
    const id = (await http().mutation(api.jobs.laterRefused, { code: "sched" })) as string;
    await expect.poll(async () => (await job(id))?.state.kind, { timeout: 10_000 }).toBe("failed");
    expect((await job(id))?.state.error).toContain("sched");
  });

  it("runs scheduled actions, and schedules from actions", async () => {
    const before = hits;
    const id = (await http().mutation(api.jobs.laterFetch, {
      url: `${targetUrl}/x`,
      delayMs: 0,
    })) as string;
    await expect.poll(async () => (await job(id))?.state.kind, { timeout: 10_000 }).toBe("success");
    expect(hits).toBe(before + 1);
    await http().action(api.jobs.fromAction, { name: "s-from-action" });
    await expect.poll(() => counter("s-from-action"), { timeout: 10_000 }).toBe(1);
  });

  it("refuses more than 1,000 functions from one call, and runs a burst of 1,000", async () => {
    const e = await rejection(http().mutation(api.jobs.many, { name: "s-too-many", n: 1001 }));
    expect(e.message).toContain("Too many functions scheduled");
    expect(await counter("s-too-many")).toBe(0);
    await http().mutation(api.counters.increment, { name: "s-served" });
    await http().mutation(api.jobs.many, { name: "s-burst", n: 1000 });
    // Served meanwhile.
    expect(await counter("s-served")).toBe(1);
    await expect.poll(() => counter("s-burst"), { timeout: 60_000, interval: 250 }).toBe(1000);
  }, 90_000);

  it("runs jobs that fell due while the server was down, and fails actions cut off by a restart", async () => {
    const id = (await http().mutation(api.jobs.later, {
      name: "s-restart",
      delayMs: 800,
    })) as string;
    const slow = (await http().mutation(api.jobs.laterFetch, {
      url: `${targetUrl}/slow`,
      delayMs: 0,
    })) as string;
    await expect
      .poll(async () => (await job(slow))?.state.kind, { timeout: 10_000 })
      .toBe("inProgress");
    await server.stop();
    await new Promise((r) => setTimeout(r, 1000));
    server = await startServer({ dataDir: server.dataDir });
    await expect.poll(() => counter("s-restart"), { timeout: 10_000 }).toBe(1);
    expect((await job(id))?.state.kind).toBe("success");
    const cut = (await job(slow))!;
    expect(cut.state.kind).toBe("failed");
    expect(cut.state.error).toContain("restarted");
  }, 60_000);
});
