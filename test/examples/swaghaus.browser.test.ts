/**
 * The Swaghaus example (examples/swaghaus) end to end in a real browser: a
 * `tessera serve` process runs the example's `convex/` folder, Vite builds its
 * front end against that server, and two headless Chromium pages (two
 * shoppers) use it. Checks that one shopper's purchase shows up live in the
 * other's page, and that when both grab the last hat at once exactly one gets
 * it and the other sees "out of stock".
 *
 * Needs Chromium at /usr/bin/chromium (or CHROMIUM_PATH); fails if it is missing.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { extname, join, normalize, sep } from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { type Browser, chromium, type Page } from "playwright-core";
import { build } from "vite";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServerProcess, startServer } from "../server/serverProcess.js";

const root = join(import.meta.dirname, "../..");
const appDir = join(root, "examples/swaghaus");
const chromiumPath = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const POLL = { timeout: 20_000, interval: 50 };

const seed = makeFunctionReference<"mutation", Record<string, never>, number>("items:seed");

let server: ServerProcess | undefined;
let outDir: string | undefined;
let web: Server | undefined;
let webUrl = "";
let browser: Browser | undefined;

beforeAll(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(
      `Chromium not found at ${chromiumPath}: install it (apt-get install chromium) or set CHROMIUM_PATH`,
    );
  }
  server = await startServer({ convexDir: join(appDir, "convex") });
  const http = new ConvexHttpClient(server.url, { logger: false });
  expect(await http.mutation(seed, {})).toBeGreaterThan(0);
  expect(await http.mutation(seed, {})).toBe(0); // idempotent

  outDir = mkdtempSync(join(tmpdir(), "swaghaus-web-"));
  await build({
    configFile: join(appDir, "vite.config.ts"),
    define: { "import.meta.env.VITE_CONVEX_URL": JSON.stringify(server.url) },
    logLevel: "silent",
    build: { outDir, emptyOutDir: true },
  });
  web = serveStatic(outDir);
  await new Promise<void>((resolve) => web!.listen(0, "127.0.0.1", resolve));
  webUrl = `http://127.0.0.1:${(web.address() as { port: number }).port}`;

  browser = await chromium.launch({ executablePath: chromiumPath, args: ["--no-sandbox"] });
}, 120_000);

afterAll(async () => {
  await browser?.close();
  if (web) await new Promise<void>((resolve) => web!.close(() => resolve()));
  if (outDir) rmSync(outDir, { recursive: true, force: true });
  await server?.dispose();
});

/** Serves a built single-page app: files from `dir`, index.html for anything else. */
function serveStatic(dir: string): Server {
  const types: Record<string, string> = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
  };
  return createServer((req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? "/", "http://x").pathname));
    let file = join(dir, path);
    if (!file.startsWith(dir + sep) || !existsSync(file) || statSync(file).isDirectory()) {
      file = join(dir, "index.html");
    }
    res.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    res.end(readFileSync(file));
  });
}

async function openAs(user: string): Promise<Page> {
  const page = await browser!.newPage();
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(`${webUrl}/?user=${user}`);
  try {
    await page.getByTestId("item-Hat").waitFor({ timeout: 20_000 });
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

  beforeAll(async () => {
    [alice, bob] = await Promise.all([openAs("alice"), openAs("bob")]);
  });

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
