/**
 * Scheduler section: a real `tessera serve` process. (a) 10,000 scheduled
 * mutations due at the same moment: jobs/s (from the due time to the last
 * job's start) and due-to-start delay p50/p99, while a client keeps calling
 * a query over HTTP (its p99 reported too); (b) due-to-start delay of jobs
 * due 20 ms apart, a load the scheduler keeps up with.
 *
 * A job is `sched:record`, which inserts when it started (its frozen
 * `Date.now()`, the start of its execution) next to when it was due.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConvexHttpClient } from "convex/browser";
import { anyApi } from "convex/server";
import { type Options, percentile, type Row, stat } from "./lib.js";
import { cpuSecondsOfTree, startServer, stop } from "./processes.js";

// biome-ignore lint/suspicious/noExplicitAny: the bench app is untyped (anyApi)
const api = anyApi as any;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Mutations the server has committed so far (scheduled ones included). */
async function committedMutations(url: string, adminKey: string): Promise<number> {
  const res = await fetch(new URL("/api/tessera/metrics", url), {
    headers: { Authorization: `Convex ${adminKey}` },
  });
  if (!res.ok) throw new Error(`metrics: HTTP ${res.status}`);
  return ((await res.json()) as { mutations: { committed: number } }).mutations.committed;
}

export async function schedulerSection(o: Options, log: (s: string) => void): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-sched-"));
  const server = await startServer(dir);
  const rows: Row[] = [];
  try {
    const client = new ConvexHttpClient(server.value, { logger: false });
    const [probe] = (await client.mutation(api.docs.load, { start: 0, count: 1 })) as string[];

    // (a) a burst.
    const n = o.quick ? 1000 : 10_000;
    log(`${n.toLocaleString("en-US")} scheduled mutations due at once…`);
    const due = Date.now() + (o.quick ? 1500 : 4000);
    for (let i = 0; i < n; i += 1000)
      await client.mutation(api.sched.scheduleSpaced, {
        n: Math.min(1000, n - i),
        start: due,
        gapMs: 0,
      });
    if (Date.now() >= due) throw new Error("scheduling the burst took longer than its head start");
    const adminKey = readFileSync(join(dir, "admin-key"), "utf8").trim();
    const committedBefore = await committedMutations(server.value, adminKey);
    // Server CPU per job: steadier than the rate on a shared machine (it also
    // counts serving the client's queries, a few percent).
    const cpu0 = cpuSecondsOfTree(server.child.pid!);
    const queryLatencies: number[] = [];
    let done = 0;
    const stopQueries = (async () => {
      while (done < n) {
        const t0 = performance.now();
        await client.query(api.docs.get, { id: probe });
        queryLatencies.push(performance.now() - t0);
        await sleep(20);
      }
    })();
    // The end is noticed from the server's count of committed mutations:
    // counting the recorded runs reads every one of them, and each such count
    // mid-burst cost the jobs time (~10% of the server's CPU per job at one
    // count every 2.5 s). The rate comes from the jobs' start times anyway.
    const giveUp = Date.now() + 300_000;
    while ((await committedMutations(server.value, adminKey)) - committedBefore < n) {
      if (Date.now() > giveUp) break;
      await sleep(250);
    }
    done = (await client.query(api.sched.count, { from: due })) as number;
    if (done < n) throw new Error(`only ${done} of ${n} scheduled mutations ran`);
    await stopQueries;
    const cpuMsPerJob = ((cpuSecondsOfTree(server.child.pid!) - cpu0) * 1000) / n;
    const burst = ((await client.query(api.sched.delays, { from: due })) as number[]).sort(
      (a, b) => a - b,
    );
    const rate = n / (burst[burst.length - 1]! / 1000);
    queryLatencies.sort((a, b) => a - b);
    rows.push({
      name: `scheduled mutations run, ${n.toLocaleString("en-US")} due at once (from due time to the last start)`,
      unit: "jobs/s",
      better: "higher",
      tessera: stat([rate]),
      ...(n === 10_000 ? { target: { text: "≥ 2,000/s", met: rate >= 2000 } } : {}),
      note: `due-to-start delay p50 ${percentile(burst, 50).toFixed(0)} ms, p99 ${percentile(burst, 99).toFixed(0)} ms; a client's point query meanwhile: p50 ${percentile(queryLatencies, 50).toFixed(1)} ms, p99 ${percentile(queryLatencies, 99).toFixed(1)} ms over ${queryLatencies.length} calls; server CPU ${cpuMsPerJob.toFixed(2)} ms per job`,
    });

    // (b) not saturated.
    const spaced = o.quick ? 50 : 200;
    log(`${spaced} scheduled mutations due 20 ms apart…`);
    const start = Date.now() + 1000;
    await client.mutation(api.sched.scheduleSpaced, { n: spaced, start, gapMs: 20 });
    while (((await client.query(api.sched.count, { from: start })) as number) < spaced)
      await sleep(500);
    const calm = ((await client.query(api.sched.delays, { from: start })) as number[]).sort(
      (a, b) => a - b,
    );
    const p50 = percentile(calm, 50);
    rows.push({
      name: `due-to-start delay of scheduled mutations due 20 ms apart (p50, ${spaced} jobs)`,
      unit: "ms",
      better: "lower",
      tessera: stat([p50]),
      target: { text: "p50 ≤ 20 ms", met: p50 <= 20 },
      note: `p99 ${percentile(calm, 99).toFixed(0)} ms`,
    });
    return rows;
  } finally {
    await stop(server);
    rmSync(dir, { recursive: true, force: true });
  }
}
