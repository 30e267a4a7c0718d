/**
 * The WebSocket sync protocol of a real `tessera serve` process, driven by
 * the official `ConvexClient` (convex 1.48 and the old 1.17) with `ws`: live
 * updates, many clients, one timestamp per transition, reconnects without
 * lost or duplicated mutations, optimistic updates, and malformed input
 * refused for its own socket only.
 */
import { connect } from "node:net";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { ConvexError } from "convex/values";
import {
  ConvexClient as OldConvexClient,
  ConvexHttpClient as OldHttpClient,
} from "convex-1-17/browser";
import { makeFunctionReference as oldRef } from "convex-1-17/server";
import fc from "fast-check";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { sleep, waitFor } from "../helpers.js";
import { api } from "./api.js";
import { type ServerProcess, startProxy, startServer } from "./serverProcess.js";

let server: ServerProcess;
const open: { close(): Promise<void> | void }[] = [];

beforeAll(async () => {
  server = await startServer();
});

/** The last frames of this test's sockets, printed if it fails (for diagnosing a hang). */
let wireLog: string[] = [];
let socketCount = 0;

function record(line: string): void {
  wireLog.push(line.length > 240 ? `${line.slice(0, 240)}…` : line);
  if (wireLog.length > 600) wireLog = wireLog.slice(-400);
}

/** `ws` recording what goes over it (every client in this file uses it). */
class RecordingWebSocket extends WebSocket {
  private readonly tag = `#${socketCount++}`;
  private readonly t0 = Date.now();

  constructor(...args: ConstructorParameters<typeof WebSocket>) {
    super(...args);
    this.addEventListener("message", (e) => record(`${this.at()} <- ${String(e.data)}`));
    this.addEventListener("close", (e) => record(`${this.at()} closed ${e.code} ${e.reason}`));
  }

  private at(): string {
    return `${Date.now() - this.t0}ms ${this.tag}`;
  }

  override send(data: string, ...rest: unknown[]): void {
    record(`${this.at()} -> ${data}`);
    (super.send as (...a: unknown[]) => void)(data, ...rest);
  }
}

afterEach(async (ctx) => {
  if (ctx.task.result?.state === "fail") {
    console.error(
      `wire log of "${ctx.task.name}":\n${wireLog.join("\n")}\n--- server output:\n${server.output().slice(-4000)}`,
    );
  }
  wireLog = [];
  await Promise.all(open.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await server?.dispose();
});

type WebSocketCtor = NonNullable<
  ConstructorParameters<typeof ConvexClient>[1]
>["webSocketConstructor"];

function newClient(
  url = server.url,
  webSocketConstructor: unknown = RecordingWebSocket,
): ConvexClient {
  const c = new ConvexClient(url, {
    webSocketConstructor: webSocketConstructor as WebSocketCtor,
    logger: false,
    unsavedChangesWarning: false,
  });
  open.push(c);
  return c;
}

function newHttp(): ConvexHttpClient {
  return new ConvexHttpClient(server.url, { logger: false });
}

/** Subscribes and records every value the callback receives. */
function watch<T>(
  client: ConvexClient,
  ref: Parameters<ConvexClient["onUpdate"]>[0],
  args: Record<string, unknown>,
): T[] {
  const values: T[] = [];
  client.onUpdate(ref, args, (v) => {
    values.push(v as T);
  });
  return values;
}

describe("live queries", () => {
  it("a subscriber sees another client's mutation", async () => {
    const a = newClient();
    const b = newClient();
    const seen = watch<number>(a, api.counters.get, { name: "live" });
    const stock = watch<string[]>(a, api.items.inStock, {});
    await waitFor("the first results", () => seen.length > 0 && stock.length > 0);
    expect(seen).toEqual([0]);
    expect(await b.mutation(api.counters.increment, { name: "live" })).toBe(1);
    await waitFor("the update", () => seen.at(-1) === 1);
    await b.mutation(api.items.add, { name: "kite", price: 4, remaining: 1 });
    await waitFor("the new item", () => stock.at(-1)?.includes("kite (4.00)") === true);
    // A write another client makes over HTTP reaches the subscriber too.
    await newHttp().mutation(api.counters.increment, { name: "live", by: 10 });
    await waitFor("the HTTP write", () => seen.at(-1) === 11);
    expect(seen).toEqual([0, 1, 11]);
    // A one-shot query through the socket.
    expect(await b.query(api.counters.get, { name: "live" })).toBe(11);
  });

  it("a mutation's ConvexError reaches the WebSocket client with its data", async () => {
    const c = newClient();
    let error: unknown;
    try {
      await c.mutation(api.counters.refuse, { code: "WS" });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConvexError);
    expect((error as ConvexError<{ code: string }>).data).toEqual({ code: "WS", retry: false });
    expect(await c.query(api.counters.get, { name: "refused-WS" })).toBe(0);
  });

  it("query errors keep their kind, and internal functions need the admin key", async () => {
    const publicClient = newClient();
    let refused: unknown;
    try {
      await publicClient.query(api.items.secret, {});
    } catch (e) {
      refused = e;
    }
    expect(String(refused)).toMatch(/secret/);
    // A plain failure is an Error, not a ConvexError; a ConvexError keeps its data.
    expect(refused).toBeInstanceOf(Error);
    expect(refused).not.toBeInstanceOf(ConvexError);
    let withData: unknown;
    try {
      await publicClient.query(api.behaviour.failWithData, {});
    } catch (e) {
      withData = e;
    }
    expect(withData).toBeInstanceOf(ConvexError);
    expect((withData as ConvexError<{ code: string; detail: bigint[] }>).data).toEqual({
      code: "NOPE",
      detail: [1, 2n],
    });
    const admin = newClient();
    // `setAdminAuth` is the client's @internal API (what the dashboard uses).
    (admin as unknown as { setAdminAuth(key: string): void }).setAdminAuth(server.adminKey);
    expect(await admin.query(api.items.secret, {})).toBe("internal only");
  });

  it("200 clients subscribed to one query all see one mutation", async () => {
    const N = 200;
    const clients = Array.from({ length: N }, () => newClient());
    const latest = new Array<number | undefined>(N).fill(undefined);
    clients.forEach((c, i) => {
      c.onUpdate(api.counters.get, { name: "fan" }, (v) => {
        latest[i] = v;
      });
    });
    await waitFor("every client's first result", () => latest.every((v) => v === 0), 30_000);
    await newHttp().mutation(api.counters.increment, { name: "fan", by: 5 });
    await waitFor("every client to see the write", () => latest.every((v) => v === 5), 30_000);
  });

  it("two queries changed by one mutation are never seen at different timestamps", async () => {
    // Three writers (over HTTP, another socket, and the subscriber's own
    // socket) each add one to a pair of counters (a_w, b_w) in one mutation,
    // one mutation at a time; they touch different counters so that they
    // never conflict. The subscriber watches a_0 and b_0 by index, and the
    // sums of all a's and all b's by table scan: in every state it observes,
    // a_0 = b_0 and sum(a) = sum(b).
    const names = (p: string) => [0, 1, 2].map((w) => `pair-${p}${w}`);
    const queries = {
      a0: { udfPath: "counters:get", args: { name: "pair-a0" } },
      b0: { udfPath: "counters:get", args: { name: "pair-b0" } },
      sumA: { udfPath: "counters:sum", args: { names: names("a") } },
      sumB: { udfPath: "counters:sum", args: { names: names("b") } },
    };
    type Key = keyof typeof queries;
    const keyOf = (udfPath: string, args: unknown): Key | undefined =>
      (Object.keys(queries) as Key[]).find(
        (k) =>
          queries[k].udfPath === udfPath &&
          JSON.stringify(queries[k].args) === JSON.stringify(args),
      );

    // On the wire: which query id is which, and what each Transition changed.
    const idToKey = new Map<number, Key>();
    const transitions: Key[][] = [];
    class SpyWebSocket extends RecordingWebSocket {
      constructor(...args: ConstructorParameters<typeof WebSocket>) {
        super(...args);
        this.addEventListener("message", (event) => {
          const msg = JSON.parse(String(event.data)) as {
            type: string;
            modifications?: { queryId: number }[];
          };
          if (msg.type === "Transition")
            transitions.push((msg.modifications ?? []).map((m) => idToKey.get(m.queryId)!));
        });
      }
      override send(data: string, ...rest: unknown[]): void {
        const msg = JSON.parse(data) as {
          type: string;
          modifications?: { type: string; queryId: number; udfPath: string; args: unknown[] }[];
        };
        for (const m of msg.type === "ModifyQuerySet" ? (msg.modifications ?? []) : []) {
          const key = m.type === "Add" ? keyOf(m.udfPath, m.args[0]) : undefined;
          if (key !== undefined) idToKey.set(m.queryId, key);
        }
        (super.send as (...a: unknown[]) => void)(data, ...rest);
      }
    }
    const c = newClient(server.url, SpyWebSocket);
    const writer = newClient();
    type State = Record<Key, number>;
    const states: State[] = [];
    c.client.addOnTransitionHandler(() => {
      const state: Partial<State> = {};
      for (const k of Object.keys(queries) as Key[]) {
        const v = c.client.localQueryResult(queries[k].udfPath, queries[k].args);
        if (typeof v !== "number") return;
        state[k] = v;
      }
      states.push(state as State);
    });
    for (const k of Object.keys(queries) as Key[])
      watch<number>(c, makeFunctionReference<"query">(queries[k].udfPath), queries[k].args);
    await waitFor("the first results", () => states.length > 0);

    const http = newHttp();
    const pair = (w: number) => ({ a: `pair-a${w}`, b: `pair-b${w}` });
    const writers = [
      () => http.mutation(api.counters.incrementPair, pair(0)),
      () => writer.mutation(api.counters.incrementPair, pair(1)),
      () => c.mutation(api.counters.incrementPair, pair(2)),
    ];
    const EACH = 15;
    await Promise.all(
      writers.map(async (write) => {
        for (let i = 0; i < EACH; i++) await write();
      }),
    );
    await waitFor("the last write", () => states.at(-1)?.sumA === 3 * EACH);
    const bad = states.filter((s) => s.a0 !== s.b0 || s.sumA !== s.sumB || s.sumA < s.a0);
    expect(bad).toEqual([]);
    expect(states.at(-1)).toEqual({ a0: EACH, b0: EACH, sumA: 3 * EACH, sumB: 3 * EACH });
    // The subscriber saw intermediate steps, not only the first and last.
    expect(new Set(states.map((s) => s.sumA)).size).toBeGreaterThan(2);
    // Every transition that changed one of a pair changed the other.
    expect(idToKey.size).toBe(4);
    const partial = transitions.filter(
      (t) => t.includes("a0") !== t.includes("b0") || t.includes("sumA") !== t.includes("sumB"),
    );
    expect(partial).toEqual([]);
    expect(transitions.filter((t) => t.includes("a0")).length).toBeGreaterThan(2);
  });
});

describe("large transitions", () => {
  it("arrive as TransitionChunks for new clients and whole for old ones", async () => {
    const frames: string[] = [];
    class TypeSpy extends RecordingWebSocket {
      constructor(...args: ConstructorParameters<typeof WebSocket>) {
        super(...args);
        this.addEventListener("message", (e) => {
          frames.push((JSON.parse(String(e.data)) as { type: string }).type);
        });
      }
    }
    const big = `${"x".repeat(1536 * 1024)}end`;
    const c = newClient(server.url, TypeSpy);
    expect(await c.query(api.items.echo, { big })).toEqual({ big });
    expect(frames.filter((t) => t === "TransitionChunk").length).toBeGreaterThanOrEqual(2);

    frames.length = 0;
    const old = new OldConvexClient(server.url, {
      webSocketConstructor: TypeSpy as unknown as NonNullable<
        ConstructorParameters<typeof OldConvexClient>[1]
      >["webSocketConstructor"],
      unsavedChangesWarning: false,
      logger: { log() {}, warn() {}, error() {}, logVerbose() {} } as never,
    });
    open.push(old);
    expect(await old.query(oldRef<"query">("items:echo"), { big: `${big}!` })).toEqual({
      big: `${big}!`,
    });
    expect(frames).toContain("Transition");
    expect(frames).not.toContain("TransitionChunk");
  });
});

describe("optimistic updates", () => {
  it("show the optimistic value, then settle to the server's result", async () => {
    const c = newClient();
    const seen = watch<number>(c, api.counters.get, { name: "opt" });
    await waitFor("the first result", () => seen.length > 0);
    await c.mutation(api.counters.increment, { name: "opt", by: 2 });
    await waitFor("the server value", () => seen.at(-1) === 2);
    seen.length = 0;
    const done = c.mutation(
      api.counters.increment,
      { name: "opt", by: 1 },
      {
        optimisticUpdate: (store, args) => {
          const current = store.getQuery(api.counters.get, { name: args.name });
          if (current !== undefined)
            store.setQuery(api.counters.get, { name: args.name }, current + 100);
        },
      },
    );
    // Applied at once, before the server answered.
    expect(c.client.localQueryResult("counters:get", { name: "opt" })).toBe(102);
    expect(await done).toBe(3);
    // When the mutation resolves, its write is already in the query results.
    expect(c.client.localQueryResult("counters:get", { name: "opt" })).toBe(3);
    await waitFor("the settled value", () => seen.at(-1) === 3);
    expect(seen[0]).toBe(102);
    // Nothing but the optimistic value (possibly on top of the new server value) before it settled.
    expect(seen.slice(0, -1).every((v) => v === 102 || v === 103)).toBe(true);
    await sleep(50);
    expect(seen.at(-1)).toBe(3);
  });

  it("roll back when the mutation fails", async () => {
    const c = newClient();
    const seen = watch<number>(c, api.counters.get, { name: "opt-fail" });
    await waitFor("the first result", () => seen.length > 0);
    const done = c.mutation(
      api.counters.refuse,
      { code: "OPT" },
      {
        optimisticUpdate: (store) => {
          store.setQuery(api.counters.get, { name: "opt-fail" }, 50);
        },
      },
    );
    expect(c.client.localQueryResult("counters:get", { name: "opt-fail" })).toBe(50);
    await expect(done).rejects.toBeInstanceOf(ConvexError);
    await waitFor("the rollback", () => seen.at(-1) === 0);
    expect(seen).toEqual([0, 50, 0]);
  });
});

describe("reconnects", () => {
  it("replays the query set and unanswered mutations without losing or repeating any", async () => {
    const proxy = await startProxy(server.port);
    open.push(proxy);
    const c = newClient(proxy.url);
    const group = "reconnect";
    const seen = watch<string[]>(c, api.counters.marks, { group });
    await waitFor("the first result", () => seen.length > 0);
    const http = newHttp();
    const committed = async () => (await http.query(api.counters.marks, { group })).length;
    const pending: Promise<string>[] = [];
    const tags: string[] = [];
    const send = (tag: string) => {
      tags.push(tag);
      pending.push(c.mutation(api.counters.mark, { group, tag }));
    };

    // 1. Mutations the server committed but whose responses never arrived:
    // the client resends them after reconnecting, and they must not commit twice.
    proxy.holdResponses();
    for (let i = 0; i < 10; i++) send(`held-${i}`);
    const end = Date.now() + 20_000;
    while ((await committed()) < 10 && Date.now() < end) await sleep(20);
    expect(await committed()).toBe(10);
    expect(pending.length).toBe(10);
    expect(proxy.cut()).toBeGreaterThan(0);

    // 2. Cuts at arbitrary moments while mutations stream in.
    // (Each round starts once the last one is answered: the client then
    // counts as synced and reconnects after its shortest backoff.)
    for (let round = 0; round < 3; round++) {
      await Promise.all(pending);
      await waitFor("a connection", () => proxy.connections > 0);
      for (let i = 0; i < 15; i++) {
        send(`r${round}-${i}`);
        if (i === 7) await sleep(round * 3);
      }
      proxy.cut();
    }

    const ids = await Promise.all(pending);
    expect(new Set(ids).size).toBe(tags.length);
    const stored = await http.query(api.counters.marks, { group });
    expect([...stored].sort()).toEqual([...tags].sort());
    // The live query came back and shows every mark exactly once.
    await waitFor("the live query to catch up", () => seen.at(-1)?.length === tags.length);
    expect([...seen.at(-1)!].sort()).toEqual([...tags].sort());
    expect(proxy.accepted).toBeGreaterThanOrEqual(5);
  });
});

describe("malformed protocol input", () => {
  const wsUrl = () => `${server.url.replace(/^http/, "ws")}/api/1.48.0/sync`;
  const CONNECT = JSON.stringify({
    type: "Connect",
    sessionId: "00000000-0000-4000-8000-000000000000",
    connectionCount: 0,
    lastCloseReason: null,
  });

  /** Sends `frames` on a raw socket; resolves with what came back and the close code. */
  function exchange(
    frames: (string | Buffer)[],
  ): Promise<{ messages: { type: string; error?: string }[]; code: number }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl());
      const messages: { type: string; error?: string }[] = [];
      const timer = setTimeout(() => {
        ws.terminate();
        reject(new Error(`no close; got ${JSON.stringify(messages)}`));
      }, 10_000);
      ws.on("open", () => {
        for (const f of frames) ws.send(f);
      });
      ws.on("message", (data) => messages.push(JSON.parse(String(data))));
      ws.on("error", () => {});
      ws.on("close", (code) => {
        clearTimeout(timer);
        resolve({ messages, code });
      });
    });
  }

  it("answers each kind with a FatalError and a close, and other sessions go on", async () => {
    const c = newClient();
    const seen = watch<number>(c, api.counters.get, { name: "steady" });
    await waitFor("the first result", () => seen.length > 0);
    const writer = newHttp();
    const cases: [string, (string | Buffer)[]][] = [
      ["not JSON", ["garbage{"]],
      ["not an object", ["[1,2,3]"]],
      ["unknown type", [CONNECT, JSON.stringify({ type: "Bogus" })]],
      [
        "before Connect",
        [
          JSON.stringify({
            type: "ModifyQuerySet",
            baseVersion: 0,
            newVersion: 1,
            modifications: [],
          }),
        ],
      ],
      [
        "wrong baseVersion",
        [
          CONNECT,
          JSON.stringify({
            type: "ModifyQuerySet",
            baseVersion: 5,
            newVersion: 6,
            modifications: [],
          }),
        ],
      ],
      [
        "bad modification",
        [
          CONNECT,
          JSON.stringify({
            type: "ModifyQuerySet",
            baseVersion: 0,
            newVersion: 1,
            modifications: [{ type: "Add", queryId: -1, udfPath: 7, args: {} }],
          }),
        ],
      ],
      ["binary frame", [CONNECT, Buffer.from([0, 1, 2, 3])]],
      ["Connect twice", [CONNECT, CONNECT]],
      ["oversized", [CONNECT, `"${"x".repeat(17 * 1024 * 1024)}"`]],
    ];
    let expected = 0;
    for (const [name, frames] of cases) {
      const { messages, code } = await exchange(frames);
      const fatal = messages.find((m) => m.type === "FatalError");
      expect(fatal, name).toBeDefined();
      expect(typeof fatal!.error, name).toBe("string");
      expect(code, name).not.toBe(1000);
      // The well-behaved client still gets its updates.
      expected++;
      await writer.mutation(api.counters.increment, { name: "steady" });
      await waitFor(`the update after ${name}`, () => seen.at(-1) === expected);
    }
    expect(c.connectionState().isWebSocketConnected).toBe(true);
    // And the server answers a well-formed raw session normally.
    const ok = await new Promise<{ type: string; modifications?: unknown[] }>((resolve, reject) => {
      const ws = new WebSocket(wsUrl());
      const timer = setTimeout(() => reject(new Error("no transition")), 10_000);
      ws.on("open", () => {
        ws.send(CONNECT);
        ws.send(
          JSON.stringify({
            type: "ModifyQuerySet",
            baseVersion: 0,
            newVersion: 1,
            modifications: [
              { type: "Add", queryId: 0, udfPath: "counters:get", args: [{ name: "steady" }] },
            ],
          }),
        );
      });
      ws.on("message", (data) => {
        const msg = JSON.parse(String(data)) as { type: string };
        if (msg.type === "Transition") {
          clearTimeout(timer);
          ws.close();
          resolve(msg);
        }
      });
    });
    expect(ok.modifications).toEqual([
      { type: "QueryUpdated", queryId: 0, value: expected, logLines: [], journal: null },
    ]);
  });
});

describe("malformed upgrade requests", () => {
  /** Sends a WebSocket upgrade request for `target` as it is; resolves with the status line. */
  function upgrade(target: string): Promise<string> {
    const { hostname, port } = new URL(server.url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(port), hostname, () =>
        socket.write(
          `GET ${target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ),
      );
      let text = "";
      const done = () => resolve(text.split("\r\n")[0] ?? "");
      socket.on("data", (d) => {
        text += d.toString("latin1");
        // The head is all that is asked for; an accepted upgrade would stay open.
        if (text.includes("\r\n\r\n")) {
          done();
          socket.destroy();
        }
      });
      socket.on("close", done);
      socket.on("error", reject);
    });
  }

  it("are refused with a status, and the server goes on", async () => {
    // `//` made new URL() throw in the upgrade handler, and the process ended.
    expect(await upgrade("//")).toBe("HTTP/1.1 404 Not Found");
    expect(await upgrade("//api/1.48.0/sync")).toBe("HTTP/1.1 404 Not Found");
    // A client version that is not valid percent-encoding.
    expect(await upgrade("/api/%E0%A4%A/sync")).toBe("HTTP/1.1 400 Bad Request");
    expect((await fetch(`${server.url}/version`)).status).toBe(200);
    // A plain request for `//` is the client's mistake too (it was a 500).
    expect((await fetch(`${server.url}//`)).status).toBe(404);
  });

  it("any target is answered with a status line, and the server goes on", async () => {
    // Printable, no space: what a request line can carry as its target.
    const part = fc.string({
      unit: fc.constantFrom(..."abz09%./_-~:@!$&'()*+,;=?#[]"),
      maxLength: 12,
    });
    const target = fc.oneof(
      part.map((v) => `/api/${v}/sync`),
      part.map((v) => `/${v}`),
      part.map((v) => `//${v}`),
    );
    await fc.assert(
      fc.asyncProperty(target, async (t) => {
        expect(await upgrade(t)).toMatch(/^HTTP\/1\.1 (101|400|404) /);
      }),
      { numRuns: 200 },
    );
    expect((await fetch(`${server.url}/version`)).status).toBe(200);
  });
});

describe("an old client (convex 1.17)", () => {
  it("runs a live query and a mutation", async () => {
    const quiet = { log() {}, warn() {}, error() {}, logVerbose() {} };
    const c = new OldConvexClient(server.url, {
      webSocketConstructor: RecordingWebSocket as unknown as NonNullable<
        ConstructorParameters<typeof OldConvexClient>[1]
      >["webSocketConstructor"],
      unsavedChangesWarning: false,
      logger: quiet as never,
    });
    open.push(c);
    const get = oldRef<"query">("counters:get");
    const increment = oldRef<"mutation">("counters:increment");
    const seen: number[] = [];
    c.onUpdate(get, { name: "old" }, (v: number) => {
      seen.push(v);
    });
    await waitFor("the first result", () => seen.length > 0);
    expect(seen).toEqual([0]);
    expect(await c.mutation(increment, { name: "old" })).toBe(1);
    await waitFor("the update", () => seen.at(-1) === 1);
    const http = new OldHttpClient(server.url, { logger: quiet as never });
    expect(await http.mutation(increment, { name: "old", by: 2 })).toBe(3);
    await waitFor("the HTTP write", () => seen.at(-1) === 3);
    expect(await http.query(get, { name: "old" })).toBe(3);
    expect(seen).toEqual([0, 1, 3]);
  });
});
