/**
 * Store section, comparisons 1 and 3 of the suite: the Swaghaus `addCart`
 * mutation with N concurrent clients, each a user adding random items to its
 * cart, at low contention (many items) and on one hot item.
 *
 * - Tessera: a real `tessera serve` process on SQLite serving the example's
 *   functions, each client an official `ConvexClient` over WebSocket.
 * - PostgreSQL 15: a cluster started for the run, each client a `pg`
 *   connection running the same reads and writes in a SERIALIZABLE
 *   transaction, retried on serialization failures (pgStore.ts).
 * - convex-test: the same functions in-process under the mock users test
 *   with (no isolation, no durability, no network).
 *
 * Both servers commit durably (Tessera: SQLite WAL with fsync before a
 * mutation is acknowledged; PostgreSQL: fsync and synchronous_commit on).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ConvexClient, ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { convexTest } from "convex-test";
import pg from "pg";
import WebSocket from "ws";
import schema from "../examples/swaghaus/convex/schema.js";
import { alternate, type Options, percentile, type Row, type Stat, stat } from "./lib.js";
import { addCart, fillItems, SCHEMA } from "./pgStore.js";
import { startComparisonServers } from "./processes.js";

// biome-ignore lint/suspicious/noExplicitAny: the store app is used untyped (anyApi)
const api = anyApi as any;
const wsCtor = WebSocket as unknown as typeof globalThis.WebSocket;
/** Stock per item: never runs out during a run. */
const PLENTY = 1e9;

/** One timed run: commits/s, latencies (ms, sorted) and retries per commit. */
interface RunResult {
  rate: number;
  p50: number;
  p99: number;
  retriesPerCommit: number;
}

/**
 * Runs one closed loop per client for `ms`: each calls `call(client, i)`
 * (resolving with its retries) again as soon as the previous call finished.
 */
async function closedLoops(
  clients: number,
  ms: number,
  call: (client: number) => Promise<number>,
): Promise<RunResult> {
  const latencies: number[] = [];
  let retries = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: clients }, async (_, client) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        retries += await call(client);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    rate: latencies.length / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    retriesPerCommit: retries / latencies.length,
  };
}

/** Median (min–max) of each figure over the runs. */
function summarise(runs: RunResult[]) {
  return {
    rate: stat(runs.map((r) => r.rate)),
    p50: stat(runs.map((r) => r.p50)),
    p99: stat(runs.map((r) => r.p99)),
    retries: stat(runs.map((r) => r.retriesPerCommit)),
  };
}

const randomOf = <T>(xs: T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

/** Stocks `items` items through `fill` (`stock:fill`), 500 per call; their IDs. */
async function stock(
  items: number,
  fill: (args: { start: number; count: number; remaining: number }) => Promise<unknown>,
): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < items; start += 500)
    ids.push(
      ...((await fill({
        start,
        count: Math.min(500, items - start),
        remaining: PLENTY,
      })) as string[]),
    );
  return ids;
}

async function adminKeyOf(dir: string): Promise<string> {
  return readFileSync(join(dir, "admin-key"), "utf8").trim();
}

/** Mutation commits and conflict re-runs the Tessera server counted so far. */
async function tesseraCounters(url: string, key: string) {
  const res = await fetch(new URL("/api/tessera/metrics", url), {
    headers: { Authorization: `Convex ${key}` },
  });
  if (!res.ok) throw new Error(`metrics: HTTP ${res.status}`);
  return ((await res.json()) as { mutations: { committed: number; conflicts: number } }).mutations;
}

export async function storeSection(o: Options, log: (s: string) => void): Promise<Row[]> {
  const clients = o.clients;
  const items = o.items;
  const { dir, server, postgres, ...servers } = await startComparisonServers(log);
  const convexClients: ConvexClient[] = [];
  const pgClients: pg.Client[] = [];
  try {
    const url = server.value;
    const key = await adminKeyOf(dir);
    log(`stocking ${items.toLocaleString("en-US")} items and one hot item on both sides…`);
    const http = new ConvexHttpClient(url, { logger: false });
    const ids = await stock(items, (args) => http.mutation(api.stock.fill, args));
    const [hot] = (await http.mutation(api.stock.fill, {
      start: items,
      count: 1,
      remaining: PLENTY,
    })) as string[];

    const setup = new pg.Client(postgres.config);
    await setup.connect();
    await setup.query(SCHEMA);
    const pgIds = await fillItems(setup, 0, items, PLENTY);
    const [pgHot] = await fillItems(setup, items, 1, PLENTY);
    await setup.end();

    for (let i = 0; i < clients; i++) {
      convexClients.push(new ConvexClient(url, { webSocketConstructor: wsCtor }));
      const c = new pg.Client(postgres.config);
      await c.connect();
      pgClients.push(c);
    }
    // Warm both: connections open, code loaded, statements prepared.
    await Promise.all(
      convexClients.map((c, i) => c.mutation(api.items.addCart, { user: `u${i}`, item: hot })),
    );
    await Promise.all(pgClients.map((c, i) => addCart(c, `u${i}`, pgHot!)));

    const rows: Row[] = [];
    let tesseraLow: ReturnType<typeof summarise> | null = null;
    for (const level of ["low", "hot"] as const) {
      const label =
        level === "low"
          ? `low contention (${items.toLocaleString("en-US")} items)`
          : "high contention (one hot item)";
      log(`addCart, ${label}, ${clients} clients: Tessera and PostgreSQL, runs alternating…`);
      const tesseraRuns: RunResult[] = [];
      const pgRuns: RunResult[] = [];
      let committed = 0;
      let conflicts = 0;
      const tesseraRun = async () => {
        const before = await tesseraCounters(url, key);
        tesseraRuns.push(
          await closedLoops(clients, o.durationMs, async (i) => {
            const item = level === "low" ? randomOf(ids) : hot!;
            await convexClients[i]!.mutation(api.items.addCart, { user: `u${i}`, item });
            return 0;
          }),
        );
        const after = await tesseraCounters(url, key);
        committed += after.committed - before.committed;
        conflicts += after.conflicts - before.conflicts;
      };
      const pgRun = async () => {
        pgRuns.push(
          await closedLoops(clients, o.durationMs, async (i) => {
            const item = level === "low" ? randomOf(pgIds) : pgHot!;
            return (await addCart(pgClients[i]!, `u${i}`, item)).retries;
          }),
        );
      };
      await alternate(o.runs, tesseraRun, pgRun);
      // Tessera retries inside the server: its counters give conflicts per commit.
      const tesseraRetries = conflicts / Math.max(1, committed);
      const t = summarise(tesseraRuns);
      const p = summarise(pgRuns);
      if (level === "low") tesseraLow = t;
      const factor = level === "low" ? 1 : 3;
      const pgLabel = `PostgreSQL 15 SERIALIZABLE, ${clients} connections`;
      rows.push({
        name: `Swaghaus addCart, ${label}, ${clients} clients`,
        unit: "commits/s",
        better: "higher",
        tessera: t.rate,
        baseline: { label: pgLabel, stat: p.rate },
        target: {
          text: `≥ ${factor}× PostgreSQL`,
          met: t.rate.median >= factor * p.rate.median,
        },
        note:
          `retries per commit: Tessera ${tesseraRetries.toFixed(2)} (re-runs inside the server), ` +
          `PostgreSQL ${p.retries.median.toFixed(2)} (${fmtRange(p.retries)})`,
      });
      for (const q of ["p50", "p99"] as const) {
        rows.push({
          name: `Swaghaus addCart latency ${q}, ${label}, ${clients} clients`,
          unit: "ms",
          better: "lower",
          tessera: t[q],
          baseline: { label: pgLabel, stat: p[q] },
        });
      }
    }

    log(`addCart, low contention, ${clients} concurrent calls: convex-test in-process…`);
    const mock = await convexTestRuns(o, clients, items);
    rows.push({
      name: `Swaghaus addCart, low contention, ${clients} concurrent callers: Tessera (server process, official client) against convex-test (in-process mock)`,
      unit: "commits/s",
      better: "higher",
      tessera: tesseraLow!.rate,
      baseline: { label: "convex-test, same functions, in the benchmark process", stat: mock.rate },
      note: `convex-test latency p50 ${mock.p50.median.toFixed(2)} ms, p99 ${mock.p99.median.toFixed(2)} ms; what real isolation, durability and a network cost against a mock`,
    });
    return rows;
  } finally {
    await Promise.all(convexClients.map((c) => c.close().catch(() => {})));
    await Promise.all(pgClients.map((c) => c.end().catch(() => {})));
    await servers.stop();
  }
}

function fmtRange(s: Stat): string {
  return `${s.min.toFixed(2)}–${s.max.toFixed(2)}`;
}

/** The same workload under convex-test: one mock deployment, `clients` concurrent callers. */
async function convexTestRuns(o: Options, clients: number, items: number) {
  // Loaded by URL: the app's modules are type-checked with the example, not with the bench.
  const load = (path: string) => () => import(new URL(path, import.meta.url).href);
  const modules = {
    "./store/_generated/server.js": load("../examples/swaghaus/convex/_generated/server.js"),
    "./store/items.ts": load("./store/convex/items.ts"),
    "./store/stock.ts": load("./store/convex/stock.ts"),
  };
  const t = convexTest(schema, modules);
  const ids = await stock(items, (args) => t.mutation(api.stock.fill, args));
  const runs: RunResult[] = [];
  for (let r = 0; r < o.runs; r++) {
    runs.push(
      await closedLoops(clients, o.durationMs, async (i) => {
        await t.mutation(api.items.addCart, { user: `u${i}`, item: randomOf(ids) });
        return 0;
      }),
    );
  }
  return summarise(runs);
}
