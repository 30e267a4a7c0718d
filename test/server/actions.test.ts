/**
 * Actions on a real `tessera serve` process through the official clients
 * (WebSocket `ConvexClient.action` and `ConvexHttpClient.action`): calls to
 * queries, mutations and internal actions, `fetch` to a local server, timers
 * and the real clock, errors (their own and caught nested ConvexErrors),
 * log lines, an action that never finishes, queries and mutations still
 * served while actions wait, and "use node" actions in a Node.js process.
 */
import { createHash } from "node:crypto";
import { createServer, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { ConvexError } from "convex/values";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import WebSocket from "ws";
import { rejection } from "../helpers.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

// biome-ignore lint/suspicious/noExplicitAny: the fixture app is addressed untyped
const api = anyApi as any;

let server: ServerProcess;
let target: Server;
let targetUrl: string;
/** Responses to /slow, held until the test that asks for them lets them go (then answered at once). */
const held: ServerResponse[] = [];
let releaseSlow = false;
let client: ConvexClient;

beforeAll(async () => {
  target = createServer((req, res) => {
    let body = "";
    req.on("data", (d: Buffer) => {
      body += d.toString();
    });
    req.on("end", () => {
      if (req.url === "/slow") {
        if (releaseSlow) res.end("slow done");
        else held.push(res);
        return;
      }
      res.setHeader("content-type", "text/plain; charset=utf-8");
      res.statusCode = req.url === "/missing" ? 404 : 200;
      res.end(`${req.method} ${req.url} ${body}`);
    });
  });
  await new Promise<void>((resolve) => target.listen(0, "127.0.0.1", resolve));
  targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}`;
  server = await startServer();
  client = new ConvexClient(server.url, {
    webSocketConstructor: WebSocket as unknown as typeof globalThis.WebSocket,
  });
}, 60_000);

afterAll(async () => {
  await client?.close();
  await server?.dispose();
  target?.close();
});

const http = () => new ConvexHttpClient(server.url, { logger: false });

describe("actions", () => {
  it("run queries and mutations, each its own transaction, over WebSocket and HTTP", async () => {
    expect(await client.action(api.actions.callThrough, { name: "act-ws" })).toEqual({
      before: 0,
      returned: 1,
      after: 1,
    });
    expect(await http().action(api.actions.callThrough, { name: "act-ws" })).toEqual({
      before: 1,
      returned: 2,
      after: 2,
    });
    expect(await client.query(api.counters.get, { name: "act-ws" })).toBe(2);
  });

  it("compute for seconds without awaiting, on their own thread, while the server answers others", async () => {
    const order: string[] = [];
    const long = http()
      .action(api.actions.compute, { ms: 1500 })
      .then((done: boolean) => {
        order.push("action");
        return done;
      });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await http().query(api.counters.get, { name: "meanwhile" })).toBe(0);
    order.push("query");
    expect(await long).toBe(true);
    expect(order).toEqual(["query", "action"]);
  });

  it("leave nothing running on their isolate once they end, even a timer's endless callback", async () => {
    expect(await http().action(api.actions.leaveLoop, {})).toBe("returned");
    // Every isolate of the pool serves again (the loop's would otherwise run until the time limit).
    const calls = Array.from({ length: 8 }, () => http().action(api.actions.whoCalls, {}));
    expect(await Promise.all(calls)).toEqual(Array.from({ length: 8 }, () => null));
  });

  it("call internal actions, which clients cannot", async () => {
    expect(await client.action(api.actions.callInternal, { x: 21 })).toBe(42);
    const e = await rejection(http().action(api.actions.double, { x: 1 }));
    expect(e.message).toContain("Could not find public function for 'actions:double'");
  });

  it("fetch over the network", async () => {
    expect(
      await client.action(api.actions.fetchText, {
        url: `${targetUrl}/echo?x=1`,
        method: "POST",
        body: "hello",
      }),
    ).toEqual({
      status: 200,
      ok: true,
      type: "text/plain; charset=utf-8",
      text: "POST /echo?x=1 hello",
    });
    expect(
      await client.action(api.actions.fetchText, { url: `${targetUrl}/missing` }),
    ).toMatchObject({ status: 404, ok: false });
    const refused = await rejection(
      client.action(api.actions.fetchText, { url: "http://127.0.0.1:1/" }),
    );
    expect(refused.message).toContain("fetch failed");
  });

  it("have timers and the real clock", async () => {
    const a = (await client.action(api.actions.wait, { ms: 120 })) as {
      elapsed: number;
      order: string[];
      random: number;
    };
    expect(a.order).toEqual(["fast", "slow"]);
    expect(a.elapsed).toBeGreaterThanOrEqual(110);
    const b = (await client.action(api.actions.wait, { ms: 2 })) as { random: number };
    expect(b.random).not.toBe(a.random);
  });

  it("report their errors, ConvexError data included, and can catch a nested one", async () => {
    const e = await rejection(client.action(api.actions.failing, { catchNested: false }));
    expect(e).toBeInstanceOf(ConvexError);
    expect((e as ConvexError<{ code: string }>).data).toEqual({ code: "action-failed" });
    expect(await client.action(api.actions.failing, { catchNested: true })).toEqual({
      caught: { code: "nested", retry: false },
    });
  });

  it("pass on log lines", async () => {
    const lines: string[] = [];
    const logged = new ConvexHttpClient(server.url, {
      logger: {
        logVerbose: () => {},
        log: (...args: unknown[]) => lines.push(args.map(String).join(" ")),
        warn: (...args: unknown[]) => lines.push(args.map(String).join(" ")),
        error: (...args: unknown[]) => lines.push(args.map(String).join(" ")),
      },
    });
    await logged.action(api.actions.callThrough, { name: "act-log" });
    expect(lines.join("\n")).toContain("counted act-log 1");
  });

  it("report an action that can never finish", async () => {
    const e = await rejection(client.action(api.actions.hang, {}));
    expect(e.message).toContain("Your action never finished");
  });

  it("keep queries and mutations served while they wait", async () => {
    const slow = Promise.all(
      Array.from({ length: 6 }, () =>
        client.action(api.actions.fetchText, { url: `${targetUrl}/slow` }),
      ),
    );
    let settled = false;
    void slow.then(() => {
      settled = true;
    });
    await vi.waitFor(() => expect(held.length).toBeGreaterThan(0), { timeout: 20_000 });
    expect(await client.mutation(api.counters.increment, { name: "meanwhile" })).toBe(1);
    expect(await client.query(api.counters.get, { name: "meanwhile" })).toBe(1);
    // Served while every action still waits for its response.
    expect(settled).toBe(false);
    // Four run at a time (the actions runtime's isolates): the others start as these end.
    releaseSlow = true;
    for (const res of held.splice(0)) res.end("slow done");
    for (const r of await slow) expect(r).toMatchObject({ text: "slow done" });
  });
});

describe('"use node" actions', () => {
  it("run in Node.js with built-ins, bundled npm packages and ctx calls", async () => {
    await client.mutation(api.counters.increment, { name: "node-count" });
    expect(
      await client.action(api.nodeActions.digest, {
        text: "const a = 1; a + 1;",
        counter: "node-count",
      }),
    ).toEqual({
      sha256: createHash("sha256").update("const a = 1; a + 1;").digest("hex"),
      statements: 2,
      node: "string",
      count: 1,
    });
  });

  it("store and read files", async () => {
    const r = (await client.action(api.nodeActions.storeAndRead, { text: "from node" })) as {
      id: string;
      back: string;
      type: string;
    };
    expect(r.back).toBe("from node");
    expect(r.type).toBe("text/plain");
  });

  it("report ConvexErrors and keep internal ones internal", async () => {
    const e = await rejection(client.action(api.nodeActions.refuse, {}));
    expect(e).toBeInstanceOf(ConvexError);
    expect((e as ConvexError<{ code: string }>).data).toEqual({ code: "node-refused" });
    const hidden = await rejection(http().action(api.nodeActions.inner, {}));
    expect(hidden.message).toContain("Could not find public function");
  });
});
