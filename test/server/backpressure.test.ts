/**
 * Backpressure of the sync layer with real sockets: a client that stops
 * reading never slows the others; the server keeps a bounded amount of data
 * for it (updates coalesce while its socket is backed up, so it later gets
 * the latest state in fewer transitions); and a client whose unsent data goes
 * over `maxBufferedBytes` is closed with 4001 "Client too slow", after which
 * the official client reconnects and catches up.
 *
 * The server runs in this process (a `Deployment` and an `ApiServer`, as
 * `tessera serve` wires them) so that the test can give it a small buffer
 * limit and look at the server side of the slow socket. The kernel's socket
 * buffers absorb some megabytes before the server's `bufferedAmount` grows,
 * so the tests write until they see the server hold data back rather than a
 * fixed number of times.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { makeFunctionReference } from "convex/server";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import WebSocket, { type WebSocketServer } from "ws";
import { Deployment } from "../../src/server/deployment.js";
import { ApiServer } from "../../src/server/server.js";
import { waitFor } from "../helpers.js";
import { api } from "./api.js";
import { fixtureConvexDir } from "./serverProcess.js";

/** The server's limit on unsent bytes per socket. */
const MAX_BUFFERED = 384 * 1024;
/** What the session counts as drained (`DRAINED_BYTES` in src/sync/session.ts). */
const DRAINED = 64 * 1024;
/** A result small enough that one transition plus a drained socket stays under the limit. */
const UNDER_LIMIT_BYTES = 160 * 1024;
/** A result whose transition alone is over the limit. */
const OVER_LIMIT_BYTES = 512 * 1024;
/** Writes before giving up on the server holding data back (here ~6 MiB of kernel buffers fill in ~30). */
const MAX_WRITES = 200;
const TOO_SLOW_REASON = "Client too slow: it did not keep up with its query updates";

const padded = makeFunctionReference<
  "query",
  { name: string; bytes: number },
  { value: number; padding: string }
>("counters:padded");

let dataDir: string;
let deployment: Deployment;
let server: ApiServer;
let http: ConvexHttpClient;
const open: { close(): Promise<void> | void }[] = [];

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "tessera-backpressure-"));
  deployment = await Deployment.open({
    dataDir,
    convexDir: fixtureConvexDir,
    syncLimits: { maxBufferedBytes: MAX_BUFFERED },
  });
  server = await ApiServer.start(deployment, { port: 0 });
  http = new ConvexHttpClient(server.url, { logger: false });
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
  await server?.close();
  await deployment?.close();
  if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true });
});

/** How long waits here last and how often they look: 10 s, every 5 ms. */
const BRIEF = [10_000, 5] as const;

/** The server side of every open sync socket (a look inside the in-process server). */
function serverSockets(): Set<WebSocket> {
  return (server as unknown as { wss: WebSocketServer }).wss.clients;
}

/** Runs `connect` and returns the server-side socket it opened. */
async function serverSideOf(connect: () => Promise<void>): Promise<WebSocket> {
  const before = new Set(serverSockets());
  await connect();
  const added = [...serverSockets()].filter((s) => !before.has(s));
  expect(added).toHaveLength(1);
  return added[0]!;
}

type WebSocketCtor = NonNullable<
  ConstructorParameters<typeof ConvexClient>[1]
>["webSocketConstructor"];

/** `ws` that keeps its instances and close events, so a test can stop one from reading. */
class PausableWebSocket extends WebSocket {
  static instances: PausableWebSocket[] = [];
  readonly closes: { code: number; reason: string }[] = [];

  constructor(...args: ConstructorParameters<typeof WebSocket>) {
    super(...args);
    PausableWebSocket.instances.push(this);
    this.on("close", (code, reason) => this.closes.push({ code, reason: reason.toString() }));
  }
}

function newClient(ctor: unknown = WebSocket): ConvexClient {
  const c = new ConvexClient(server.url, {
    webSocketConstructor: ctor as WebSocketCtor,
    logger: false,
    unsavedChangesWarning: false,
  });
  open.push(c);
  return c;
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

/** Healthy clients on the counter: one on the same large query as the slow client, one on a small query. */
function healthyClients(counter: string, bytes: number) {
  const sameQuery = watch<{ value: number }>(newClient(), padded, { name: counter, bytes });
  const small = watch<number>(newClient(), api.counters.get, { name: counter });
  return {
    ready: () => sameQuery.length > 0 && small.length > 0,
    /** Both have seen `value`. */
    saw: (value: number) => sameQuery.at(-1)?.value === value && small.at(-1) === value,
    /** Every value both saw, in order. */
    seen: () => ({ sameQuery: sameQuery.map((v) => v.value), small: [...small] }),
  };
}

/** A raw sync-protocol client that decodes the transitions it reads. */
class RawSyncClient {
  readonly ws: WebSocket;
  transitions = 0;
  /** The latest `value` of query 0. */
  value: number | null = null;
  closed: { code: number; reason: string } | null = null;
  private chunks: string[] = [];

  constructor(url: string) {
    this.ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/1.48.0/sync`);
    this.ws.on("message", (data: Buffer) => this.onMessage(data.toString("utf8")));
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString() };
    });
    this.ws.on("error", () => {});
  }

  async connect(udfPath: string, args: unknown): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.ws.once("open", () => resolve());
      this.ws.once("error", reject);
    });
    this.ws.send(
      JSON.stringify({
        type: "Connect",
        sessionId: crypto.randomUUID(),
        connectionCount: 0,
        lastCloseReason: null,
        maxObservedTimestamp: null,
      }),
    );
    this.ws.send(
      JSON.stringify({
        type: "ModifyQuerySet",
        baseVersion: 0,
        newVersion: 1,
        modifications: [{ type: "Add", queryId: 0, udfPath, args: [args] }],
      }),
    );
  }

  private onMessage(text: string): void {
    const m = JSON.parse(text);
    if (m.type === "TransitionChunk") {
      this.chunks.push(m.chunk);
      if (m.partNumber + 1 < m.totalParts) return;
      const whole = JSON.parse(this.chunks.join(""));
      this.chunks = [];
      this.onTransition(whole);
    } else if (m.type === "Transition") {
      this.onTransition(m);
    }
  }

  private onTransition(t: { modifications: { queryId: number; value?: { value: number } }[] }) {
    this.transitions++;
    for (const mod of t.modifications) {
      if (mod.queryId === 0 && mod.value !== undefined) this.value = mod.value.value;
    }
  }

  close(): void {
    this.ws.terminate();
  }
}

/**
 * Increments `counter` once and waits until the healthy clients show the new
 * value: each write is seen by every healthy client before the next one.
 */
async function writeAndObserve(
  counter: string,
  healthy: ReturnType<typeof healthyClients>,
): Promise<number> {
  const value = await http.mutation(api.counters.increment, { name: counter });
  await waitFor(
    `the healthy clients to see ${counter} = ${value}`,
    () => healthy.saw(value),
    ...BRIEF,
  );
  return value;
}

describe("backpressure", () => {
  it("a client that stops reading gets coalesced updates and never slows the others", async () => {
    const counter = "coalesce";
    const slow = new RawSyncClient(server.url);
    open.push(slow);
    const slowServerSide = await serverSideOf(() =>
      slow.connect("counters:padded", { name: counter, bytes: UNDER_LIMIT_BYTES }),
    );
    await waitFor("the slow client's first transition", () => slow.value === 0, ...BRIEF);
    const healthy = healthyClients(counter, UNDER_LIMIT_BYTES);
    await waitFor("the healthy clients' first results", healthy.ready, ...BRIEF);

    // The slow client stops reading: first the kernel's buffers fill, then the
    // server holds back (its socket's unsent bytes reach the drained threshold).
    slow.ws.pause();
    let writes = 0;
    while (slowServerSide.bufferedAmount < DRAINED) {
      expect(writes, "the server never held data back for the slow client").toBeLessThan(
        MAX_WRITES,
      );
      writes = await writeAndObserve(counter, healthy);
    }
    const writesUntilHeld = writes;
    // At most one transition on top of a drained socket.
    const bound = DRAINED + UNDER_LIMIT_BYTES + 4096;
    expect(slowServerSide.bufferedAmount).toBeLessThan(bound);

    // Twenty more writes while it is stalled: every one reaches the healthy
    // clients, and what the server keeps for the slow one stays bounded.
    for (let i = 0; i < 20; i++) {
      writes = await writeAndObserve(counter, healthy);
      expect(slowServerSide.bufferedAmount).toBeLessThan(bound);
    }
    const expected = Array.from({ length: writes + 1 }, (_, i) => i);
    expect(healthy.seen()).toEqual({ sameQuery: expected, small: expected });
    // Under the limit: held, not disconnected.
    expect(slowServerSide.readyState).toBe(WebSocket.OPEN);

    // Reading again, it catches up to the latest value in one step, having
    // skipped the writes made while it was stalled: the first transition, one
    // per write until the server held back, and the catch-up (with room for
    // kernel buffers that took some more meanwhile) instead of 20 more.
    slow.ws.resume();
    await waitFor("the slow client to catch up", () => slow.value === writes, ...BRIEF);
    expect(slow.transitions).toBeLessThanOrEqual(writesUntilHeld + 2 + 8);
    expect(slow.closed).toBeNull();
    // …and it is live again: the next write reaches it too.
    writes = await writeAndObserve(counter, healthy);
    await waitFor("the slow client to see the next write", () => slow.value === writes, ...BRIEF);
  });

  it("a client over the buffer limit is closed with 4001 and the official client reconnects", async () => {
    const counter = "overflow";
    PausableWebSocket.instances = [];
    const slow = newClient(PausableWebSocket);
    const slowValues = watch<{ value: number }>(slow, padded, {
      name: counter,
      bytes: OVER_LIMIT_BYTES,
    });
    const slowServerSide = await serverSideOf(() =>
      waitFor("the slow client's first result", () => slowValues.length > 0, ...BRIEF),
    );
    const healthy = healthyClients(counter, OVER_LIMIT_BYTES);
    await waitFor("the healthy clients' first results", healthy.ready, ...BRIEF);

    // Each transition is over the limit: once the kernel's buffers are full,
    // the server's unsent bytes pass the limit and it closes the socket.
    const [slowSocket] = PausableWebSocket.instances;
    slowSocket!.pause();
    let writes = 0;
    while (slowServerSide.readyState === WebSocket.OPEN) {
      expect(writes, "the server never closed the slow client").toBeLessThan(MAX_WRITES);
      writes = await writeAndObserve(counter, healthy);
    }
    // Closed and forgotten by the server: the session keeps nothing for it.
    expect(slowServerSide.readyState).toBe(WebSocket.CLOSING);
    // The healthy clients go on seeing every write while the slow one is paused.
    for (let i = 0; i < 5; i++) writes = await writeAndObserve(counter, healthy);
    const expected = Array.from({ length: writes + 1 }, (_, i) => i);
    expect(healthy.seen()).toEqual({ sameQuery: expected, small: expected });

    // Reading again, the client finds the close frame after what was queued,
    // reconnects by itself and ends up with the latest value.
    slowSocket!.resume();
    await waitFor(
      "the slow client to reconnect and catch up",
      () => slowValues.at(-1)?.value === writes,
      ...BRIEF,
    );
    expect(slowSocket!.closes).toEqual([{ code: 4001, reason: TOO_SLOW_REASON }]);
    expect(PausableWebSocket.instances.length).toBeGreaterThanOrEqual(2);
    expect(slow.connectionState().isWebSocketConnected).toBe(true);
    // It skipped what it could not take: the five writes after the close
    // arrive as one value after the reconnect.
    expect(slowValues.length).toBeLessThan(writes);
  });
});
