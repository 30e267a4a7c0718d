/**
 * Sync section: a real Tessera server process (`tessera serve`) driven over
 * WebSocket and HTTP. (a) cached query calls/s with the official clients,
 * against raw `ws` round trips to a bare echo server in the same run;
 * (b) mutation-to-every-subscriber latency with 1, 100 and 1,000
 * subscribers, each size twice: minimal protocol clients, then official
 * `ConvexClient`s; (c) one commit reaching 10,000 subscribers of one query,
 * against a raw `ws` broadcast to as many sockets; (d) server memory per idle
 * session holding one live query.
 *
 * The minimal protocol clients (Connect + ModifyQuerySet over `ws`, every
 * message parsed) measure what the server delivers: all subscribers live in
 * the benchmark's own process on a 2-core machine, and the official client
 * spends about as much CPU per update as the server does per subscriber, so
 * with 100 or more official clients the figure is mostly theirs. Subscribers
 * in separate processes were tried and were slower still (three processes
 * contending for two cores).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import WebSocket from "ws";
import { fmtStat, type Options, percentile, type Row, repeat, stat } from "./lib.js";
import { rssOfTree, startProcess, startServer, stop, TS_REGISTER } from "./processes.js";

// The bench app is untyped: function references come from anyApi.
// biome-ignore lint/suspicious/noExplicitAny: see above
const api = anyApi as any;
/** The official clients accept any WebSocket constructor; `ws` is one. */
const wsCtor = WebSocket as unknown as typeof globalThis.WebSocket;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs `loops` concurrent loops of `f` for `ms`; calls/s. */
async function drive(
  ms: number,
  loops: number,
  f: (i: number) => Promise<unknown>,
): Promise<number> {
  let n = 0;
  let done = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: loops }, async () => {
      while (performance.now() < end) {
        await f(n++);
        done++;
      }
    }),
  );
  return done / ((performance.now() - start) / 1000);
}

/** A new session's first message. */
function connectMessage(): string {
  return JSON.stringify({
    type: "Connect",
    sessionId: crypto.randomUUID(),
    connectionCount: 0,
    lastCloseReason: null,
    clientTs: Date.now(),
  });
}

/** When each value of a subscribed document's `text` arrived (performance.now()). */
class Arrivals {
  private readonly times = new Map<string, number>();
  private readonly waiting = new Map<string, (at: number) => void>();

  note(tag: string): void {
    if (this.times.has(tag)) return;
    const at = performance.now();
    this.times.set(tag, at);
    this.waiting.get(tag)?.(at);
    this.waiting.delete(tag);
  }

  seen(tag: string): Promise<number> {
    const at = this.times.get(tag);
    if (at !== undefined) return Promise.resolve(at);
    return new Promise((resolve) => this.waiting.set(tag, resolve));
  }
}

interface Subscriber {
  /** When the subscribed document's `text` became `tag`. */
  seen(tag: string): Promise<number>;
  close(): unknown;
}

/** `n` official clients, each subscribed to `docs:get` of `id`. */
async function officialSubscribers(url: string, n: number, id: string): Promise<Subscriber[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Subscriber>((resolve) => {
          const client = new ConvexClient(url, { webSocketConstructor: wsCtor });
          const arrivals = new Arrivals();
          const sub: Subscriber = {
            seen: (tag) => arrivals.seen(tag),
            close: () => client.close(),
          };
          let first = true;
          client.onUpdate(api.docs.get, { id }, (doc: { text?: string } | null) => {
            arrivals.note(doc?.text ?? "");
            if (first) {
              first = false;
              resolve(sub);
            }
          });
        }),
    ),
  );
}

/**
 * A minimal sync-protocol client: one live query, each message parsed as a
 * client must; resolves `ready` at its first result.
 */
export class ProtocolClient implements Subscriber {
  readonly ws: WebSocket;
  value: unknown = undefined;
  private onValue: ((v: unknown) => void) | null = null;
  private readonly arrivals = new Arrivals();
  readonly ready: Promise<void>;

  constructor(url: string, udfPath: string, args: unknown) {
    this.ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/1.48.0/sync`, {
      perMessageDeflate: false,
    });
    this.ready = new Promise((resolve, reject) => {
      this.ws.on("open", () => {
        this.ws.send(connectMessage());
        this.ws.send(
          JSON.stringify({
            type: "ModifyQuerySet",
            baseVersion: 0,
            newVersion: 1,
            modifications: [{ type: "Add", queryId: 0, udfPath, args: [args] }],
          }),
        );
      });
      this.ws.on("error", reject);
      this.ws.on("message", (data) => {
        const m = JSON.parse(data.toString());
        if (m.type !== "Transition") return;
        for (const mod of m.modifications) {
          if (mod.type === "QueryUpdated") {
            this.value = mod.value;
            this.arrivals.note((mod.value as { text?: string } | null)?.text ?? "");
            this.onValue?.(mod.value);
            resolve();
          }
        }
      });
    });
  }

  next(): Promise<unknown> {
    return new Promise((resolve) => {
      this.onValue = (v) => {
        this.onValue = null;
        resolve(v);
      };
    });
  }

  seen(tag: string): Promise<number> {
    return this.arrivals.seen(tag);
  }

  close(): void {
    this.ws.terminate();
  }
}

export async function connectMany(
  n: number,
  make: () => ProtocolClient,
): Promise<ProtocolClient[]> {
  const clients: ProtocolClient[] = [];
  // In waves, so that the listen backlog is never the bottleneck.
  for (let i = 0; i < n; i += 500) {
    const wave = Array.from({ length: Math.min(500, n - i) }, make);
    await Promise.all(wave.map((c) => c.ready));
    clients.push(...wave);
  }
  return clients;
}

export async function syncSection(o: Options, log: (s: string) => void): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-sync-"));
  const rows: Row[] = [];
  let server = await startServer(dir);
  const baseline = await startProcess(
    process.execPath,
    ["--import", TS_REGISTER, join(import.meta.dirname, "wsBaseline.ts")],
    /listening (\d+)/,
  );
  const baselineUrl = `ws://127.0.0.1:${baseline.value}`;
  const url = server.value;
  const clients: ConvexClient[] = [];
  try {
    const http = new ConvexHttpClient(url);
    const ids = (await http.mutation(api.docs.load, { start: 0, count: 100 })) as string[];
    const hot = ids[0]!;

    // (a) cached query calls.
    log("cached query calls over WebSocket and HTTP…");
    const warm = new ConvexClient(url, { webSocketConstructor: wsCtor });
    clients.push(warm);
    for (const id of ids) await warm.query(api.docs.get, { id });
    const wsRate = await repeat(o.runs, () => pipelinedQueryCalls(url, ids, o.durationMs, 4, 16));
    const httpRate = await repeat(o.runs, () => httpQueryCalls(url, ids, o.durationMs, 32));
    const officialRate = await repeat(o.runs, () =>
      drive(o.durationMs, 64, (i) => warm.query(api.docs.get, { id: ids[i % ids.length]! })),
    );
    const raw = await rawRoundTrips(baselineUrl, o.durationMs, o.runs);
    rows.push({
      name: "cached query calls over WebSocket (4 sockets × 16 in flight; per call an Add and a Remove, batched per transition)",
      unit: "calls/s",
      better: "higher",
      tessera: wsRate,
      baseline: { label: "raw ws echo round trips, 64 in flight", stat: raw },
      target: { text: "≥ 40,000/s", met: wsRate.median >= 40_000 },
    });
    rows.push({
      name: "cached query calls over WebSocket, official ConvexClient.query (64 in flight, one client)",
      unit: "calls/s",
      better: "higher",
      tessera: officialRate,
      baseline: { label: "raw ws echo round trips, 64 in flight", stat: raw },
      note: "bound by the official client's own CPU in the benchmark process",
    });
    rows.push({
      name: "cached query calls over HTTP (POST /api/query, keep-alive, 32 in flight)",
      unit: "calls/s",
      better: "higher",
      tessera: httpRate,
      baseline: { label: "raw ws echo round trips, 64 in flight", stat: raw },
    });

    // (b) mutation → every subscriber: minimal protocol clients (what the
    // server delivers), then official clients (what they add on top).
    const sizes = o.quick ? [1, 100] : [1, 100, 1000];
    // The floor under these: one message there and back between two processes.
    const rawTrips: Array<{ p50: number; p99: number }> = [];
    for (let r = 0; r < o.runs; r++) rawTrips.push(await rawLatency(baselineUrl, 200));
    const rawTrip = {
      p50: stat(rawTrips.map((t) => t.p50)),
      p99: stat(rawTrips.map((t) => t.p99)),
    };
    const writer = new ConvexClient(url, { webSocketConstructor: wsCtor });
    clients.push(writer);
    for (const official of [false, true]) {
      for (const n of sizes) {
        const kind = official ? "official ConvexClient" : "protocol client";
        log(`mutation to ${n} ${kind} subscriber(s)…`);
        const subs = official
          ? await officialSubscribers(url, n, hot)
          : await connectMany(n, () => new ProtocolClient(url, "docs:get", { id: hot }));
        try {
          const writes = o.quick ? 10 : 30;
          // Unmeasured first: the server's code for this path gets compiled (see fanout.ts).
          const warmups = o.quick ? 5 : 20;
          for (let k = 0; k < warmups; k++) {
            const tag = `w${official ? "o" : "p"}${n}-warm-${k}`;
            const all = Promise.all(subs.map((c) => c.seen(tag)));
            await writer.mutation(api.docs.touch, { id: hot, text: tag });
            await all;
          }
          // Several runs of `writes` writes: each figure is the median over the runs.
          const p50s: number[] = [];
          const p99s: number[] = [];
          for (let r = 0; r < o.runs; r++) {
            const latencies: number[] = [];
            for (let k = 0; k < writes; k++) {
              const tag = `w${official ? "o" : "p"}${n}-${r}-${k}`;
              const all = Promise.all(subs.map((c) => c.seen(tag)));
              const t0 = performance.now();
              await writer.mutation(api.docs.touch, { id: hot, text: tag });
              for (const t of await all) latencies.push(t - t0);
            }
            latencies.sort((x, y) => x - y);
            p50s.push(percentile(latencies, 50));
            p99s.push(percentile(latencies, 99));
          }
          const p50 = stat(p50s);
          const p99 = stat(p99s);
          rows.push({
            name: `mutation to every subscriber seeing it, ${n} ${kind}(s) subscribed (p50)`,
            unit: "ms",
            better: "lower",
            tessera: p50,
            ...(official
              ? {}
              : {
                  baseline: {
                    label: `raw ws round trip of one message, one at a time (p50; p99 ${fmtStat(rawTrip.p99)} ms)`,
                    stat: rawTrip.p50,
                  },
                }),
            ...(n === 100 && !official
              ? {
                  target: {
                    text: "p50 ≤ 3 ms, p99 ≤ 20 ms",
                    met: p50.median <= 3 && p99.median <= 20,
                  },
                }
              : {}),
            note:
              `p99 ${fmtStat(p99)} ms; each run ${writes} writes × ${n} subscribers (after ${warmups} unmeasured)` +
              (official && n > 1
                ? "; includes the official clients' own per-update CPU, all in the benchmark process"
                : ""),
          });
        } finally {
          await Promise.all(subs.map((c) => c.close()));
        }
      }
    }

    // (c) and (d): many minimal sessions on one query, on a freshly started
    // server (same data) so that its memory holds nothing from the phases above.
    const many = o.quick ? 1000 : 10_000;
    log(`${many.toLocaleString("en-US")} sessions on one query…`);
    await Promise.all(clients.map((c) => c.close()));
    clients.length = 0;
    await stop(server);
    server = await startServer(dir);
    const freshUrl = server.value;
    const freshHttp = new ConvexHttpClient(freshUrl);
    // The first tenth warms the server (code, caches, pools); memory is measured over the rest.
    const warmup = Math.ceil(many / 10);
    const sessions = await connectMany(
      warmup,
      () => new ProtocolClient(freshUrl, "docs:get", { id: hot }),
    );
    await sleep(1000);
    const before = rssOfTree(server.child.pid!);
    sessions.push(
      ...(await connectMany(
        many - warmup,
        () => new ProtocolClient(freshUrl, "docs:get", { id: hot }),
      )),
    );
    await sleep(1000);
    const after = rssOfTree(server.child.pid!);
    const fanouts: number[] = [];
    // Two unmeasured first, as in the other latency rows: this server has not run a write yet.
    const fanWarmups = 2;
    for (let k = 0; k < fanWarmups + o.runs; k++) {
      const tag = `fan-${k}`;
      const arrived = sessions.map((s) => s.next());
      const t0 = performance.now();
      await freshHttp.mutation(api.docs.touch, { id: hot, text: tag });
      await Promise.all(arrived);
      if (k >= fanWarmups) fanouts.push((performance.now() - t0) / 1000);
    }
    for (const s of sessions) s.close();
    const rawFan = await rawFanout(baselineUrl, many, o.runs);
    rows.push({
      name: `one commit reaching ${many.toLocaleString("en-US")} subscribers of one query`,
      unit: "s",
      better: "lower",
      tessera: stat(fanouts),
      baseline: {
        label: `raw ws broadcast to ${many.toLocaleString("en-US")} sockets`,
        stat: rawFan,
      },
      ...(many === 10_000 ? { target: { text: "≤ 0.3 s", met: stat(fanouts).median <= 0.3 } } : {}),
    });
    const perSession = (after - before) / (many - warmup) / 1024;
    rows.push({
      name: `server memory per idle session holding one live query, ${many.toLocaleString("en-US")} sessions`,
      unit: "KiB",
      better: "lower",
      tessera: stat([perSession]),
      ...(many === 10_000 ? { target: { text: "≤ 20 KiB", met: perSession <= 20 } } : {}),
      note: `server RSS ${(before / 2 ** 20).toFixed(0)} MiB with ${warmup.toLocaleString("en-US")} sessions, ${(after / 2 ** 20).toFixed(0)} MiB with ${many.toLocaleString("en-US")} (growth over the last ${(many - warmup).toLocaleString("en-US")})`,
    });
    return rows;
  } finally {
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
    await stop(server);
    await stop(baseline);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Cached query calls as the sync protocol carries them: per call an Add,
 * the Transition with its result, then a Remove; each socket keeps
 * `inFlight` calls going.
 */
export async function pipelinedQueryCalls(
  url: string,
  ids: string[],
  ms: number,
  sockets: number,
  inFlight: number,
): Promise<number> {
  let done = 0;
  const end = performance.now() + ms;
  const start = performance.now();
  await Promise.all(
    Array.from(
      { length: sockets },
      () =>
        new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(`${url.replace(/^http/, "ws")}/api/1.48.0/sync`, {
            perMessageDeflate: false,
          });
          let version = 0;
          let nextId = 0;
          let open = 0;
          const addition = () => {
            const queryId = nextId++;
            open++;
            return {
              type: "Add",
              queryId,
              udfPath: "docs:get",
              args: [{ id: ids[queryId % ids.length] }],
            };
          };
          const modify = (modifications: unknown[]) =>
            ws.send(
              JSON.stringify({
                type: "ModifyQuerySet",
                baseVersion: version,
                newVersion: ++version,
                modifications,
              }),
            );
          ws.on("error", reject);
          ws.on("open", () => {
            ws.send(connectMessage());
            modify(Array.from({ length: inFlight }, addition));
          });
          ws.on("message", (data) => {
            const m = JSON.parse(data.toString());
            if (m.type !== "Transition") return;
            // As a busy client batches its query-set changes: the finished calls'
            // Removes and the next calls' Adds in one ModifyQuerySet.
            const changes: unknown[] = [];
            for (const mod of m.modifications) {
              if (mod.type !== "QueryUpdated") continue;
              done++;
              open--;
              changes.push({ type: "Remove", queryId: mod.queryId });
              if (performance.now() < end) changes.push(addition());
            }
            if (changes.length > 0) modify(changes);
            if (open === 0) {
              ws.terminate();
              resolve();
            }
          });
        }),
    ),
  );
  return done / ((performance.now() - start) / 1000);
}

/** Cached query calls over HTTP with a keep-alive agent (cheaper per call than fetch). */
async function httpQueryCalls(
  url: string,
  ids: string[],
  ms: number,
  loops: number,
): Promise<number> {
  const agent = new Agent({ keepAlive: true, maxSockets: loops });
  const target = new URL("/api/query", url);
  const call = (i: number) =>
    new Promise<void>((resolve, reject) => {
      const body = `{"path":"docs:get","args":[{"id":"${ids[i % ids.length]}"}],"format":"convex_encoded_json"}`;
      const req = request(
        target,
        {
          method: "POST",
          agent,
          headers: { "Content-Type": "application/json", "Content-Length": body.length },
        },
        (res) => {
          if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
          res.resume();
          res.on("end", () => resolve());
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  try {
    return await drive(ms, loops, call);
  } finally {
    agent.destroy();
  }
}

/** A raw WebSocket to the echo server, once open. */
function openSocket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
}

/** p50 and p99 (ms) of `count` round trips of a transition-sized message to the echo server, one at a time. */
async function rawLatency(url: string, count: number): Promise<{ p50: number; p99: number }> {
  const ws = await openSocket(url);
  const message = JSON.stringify({ type: "Transition", padding: "x".repeat(300) });
  const times: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        ws.once("message", () => resolve());
        ws.send(message);
      });
      times.push(performance.now() - t0);
    }
  } finally {
    ws.terminate();
  }
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

async function rawRoundTrips(url: string, ms: number, runs: number) {
  const socks = await Promise.all(Array.from({ length: 4 }, () => openSocket(url)));
  const pending = socks.map(() => [] as Array<() => void>);
  socks.forEach((ws, i) => {
    ws.on("message", () => pending[i]!.shift()?.());
  });
  const r = await repeat(runs, () =>
    drive(ms, 64, (i) => {
      const k = i % socks.length;
      return new Promise<void>((resolve) => {
        pending[k]!.push(resolve);
        socks[k]!.send('{"type":"ping","n":1}');
      });
    }),
  );
  for (const ws of socks) ws.terminate();
  return r;
}

async function rawFanout(url: string, n: number, runs: number) {
  const socks: WebSocket[] = [];
  for (let i = 0; i < n; i += 500) {
    const wave = await Promise.all(
      Array.from({ length: Math.min(500, n - i) }, () => openSocket(url)),
    );
    socks.push(...wave);
  }
  const times: number[] = [];
  for (let k = 0; k < runs; k++) {
    const arrived = socks.map((ws) => new Promise((r) => ws.once("message", r)));
    const t0 = performance.now();
    socks[0]!.send(`broadcast:{"type":"Transition","n":${k}}`);
    await Promise.all(arrived);
    times.push((performance.now() - t0) / 1000);
  }
  for (const ws of socks) ws.terminate();
  return stat(times);
}
