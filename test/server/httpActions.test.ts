/**
 * HTTP actions on the site port of a real `tessera serve` process (the
 * fixture app's convex/http.ts): exact paths and path prefixes with methods,
 * request bodies and headers in, status, headers and bodies out,
 * ctx.runQuery / runMutation, 404 without a route, 500 on an exception.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ServerProcess, startServer } from "./serverProcess.js";

let server: ServerProcess;

beforeAll(async () => {
  server = await startServer();
}, 60_000);

afterAll(async () => {
  await server?.dispose();
});

const site = (path: string, init?: RequestInit) => fetch(`${server.siteUrl}${path}`, init);

describe("HTTP actions", () => {
  it("answer an exact route", async () => {
    const r = await site("/hello");
    expect(r.status).toBe(200);
    expect(await r.text()).toBe("hello from an HTTP action");
  });

  it("get the request's method, body and headers, and set status and headers", async () => {
    const r = await site("/echo", { method: "POST", body: "payload", headers: { "x-tag": "t1" } });
    expect(r.status).toBe(201);
    expect(r.headers.get("x-echo")).toBe("yes");
    expect(await r.json()).toEqual({ method: "POST", body: "payload", tag: "t1" });
  });

  it("route path prefixes", async () => {
    expect(await (await site("/files/a/b.txt")).text()).toBe("/files/a/b.txt");
  });

  it("call mutations and queries", async () => {
    expect(await (await site("/counter?name=h1", { method: "POST" })).json()).toEqual({ value: 1 });
    expect(await (await site("/counter?name=h1", { method: "POST" })).json()).toEqual({ value: 2 });
  });

  it("answer 404 without a route (or with the wrong method) and 500 when they throw", async () => {
    const missing = await site("/nowhere");
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain("No HttpAction routed for /nowhere");
    expect((await site("/hello", { method: "POST" })).status).toBe(404);
    const failed = await site("/fail");
    expect(failed.status).toBe(500);
    expect(await failed.text()).toContain("this route fails");
    expect(server.output()).toContain("HTTP action GET /fail failed");
  });
});
