/**
 * The Swaghaus example (examples/swaghaus) end to end in a real browser,
 * started the way its README says: `npm run swaghaus`'s script
 * (examples/swaghaus/start.mjs) runs `tessera dev` on a fresh data dir (the
 * official Convex CLI pushes the functions, regenerates convex/_generated and
 * seeds the store) and the Vite dev server; two headless Chromium pages (two
 * shoppers) use it. Checks that one shopper's purchase shows up live in the
 * other's page, that when both grab the last hat at once exactly one gets it
 * and the other sees "out of stock", and that SIGTERM stops every process.
 *
 * Writes examples/swaghaus/.env.local (git-ignored) as `tessera dev` does.
 * Needs Chromium at /usr/bin/chromium (or CHROMIUM_PATH); fails if it is missing.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const root = join(import.meta.dirname, "../..");
const appDir = join(root, "examples/swaghaus");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const POLL = { timeout: 20_000, interval: 50 };
/** Push, codegen, seed and Vite's start on a busy two-core machine. */
const READY_TIMEOUT_MS = 90_000;
/** The dev server's first page load optimizes the dependencies first. */
const FIRST_LOAD_TIMEOUT_MS = 60_000;

const seed = makeFunctionReference<"mutation", Record<string, never>, number>("items:seed");

let app: ChildProcess | undefined;
let appExited: Promise<void> | undefined;
let output = "";
let dataDir: string | undefined;
let apiUrl = "";
let webUrl = "";
let browser: Browser | undefined;

/** Whether something can listen on `port` now (it is closed again at once). */
async function canListen(port: number): Promise<boolean> {
  const server = createServer();
  const ok = await new Promise<boolean>((resolve) => {
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => resolve(true));
  });
  if (ok) await new Promise<void>((resolve) => server.close(() => resolve()));
  return ok;
}

/**
 * A port for the web app, which start.mjs must be told in advance: one nothing
 * listens on, below the range the system hands out for port 0. Every other
 * server in the suite listens on port 0, and a free port in that range could
 * be handed to one of them before Vite binds it.
 */
async function webPort(): Promise<number> {
  let ephemeralFrom = 32_768;
  try {
    const [from] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/);
    if (Number(from) > 20_000) ephemeralFrom = Number(from);
  } catch {
    // Not Linux: below 32768 is below the usual ranges too.
  }
  for (let i = 0; i < 100; i++) {
    const port = 10_000 + Math.floor(Math.random() * (ephemeralFrom - 10_000));
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port found for the web app below ${ephemeralFrom}`);
}

/** The live (not zombie) processes in process group `pgid`, as "pid command" lines. */
function liveProcessesInGroup(pgid: number): string[] {
  const ps = execFileSync("ps", ["-eo", "pid=,pgid=,stat=,args="], { encoding: "utf8" });
  return ps
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter(([, group, stat]) => Number(group) === pgid && !stat?.startsWith("Z"))
    .map(([pid, , , ...args]) => `${pid} ${args.join(" ")}`);
}

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(
      `Chromium not found at ${chromiumPath}: install it (apt-get install chromium) or set CHROMIUM_PATH`,
    );
  }
  const web = await webPort();
  dataDir = mkdtempSync(join(tmpdir(), "swaghaus-data-"));
  // Its own process group, so the test can check that SIGTERM ended all of it.
  app = spawn(process.execPath, [join(appDir, "start.mjs")], {
    cwd: root,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...process.env,
      // The backend on any free port: it reports which, and writes it to .env.local.
      PORT: "0",
      WEB_PORT: String(web),
      DATA_DIR: dataDir,
      SITE_PORT: "0",
    },
  });
  const child = app;
  appExited = new Promise((resolve) => child.once("exit", () => resolve()));
  const ready = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`start.mjs not ready after ${READY_TIMEOUT_MS} ms:\n${output}`)),
      READY_TIMEOUT_MS,
    );
    const onData = (d: string) => {
      output += d;
      const m = /Swaghaus is ready: open (http:\/\/127\.0\.0\.1:\d+)\//.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.setEncoding("utf8").on("data", onData);
    child.stderr!.setEncoding("utf8").on("data", onData);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`start.mjs exited (${signal ?? code}) before it was ready:\n${output}`));
    });
  });
  webUrl = await ready;
  expect(webUrl).toBe(`http://127.0.0.1:${web}`);
  apiUrl = /API URL:\s+(\S+)/.exec(output)?.[1] ?? "";
  expect(apiUrl).toMatch(/^http:\/\/127\.0\.0\.1:[1-9]\d*$/);
  // The front end finds the deployment through the .env.local `tessera dev` wrote.
  expect(readFileSync(join(appDir, ".env.local"), "utf8")).toContain(`VITE_CONVEX_URL=${apiUrl}\n`);

  // `--run items:seed` stocked the store; seeding again does nothing.
  const http = new ConvexHttpClient(apiUrl, { logger: false });
  expect(await http.mutation(seed, {})).toBe(0);

  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
}, READY_TIMEOUT_MS + 30_000);

afterAll(async () => {
  await browser?.close();
  if (app?.pid !== undefined) {
    const pgid = app.pid;
    const kill = (signal: NodeJS.Signals) => {
      try {
        process.kill(-pgid, signal);
      } catch {
        // Already gone.
      }
    };
    let problem = "";
    if (app.exitCode === null && app.signalCode === null) {
      app.kill("SIGTERM");
      const timedOut = await Promise.race([
        appExited!.then(() => false),
        new Promise<boolean>((resolve) => setTimeout(() => resolve(true), 30_000)),
      ]);
      if (timedOut) problem = "start.mjs did not exit within 30 s of SIGTERM";
      else if (app.exitCode !== 0)
        problem = `start.mjs exited with ${app.signalCode ?? app.exitCode}`;
    }
    // start.mjs exits after the backend has; `tessera dev`, the Convex CLI
    // and whatever they started must be gone too.
    // Grandchildren that end when their parent's pipes close do so a moment
    // later (up to 20 s on a loaded machine).
    let left = liveProcessesInGroup(pgid);
    for (let i = 0; i < 200 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = liveProcessesInGroup(pgid);
    }
    if (left.length > 0) problem ||= `processes left after start.mjs exited:\n${left.join("\n")}`;
    kill("SIGKILL");
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    if (problem) throw new Error(`${problem}\n${output}`);
  } else if (dataDir) {
    rmSync(dataDir, { recursive: true, force: true });
  }
}, 60_000);

async function openAs(user: string): Promise<Page> {
  const page = await browser!.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(`${webUrl}/?user=${user}`, { timeout: FIRST_LOAD_TIMEOUT_MS });
  try {
    await page.getByTestId("item-Hat").waitFor({ timeout: FIRST_LOAD_TIMEOUT_MS });
  } catch (e) {
    throw new Error(`the store did not load for ${user}: ${problems.join("; ") || e}`);
  }
  return page;
}

/** The text of the element with `testId` now, or null if there is none (never waits). */
async function text(page: Page, testId: string): Promise<string | null> {
  return (await page.getByTestId(testId).allTextContents())[0] ?? null;
}

describe("Swaghaus in a browser", () => {
  let alice: Page;
  let bob: Page;

  beforeAll(
    async () => {
      // One page first: it waits out the dev server's dependency optimization.
      alice = await openAs("alice");
      bob = await openAs("bob");
    },
    2 * FIRST_LOAD_TIMEOUT_MS + 10_000,
  );

  it("lists the seeded items with their stock", async () => {
    for (const page of [alice, bob]) {
      expect(await text(page, "remaining-Hat")).toBe("1 left");
      expect(await text(page, "remaining-Stickers")).toBe("100 left");
      expect(await text(page, "user")).toBe(page === alice ? "alice" : "bob");
    }
  });

  it("a purchase in one page lowers the count in the other without a reload", async () => {
    await alice.getByTestId("add-Stickers").click();
    await expect.poll(() => text(bob, "remaining-Stickers"), POLL).toBe("99 left");
    await expect.poll(() => text(alice, "cart-Stickers"), POLL).toBe("Stickers × 1");
    expect(await bob.getByTestId("cart-Stickers").count()).toBe(0);
    expect(await alice.getByTestId("error").count()).toBe(0);
  });

  it("two shoppers race for the last hat: exactly one gets it", async () => {
    await Promise.all([alice.getByTestId("add-Hat").click(), bob.getByTestId("add-Hat").click()]);
    const pages = [alice, bob];
    // Both mutations have settled once each page shows either a result or an error.
    const settled = async () => {
      let n = 0;
      for (const page of pages) {
        if ((await text(page, "status")) !== null || (await text(page, "error")) !== null) n++;
      }
      return n;
    };
    await expect.poll(settled, POLL).toBe(2);
    for (const page of pages) {
      await expect.poll(() => text(page, "remaining-Hat"), POLL).toBe("0 left");
    }
    const errors = await Promise.all(pages.map((p) => p.getByTestId("error").count()));
    expect(errors.reduce((a, b) => a + b)).toBe(1);
    const loser = errors[0] === 1 ? alice : bob;
    const winner = loser === alice ? bob : alice;
    expect(await text(loser, "error")).toBe("Hat is out of stock");
    expect(await text(winner, "status")).toBe("Added Hat to your cart");
    await expect.poll(() => text(winner, "cart-Hat"), POLL).toBe("Hat × 1");
    expect(await loser.getByTestId("cart-Hat").count()).toBe(0);
  });
});
