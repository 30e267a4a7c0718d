/**
 * HTTP actions on the site port of a real `tessera serve` process (the
 * fixture app's convex/http.ts): exact paths and path prefixes with methods,
 * request bodies and headers in, status, headers and bodies out,
 * ctx.runQuery / runMutation, 404 without a route, 500 on an exception;
 * streamed request and response bodies, their 20 MiB limits, clients that go
 * away mid-stream and streams that fail mid-way.
 */
import { createHash, randomBytes } from "node:crypto";
import { once } from "node:events";
import { Agent, type ClientRequest, request as httpRequest, type IncomingMessage } from "node:http";
import { ConvexHttpClient } from "convex/browser";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { api } from "./api.js";
import { type ServerProcess, startServer } from "./serverProcess.js";

/** The server's stderr is a pipe read apart from the response's socket: its line may come later. */
async function loggedBy(server: ServerProcess, text: string): Promise<void> {
  await vi.waitFor(() => expect(server.output()).toContain(text), { timeout: 15_000 });
}

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

  it("answer any method, path, headers and body: the route's answer, 404 without one, 500 only from a route that throws", async () => {
    const segment = fc.oneof(
      fc.constantFrom("hello", "echo", "files", "counter", "fail", "nowhere", "..", "%2e%2e", ""),
      fc.string({ maxLength: 8 }).map(encodeURIComponent),
    );
    const path = fc
      .array(segment, { minLength: 1, maxLength: 4 })
      .map((parts) => `/${parts.join("/")}`);
    const query = fc.oneof(
      fc.constant(""),
      fc.string({ maxLength: 12 }).map((q) => `?name=${encodeURIComponent(`fz${q}`)}`),
    );
    const header = fc.string({ maxLength: 20 }).filter((v) => /^[\x20-\x7e]*$/.test(v));
    const headers = fc.record(
      { "x-tag": header, "content-type": header, accept: header, cookie: header },
      { requiredKeys: [] },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"),
        path,
        query,
        headers,
        fc.uint8Array({ maxLength: 256 }),
        async (method, p, q, h, body) => {
          const r = await site(`${p}${q}`, {
            method,
            headers: h as Record<string, string>,
            ...(method === "GET" || method === "HEAD" ? {} : { body }),
          });
          await r.arrayBuffer();
          // The one route that throws answers 500 (HEAD runs GET's route); nothing else may.
          // (fetch sends the path with dot segments resolved, as any URL parser does.)
          const sent = new URL(`${server.siteUrl}${p}`).pathname;
          if (r.status >= 500) expect(["GET /fail", "HEAD /fail"]).toContain(`${method} ${sent}`);
        },
      ),
      { numRuns: 300 },
    );
    expect((await site("/hello")).status).toBe(200);
  });

  it("answer 404 without a route (or with the wrong method) and 500 when they throw", async () => {
    const missing = await site("/nowhere");
    expect(missing.status).toBe(404);
    expect(await missing.text()).toContain("No HttpAction routed for /nowhere");
    expect((await site("/hello", { method: "POST" })).status).toBe(404);
    // A path that starts with `//` is a path: it was read as a host (and `//` alone was a 500).
    const doubled = await site("//hello");
    expect(doubled.status).toBe(404);
    expect(await doubled.text()).toContain("No HttpAction routed for //hello");
    expect((await site("//")).status).toBe(404);
    const failed = await site("/fail");
    expect(failed.status).toBe(500);
    expect(await failed.text()).toContain("this route fails");
    await loggedBy(server, "HTTP action GET /fail failed");
  });
});

const MiB = 1024 * 1024;
const decoder = new TextDecoder();

/** Reads what is left of a fetch body as text. */
async function rest(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
  let out = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return out;
    out += decoder.decode(value, { stream: true });
  }
}

/** The next `data` chunk of a Node response, as text. */
async function nextData(res: IncomingMessage): Promise<string> {
  const [chunk] = (await once(res, "data")) as [Buffer];
  return chunk.toString("utf8");
}

/** Writes `total` bytes of `fill` in 1 MiB pieces, waiting for the socket as it asks. */
async function writeBytes(req: ClientRequest, total: number, fill = 0x61): Promise<void> {
  const piece = Buffer.alloc(MiB, fill);
  for (let left = total; left > 0; left -= piece.length) {
    if (!req.write(left >= piece.length ? piece : piece.subarray(0, left))) {
      await Promise.race([once(req, "drain"), once(req, "close")]);
      if (req.destroyed) return;
    }
  }
}

/** Polls a counter of the fixture app until it reaches `value` (at most 15 s). */
async function counterReaches(name: string, value: number): Promise<number> {
  const client = new ConvexHttpClient(server.url, { logger: false });
  let now = 0;
  for (let i = 0; i < 300; i++) {
    now = await client.query(api.counters.get, { name });
    if (now >= value) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return now;
}

describe("HTTP actions with streamed bodies", () => {
  it("send a stream body's first chunk before the handler has made the next", async () => {
    const gate = `gate-${randomBytes(4).toString("hex")}`;
    const r = await site(`/stream/gated?gate=${gate}`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-length")).toBeNull();
    const reader = r.body!.getReader();
    const first = await reader.read();
    expect(decoder.decode(first.value)).toBe("first\n");
    // The handler waits for this mutation before it writes the second line:
    // had the response been buffered, the first line would never have come.
    expect(await (await site(`/counter?name=${gate}`, { method: "POST" })).json()).toEqual({
      value: 1,
    });
    expect(await rest(reader)).toBe("second\n");
  });

  it("stream the request body in as the action reads it, and the response out as it is made", async () => {
    const url = new URL(`${server.siteUrl}/stream/echo`);
    const req = httpRequest(url, { method: "POST", headers: { "content-type": "text/plain" } });
    req.write("hello ");
    const [res] = (await once(req, "response")) as [IncomingMessage];
    expect(res.statusCode).toBe(200);
    expect(res.headers["transfer-encoding"]).toBe("chunked");
    // Each answer comes back before the client has sent the next piece.
    expect(await nextData(res)).toBe("HELLO ");
    req.write("streamed ");
    expect(await nextData(res)).toBe("STREAMED ");
    req.end("world");
    let tail = "";
    res.setEncoding("utf8").on("data", (d: string) => {
      tail += d;
    });
    await once(res, "end");
    expect(tail).toBe("WORLD");
  });

  it("hash a request body of several MiB read chunk by chunk in the action", async () => {
    const payload = randomBytes(6 * MiB + 12345);
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= payload.length) return controller.close();
        const end = Math.min(payload.length, sent + 256 * 1024);
        controller.enqueue(new Uint8Array(payload.subarray(sent, end)));
        sent = end;
      },
    });
    const r = await site("/stream/hash", {
      method: "POST",
      body,
      duplex: "half",
    } as RequestInit);
    expect(r.status).toBe(200);
    const got = (await r.json()) as { sha256: string; bytes: number; chunks: number };
    expect(got.bytes).toBe(payload.length);
    expect(got.sha256).toBe(createHash("sha256").update(payload).digest("hex"));
    expect(got.chunks).toBeGreaterThan(1);
  });

  it("read a streamed request body with text() (and small bodies still arrive whole)", async () => {
    const big = "x".repeat(300_000);
    const r = await site("/echo", { method: "POST", body: big });
    expect(((await r.json()) as { body: string }).body).toBe(big);
    const small = await site("/echo", { method: "POST", body: "tiny" });
    expect(((await small.json()) as { body: string }).body).toBe("tiny");
  });

  it("answer 413 to a request body over 20 MiB, declared or streamed, and keep serving", async () => {
    const url = new URL(`${server.siteUrl}/stream/hash`);
    const declared = httpRequest(url, {
      method: "POST",
      headers: { "content-length": String(21 * MiB) },
    });
    declared.on("error", () => {});
    declared.flushHeaders();
    const [early] = (await once(declared, "response")) as [IncomingMessage];
    expect(early.statusCode).toBe(413);
    declared.destroy();

    const chunked = httpRequest(url, { method: "POST" });
    chunked.on("error", () => {});
    const response = once(chunked, "response") as Promise<[IncomingMessage]>;
    await writeBytes(chunked, 21 * MiB);
    chunked.end();
    const [res] = await response;
    expect(res.statusCode).toBe(413);
    res.resume();
    await loggedBy(server, "Request body too large");
    expect(await (await site("/hello")).text()).toBe("hello from an HTTP action");
  });

  it("cut off a streamed response body that grows over 20 MiB", async () => {
    const ok = await site(`/stream/bytes?bytes=${3 * MiB}`);
    expect((await ok.arrayBuffer()).byteLength).toBe(3 * MiB);

    const r = await site(`/stream/bytes?bytes=${21 * MiB}`);
    expect(r.status).toBe(200);
    const reader = r.body!.getReader();
    let received = 0;
    await expect(
      (async () => {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return;
          received += value.length;
        }
      })(),
    ).rejects.toThrow();
    expect(received).toBeLessThanOrEqual(20 * MiB);
    await loggedBy(server, "response body is larger than the limit");
  });

  it("cancel the action's stream when the client goes away, freeing the action", async () => {
    const name = `cancelled-${randomBytes(4).toString("hex")}`;
    // More disconnections than the actions runtime has isolates (4): none may stay busy.
    for (let i = 1; i <= 6; i++) {
      const req = httpRequest(new URL(`${server.siteUrl}/stream/endless?cancelled=${name}`));
      req.on("error", () => {});
      req.end();
      const [res] = (await once(req, "response")) as [IncomingMessage];
      res.on("error", () => {});
      expect(await nextData(res)).toMatch(/^tick 0/);
      req.destroy();
      expect(await counterReaches(name, i)).toBe(i);
    }
    expect(await (await site("/hello")).text()).toBe("hello from an HTTP action");
  });

  it("end the response when the stream fails mid-way; the error is logged", async () => {
    const r = await site("/stream/fail");
    expect(r.status).toBe(200);
    const reader = r.body!.getReader();
    expect(decoder.decode((await reader.read()).value)).toBe("partial\n");
    await expect(rest(reader)).rejects.toThrow();
    await loggedBy(server, "HTTP action GET /stream/fail failed");
    await loggedBy(server, "the stream broke");
    expect(await (await site("/hello")).text()).toBe("hello from an HTTP action");
  });

  it("drop a streamed request body the action leaves unread, keeping the connection", async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const reused: boolean[] = [];
      for (let i = 1; i <= 2; i++) {
        const req = httpRequest(new URL(`${server.siteUrl}/counter?name=unread`), {
          method: "POST",
          agent,
        });
        const response = once(req, "response") as Promise<[IncomingMessage]>;
        await writeBytes(req, 2 * MiB);
        req.end();
        const [res] = await response;
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => {
          text += d;
        });
        await once(res, "end");
        expect(JSON.parse(text)).toEqual({ value: i });
        reused.push(req.reusedSocket);
      }
      expect(reused).toEqual([false, true]);
    } finally {
      agent.destroy();
    }
  });

  it("answer 500, having sent nothing, when app code starts a response with a bad status or headers", async () => {
    for (const what of ["status", "headers"]) {
      const r = await site(`/stream/raw-bad-start?what=${what}`);
      expect(r.status).toBe(500);
      expect(await r.text()).toMatch(/Invalid HTTP response/);
    }
    // Still serving.
    expect((await site("/stream/blob")).status).toBe(200);
  });

  it("send Blob#stream() bodies", async () => {
    const r = await site("/stream/blob");
    expect(await r.text()).toBe("a Blob's stream");
  });
});
