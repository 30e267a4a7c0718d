/**
 * Fan-out section, comparison 2 of the suite: one write seen by N
 * subscribers of the store's item list (`items:getItems`), write start to
 * delivery at every subscriber.
 *
 * - Tessera: a `tessera serve` process; the writer is an official
 *   `ConvexClient` calling `items:addCart`; subscribers are minimal
 *   sync-protocol clients (Connect + ModifyQuerySet over `ws`, each message
 *   parsed), the same per-message work as the baseline's subscribers.
 * - The hand-written stack: PostgreSQL 15 with a trigger that NOTIFYs on
 *   `items` changes, and pgFanoutServer.ts (its own process) re-running the
 *   query on each notification and pushing it over `ws`; the writer runs
 *   the same addCart in a SERIALIZABLE transaction from `pg`.
 *
 * Both servers run one identical query once per write and send its result to
 * every subscriber. The CPU time each side's server processes used during the
 * writes is reported per write (Tessera's server; PostgreSQL's processes plus
 * the ws server).
 */

import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import pg from "pg";
import WebSocket from "ws";
import { alternate, type Options, percentile, type Row, stat } from "./lib.js";
import { addCart, fillItems, NOTIFY_TRIGGER, SCHEMA } from "./pgStore.js";
import {
  cpuSecondsOfTree,
  startComparisonServers,
  startProcess,
  stop,
  TS_REGISTER,
} from "./processes.js";
import { connectMany, ProtocolClient } from "./sync.js";

// biome-ignore lint/suspicious/noExplicitAny: the store app is used untyped (anyApi)
const api = anyApi as any;
const wsCtor = WebSocket as unknown as typeof globalThis.WebSocket;
const ITEMS = 10;
const byValue = (a: number, b: number) => a - b;
const PLENTY = 1e9;

interface Item {
  _id?: string;
  id?: number;
  remaining: number;
}

/** A subscriber of the hand-written stack: one socket, every message parsed. */
class StackSubscriber {
  readonly ws: WebSocket;
  readonly ready: Promise<void>;
  private onValue: ((items: Item[]) => void) | null = null;

  constructor(url: string) {
    this.ws = new WebSocket(url, { perMessageDeflate: false });
    this.ready = new Promise((resolve, reject) => {
      this.ws.on("open", () => this.ws.send('{"type":"subscribe"}'));
      this.ws.on("error", reject);
      this.ws.on("message", (data) => {
        const m = JSON.parse(data.toString()) as { type: string; items: Item[] };
        if (m.type !== "items") return;
        resolve();
        this.onValue?.(m.items);
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

  close(): void {
    this.ws.terminate();
  }
}

async function connectStack(url: string, n: number): Promise<StackSubscriber[]> {
  const subs: StackSubscriber[] = [];
  for (let i = 0; i < n; i += 500) {
    const wave = Array.from({ length: Math.min(500, n - i) }, () => new StackSubscriber(url));
    await Promise.all(wave.map((s) => s.ready));
    subs.push(...wave);
  }
  return subs;
}

interface Side {
  subscribers: { ws: WebSocket; next(): Promise<unknown>; close(): void }[];
  write: (k: number) => Promise<{ key: string; remaining: number }>;
  keyOf: (item: Item) => string;
  /** CPU seconds the side's server processes have used so far. */
  cpu: () => number;
  p50: number[];
  p99: number[];
  /** Per write: when the first subscriber had it (ms from the write's start), over all runs. */
  firsts: number[];
  cpuSeconds: number;
  /**
   * CPU seconds this process used during the side's runs: its writer and
   * every subscriber receiving and parsing each message (one core for all).
   */
  clientCpuSeconds: number;
  /** Bytes the subscribers' sockets received during the side's runs. */
  bytesReceived: number;
  writes: number;
}

function side(
  subscribers: Side["subscribers"],
  write: Side["write"],
  keyOf: Side["keyOf"],
  cpu: Side["cpu"],
): Side {
  return {
    subscribers,
    write,
    keyOf,
    cpu,
    p50: [],
    p99: [],
    firsts: [],
    cpuSeconds: 0,
    clientCpuSeconds: 0,
    bytesReceived: 0,
    writes: 0,
  };
}

/**
 * Makes `warmups` writes it does not measure (until each server's code on
 * this path is compiled: the first writes to a fresh Tessera server cost it
 * several times the CPU of later ones, most of it V8 optimising its code on
 * worker threads).
 */
async function warm(side: Side, warmups: number): Promise<void> {
  for (let k = 0; k < warmups; k++) {
    const arrivals = side.subscribers.map((s) => s.next());
    await side.write(k);
    await Promise.all(arrivals);
  }
  side.writes = warmups;
}

/** Bytes received so far by the side's subscribers' sockets (frames included). */
function bytesReceived(side: Side): number {
  let n = 0;
  for (const s of side.subscribers) {
    // ws keeps its net.Socket as `_socket`; its byte count is the wire's.
    n += (s.ws as unknown as { _socket: { bytesRead: number } | null })._socket?.bytesRead ?? 0;
  }
  return n;
}

/**
 * One run: `writes` writes, one at a time, each one's latency to every
 * subscriber, and the server's CPU over them; checks that the first
 * subscriber saw the written stock.
 */
async function run(side: Side, writes: number): Promise<void> {
  const latencies: number[] = [];
  const cpu0 = side.cpu();
  const clientCpu0 = process.cpuUsage();
  const bytes0 = bytesReceived(side);
  for (let k = 0; k < writes; k++) {
    const arrivals = side.subscribers.map((s) =>
      s.next().then((v) => ({ v, at: performance.now() })),
    );
    const t0 = performance.now();
    const written = await side.write(side.writes++);
    const seen = await Promise.all(arrivals);
    const first = (seen[0]!.v as Item[]).find((i) => side.keyOf(i) === written.key);
    if (first?.remaining !== written.remaining)
      throw new Error(
        `a subscriber saw ${JSON.stringify(first)} after a write that left ${written.remaining}`,
      );
    const times = seen.map((s) => s.at - t0);
    latencies.push(...times);
    side.firsts.push(Math.min(...times));
  }
  side.cpuSeconds += side.cpu() - cpu0;
  const clientCpu = process.cpuUsage(clientCpu0);
  side.clientCpuSeconds += (clientCpu.user + clientCpu.system) / 1e6;
  side.bytesReceived += bytesReceived(side) - bytes0;
  latencies.sort(byValue);
  side.p50.push(percentile(latencies, 50));
  side.p99.push(percentile(latencies, 99));
}

export async function fanoutSection(o: Options, log: (s: string) => void): Promise<Row[]> {
  const { server, postgres, ...servers } = await startComparisonServers(log);
  const writer = new ConvexClient(server.value, { webSocketConstructor: wsCtor });
  const pgWriter = new pg.Client(postgres.config);
  let stack: Awaited<ReturnType<typeof startProcess>> | null = null;
  try {
    const http = new ConvexHttpClient(server.value, { logger: false });
    const ids = (await http.mutation(api.stock.fill, {
      start: 0,
      count: ITEMS,
      remaining: PLENTY,
    })) as string[];
    await pgWriter.connect();
    await pgWriter.query(SCHEMA);
    await pgWriter.query(NOTIFY_TRIGGER);
    const pgIds = await fillItems(pgWriter, 0, ITEMS, PLENTY);
    stack = await startProcess(
      process.execPath,
      [
        "--import",
        TS_REGISTER,
        join(import.meta.dirname, "pgFanoutServer.ts"),
        JSON.stringify(postgres.config),
      ],
      /listening (\d+)/,
    );
    const stackUrl = `ws://127.0.0.1:${stack.value}`;
    const stackPid = stack.child.pid!;
    const writes = o.quick ? 10 : 30;
    const warmups = o.quick ? 10 : 50;
    const rows: Row[] = [];
    for (const n of o.subscribers) {
      log(`one write to ${n} subscribers: connecting both sides…`);
      const tessera = side(
        await connectMany(n, () => new ProtocolClient(server.value, "items:getItems", {})),
        async (k) => {
          const item = ids[k % ITEMS]!;
          const remaining = (await writer.mutation(api.items.addCart, {
            user: "writer",
            item,
          })) as number;
          return { key: item, remaining };
        },
        (i) => i._id!,
        () => cpuSecondsOfTree(server.child.pid!),
      );
      const baseline = side(
        [],
        async (k) => {
          const item = pgIds[k % ITEMS]!;
          const { remaining } = await addCart(pgWriter, "writer", item);
          return { key: String(item), remaining };
        },
        (i) => String(i.id),
        () => cpuSecondsOfTree(postgres.pid) + cpuSecondsOfTree(stackPid),
      );
      try {
        baseline.subscribers.push(...(await connectStack(stackUrl, n)));
        log(`one write to ${n} subscribers: both sides, runs alternating…`);
        await warm(tessera, warmups);
        await warm(baseline, warmups);
        await alternate(
          o.runs,
          () => run(tessera, writes),
          () => run(baseline, writes),
        );
      } finally {
        for (const s of [...tessera.subscribers, ...baseline.subscribers]) s.close();
      }
      const perWrite = (v: number) => v / (o.runs * writes);
      const cpuMsPerWrite = (s: Side) => (perWrite(s.cpuSeconds) * 1000).toFixed(2);
      const clientCpuMsPerWrite = (s: Side) => (perWrite(s.clientCpuSeconds) * 1000).toFixed(2);
      const firstMs = (s: Side) => percentile(s.firsts.sort(byValue), 50).toFixed(2);
      const bytesPerDelivery = (s: Side) => Math.round(perWrite(s.bytesReceived) / n);
      const label = `PostgreSQL LISTEN/NOTIFY + ws server`;
      for (const q of ["p50", "p99"] as const) {
        const t = stat(tessera[q]);
        const b = stat(baseline[q]);
        rows.push({
          name: `one write (addCart) to delivery at every one of ${n.toLocaleString("en-US")} subscribers of the item list, ${q}`,
          unit: "ms",
          better: "lower",
          tessera: t,
          baseline: { label, stat: b },
          target: { text: "below the hand-written stack", met: t.median < b.median },
          ...(q === "p50"
            ? {
                note: `server CPU per write: Tessera ${cpuMsPerWrite(tessera)} ms, PostgreSQL + ws server ${cpuMsPerWrite(baseline)} ms (${writes} writes × ${o.runs} runs, alternating, after ${warmups} unmeasured on each side); the first subscriber had each write after ${firstMs(tessera)} ms from Tessera and ${firstMs(baseline)} ms from the stack (medians over the writes)`,
              }
            : {
                note: `where the time goes at the subscribers' end: each receives ${bytesPerDelivery(tessera)} bytes per write from Tessera (a sync-protocol Transition: each document with its _id and _creationTime), ${bytesPerDelivery(baseline)} from the stack; this process, which runs the writer and all ${n.toLocaleString("en-US")} subscribers on one core, used ${clientCpuMsPerWrite(tessera)} ms of CPU per write with Tessera and ${clientCpuMsPerWrite(baseline)} ms with the stack`,
              }),
        });
      }
    }
    return rows;
  } finally {
    await writer.close().catch(() => {});
    await pgWriter.end().catch(() => {});
    if (stack !== null) await stop(stack);
    await servers.stop();
  }
}
