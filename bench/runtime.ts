/**
 * Runtime section: uncached executions of (a) a point-read query, (b) an
 * insert mutation, (c) a 100-document index scan query, through the whole
 * function path (bundled app, argument validation, isolate contexts reused
 * while clean, syscalls, durable commits), next to the same functions
 * under `convex-test` (the official in-process mock: no isolation, no
 * durability) in the same run.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { pathToFileURL } from "node:url";
import { anyApi } from "convex/server";
import { convexTest } from "convex-test";
import { Database } from "../src/database/index.js";
import { FunctionRunner } from "../src/functions/runner.js";
import { applySchemaIndexes, evaluateSchema } from "../src/functions/schema.js";
import { SqlitePersistence } from "../src/persistence/index.js";
import { AppRuntime } from "../src/runtime/appRuntime.js";
import { bundleConvexDir, bundleSchema } from "../src/runtime/bundler.js";
import { linkModules } from "../src/runtime/loader.js";
import { type Options, percentile, type Row, repeat, type Stat, stat } from "./lib.js";

const APP = join(import.meta.dirname, "app", "convex");
const CONCURRENCY = 8;

/** Calls `f` from `CONCURRENCY` loops for `ms`; returns calls/s and the latencies seen. */
async function drive(
  ms: number,
  f: (i: number) => Promise<unknown>,
): Promise<{ rate: number; latencies: number[] }> {
  const latencies: number[] = [];
  let n = 0;
  const start = performance.now();
  const end = start + ms;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await f(n++);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  return { rate: latencies.length / ((performance.now() - start) / 1000), latencies };
}

/** The `modules` map convex-test wants, built without Vite's import.meta.glob. */
function mockModules(): Record<string, () => Promise<unknown>> {
  const out: Record<string, () => Promise<unknown>> = {};
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = join(dir, name);
      if (statSync(full).isDirectory()) walk(full);
      else if (/\.[jt]s$/.test(name))
        out[`./${relative(join(APP, ".."), full)}`] = () => import(pathToFileURL(full).href);
    }
  };
  walk(APP);
  return out;
}

interface Workload {
  name: string;
  tessera: (i: number) => Promise<unknown>;
  mock: (i: number) => Promise<unknown>;
  target?: { text: string; min: number };
}

/** Rates and latency percentiles of `runs` runs of `f`. */
async function measure(
  o: Options,
  f: (i: number) => Promise<unknown>,
): Promise<{ rate: Stat; p50: number; p99: number }> {
  const p50s: number[] = [];
  const p99s: number[] = [];
  const rate = await repeat(o.runs, async () => {
    const r = await drive(o.durationMs, f);
    r.latencies.sort((a, b) => a - b);
    p50s.push(percentile(r.latencies, 50));
    p99s.push(percentile(r.latencies, 99));
    return r.rate;
  });
  return { rate, p50: stat(p50s).median, p99: stat(p99s).median };
}

/**
 * Tessera's workloads run first and its runtime and database are closed
 * before convex-test loads its copy of the documents, so that neither side's
 * measurement pays for the other's heap (the mock keeps every document as a
 * JS object: ~50 MB at 20,000 documents, which made Tessera's inserts 9–20%
 * more CPU per call in the same process).
 */
export async function runtimeSection(o: Options, log: (s: string) => void): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-runtime-"));
  const docs = o.quick ? 2_000 : 20_000;
  const ids: string[] = [];
  const mockIds: string[] = [];
  // The mock is created (and its documents loaded) only after Tessera's runs.
  // biome-ignore lint/suspicious/noExplicitAny: convex-test types function references by the app's generated API; this app is untyped
  let m: any = null;
  // biome-ignore lint/suspicious/noExplicitAny: see above
  const api = anyApi as any;
  const workloads: Workload[] = [
    {
      name: "point-read query (db.get by ID)",
      tessera: (i) => runner.query("docs:get", { id: ids[(i * 7919) % ids.length]! }),
      mock: (i) => m.query(api.docs.get, { id: mockIds[(i * 7919) % mockIds.length]! }),
      target: { text: "≥ 5,000/s", min: 5_000 },
    },
    {
      name: "insert mutation (one document, durable)",
      tessera: (i) => runner.mutation("docs:insert", { n: -i, text: "new" }),
      mock: (i) => m.mutation(api.docs.insert, { n: -i, text: "new" }),
      target: { text: "≥ 3,000/s", min: 3_000 },
    },
    {
      name: "query scanning 100 documents of an index range",
      tessera: (i) => runner.query("docs:scan", { from: (i * 37) % (docs - 100) }),
      mock: (i) => m.query(api.docs.scan, { from: (i * 37) % (docs - 100) }),
    },
  ];

  const runtime = await AppRuntime.create(await linkModules(await bundleConvexDir(APP)));
  const db = await Database.open({
    persistence: new SqlitePersistence({ path: join(dir, "db.sqlite") }),
    gcIntervalMs: 0,
  });
  let runner!: FunctionRunner;
  const tessera: Array<Awaited<ReturnType<typeof measure>>> = [];
  try {
    const schema = await evaluateSchema((await bundleSchema(APP))!);
    await applySchemaIndexes(db, schema);
    runner = new FunctionRunner({ db, runtime, schema });
    log(`loading ${docs.toLocaleString("en-US")} documents into Tessera…`);
    for (let i = 0; i < docs; i += 1000) {
      ids.push(
        ...((await runner.mutation("docs:load", { start: i, count: 1000 })).value as string[]),
      );
    }
    for (const w of workloads) {
      log(`${w.name}: Tessera…`);
      tessera.push(await measure(o, w.tessera));
    }
  } finally {
    runtime.dispose();
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  }

  const schemaModule = (await import(pathToFileURL(join(APP, "schema.ts")).href)).default;
  m = convexTest(schemaModule, mockModules());
  log(`loading ${docs.toLocaleString("en-US")} documents into convex-test…`);
  for (let i = 0; i < docs; i += 1000) {
    mockIds.push(...((await m.mutation(api.docs.load, { start: i, count: 1000 })) as string[]));
  }
  const rows: Row[] = [];
  for (const [k, w] of workloads.entries()) {
    log(`${w.name}: convex-test…`);
    const mock = await measure(o, w.mock);
    const t = tessera[k]!;
    rows.push({
      name: `${w.name}, ${CONCURRENCY} concurrent callers`,
      unit: "executions/s",
      better: "higher",
      tessera: t.rate,
      baseline: { label: "convex-test (in-process mock)", stat: mock.rate },
      target: w.target ? { text: w.target.text, met: t.rate.median >= w.target.min } : undefined,
      note: `Tessera latency p50 ${t.p50.toFixed(2)} ms, p99 ${t.p99.toFixed(2)} ms; convex-test p50 ${mock.p50.toFixed(2)} ms, p99 ${mock.p99.toFixed(2)} ms`,
    });
  }
  return rows;
}
