/**
 * Storage section: the database layer on its SQLite persistence, each
 * figure next to raw better-sqlite3 doing the same operation in the same
 * run on the same disk. The ratio is the cost (or gain) of our layers.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Sqlite from "better-sqlite3";
import { Database } from "../src/database/index.js";
import { DEFAULT_CACHE_KIB, SqlitePersistence } from "../src/persistence/index.js";
import { newDocumentId } from "../src/values/index.js";
import { type Options, percentile, type Row, repeat, type Stat, stat } from "./lib.js";

const sampleDoc = (i: number) => ({
  n: Math.random() * 1e6,
  name: `item-${i}`,
  tags: ["a", "b"],
  price: 12.5,
  stock: i % 100,
});

async function openDb(path: string): Promise<Database> {
  return Database.open({ persistence: new SqlitePersistence({ path }), gcIntervalMs: 0 });
}

/** A raw SQLite table of documents; `indexed` adds a secondary index on `n` (for range scans). */
function openRaw(path: string, indexed: boolean): Sqlite.Database {
  const db = new Sqlite(path);
  // The page cache and memory map Tessera's SQLite persistence uses, so the
  // ratio compares layers, not tuning; exclusive locking, whose lock-free
  // statements Tessera's reads match by sharing one read transaction (its
  // file is shared with its checkpointer thread).
  db.pragma("locking_mode = EXCLUSIVE");
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.pragma(`cache_size = ${-DEFAULT_CACHE_KIB}`);
  db.pragma(`mmap_size = ${2 ** 31}`);
  db.exec(
    "CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, n REAL, value TEXT) WITHOUT ROWID",
  );
  if (indexed) db.exec("CREATE INDEX IF NOT EXISTS docs_n ON docs (n)");
  return db;
}

/** Commits/s of `committers` concurrent loops, each committing one inserted document per transaction. */
async function tesseraCommits(
  db: Database,
  committers: number,
  durationMs: number,
): Promise<number> {
  let count = 0;
  const start = performance.now();
  const end = start + durationMs;
  await Promise.all(
    Array.from({ length: committers }, async () => {
      while (performance.now() < end) {
        const tx = db.begin();
        await tx.insert("docs", sampleDoc(count));
        await db.commit(tx);
        count++;
      }
    }),
  );
  return count / ((performance.now() - start) / 1000);
}

/** Durable rows/s inserted by raw SQLite in synced transactions of `batch` rows. */
function rawCommits(db: Sqlite.Database, batch: number, durationMs: number): number {
  const insert = db.prepare("INSERT INTO docs (id, n, value) VALUES (?, ?, ?)");
  const write = db.transaction((rows: Array<[string, number, string]>) => {
    for (const r of rows) insert.run(...r);
  });
  let count = 0;
  const start = performance.now();
  while (performance.now() - start < durationMs) {
    const rows: Array<[string, number, string]> = [];
    for (let i = 0; i < batch; i++) {
      const d = sampleDoc(count + i);
      rows.push([newDocumentId(10001), d.n, JSON.stringify(d)]);
    }
    write(rows);
    count += batch;
  }
  return count / ((performance.now() - start) / 1000);
}

export async function storageSection(o: Options, log: (s: string) => void): Promise<Row[]> {
  const dir = mkdtempSync(join(tmpdir(), "tessera-bench-"));
  const rows: Row[] = [];
  try {
    // ---- durable commits --------------------------------------------------
    for (const committers of [1, 64]) {
      log(`commits with ${committers} committer(s)…`);
      const db = await openDb(join(dir, `commits-${committers}.sqlite`));
      await db.run((tx) => tx.insert("docs", sampleDoc(0)));
      const tessera = await repeat(o.runs, () => tesseraCommits(db, committers, o.durationMs));
      await db.close();
      const raw = openRaw(join(dir, `raw-commits-${committers}.sqlite`), false);
      const oneRow = await repeat(o.runs, async () => rawCommits(raw, 1, o.durationMs));
      const batched =
        committers > 1
          ? await repeat(o.runs, async () => rawCommits(raw, committers, o.durationMs))
          : null;
      raw.close();
      rows.push({
        name: `durable single-document commits, ${committers} concurrent committer${committers > 1 ? "s" : ""}`,
        unit: "commits/s",
        better: "higher",
        tessera,
        baseline: batched
          ? { label: `raw SQLite, synced batches of ${committers} rows`, stat: batched }
          : { label: "raw SQLite, one synced transaction per row", stat: oneRow },
        target:
          committers === 64 ? { text: "≥ 25,000/s", met: tessera.median >= 25_000 } : undefined,
        note: batched
          ? `raw SQLite, one synced transaction per row: ${Math.round(oneRow.median).toLocaleString("en-US")}/s`
          : undefined,
      });
    }

    // ---- a large table -----------------------------------------------------
    log(`loading ${o.docs.toLocaleString("en-US")} documents…`);
    const bigPath = join(dir, "big.sqlite");
    let db = await openDb(bigPath);
    await db.run((tx) => tx.createIndex("big", "by_n", ["n"]));
    const raw = openRaw(join(dir, "raw-big.sqlite"), true);
    const rawInsert = raw.prepare("INSERT INTO docs (id, n, value) VALUES (?, ?, ?)");
    const rawBatch = raw.transaction(
      (docs: Array<{ id: string; doc: ReturnType<typeof sampleDoc> }>) => {
        for (const d of docs) rawInsert.run(d.id, d.doc.n, JSON.stringify({ _id: d.id, ...d.doc }));
      },
    );
    const ids: string[] = [];
    const loadStart = performance.now();
    for (let i = 0; i < o.docs; i += 2000) {
      const docs = Array.from({ length: Math.min(2000, o.docs - i) }, (_, j) => sampleDoc(i + j));
      const { value } = await db.run(async (tx) => {
        const out: Array<{ id: string; doc: ReturnType<typeof sampleDoc> }> = [];
        for (const doc of docs) out.push({ id: await tx.insert("big", doc), doc });
        return out;
      });
      rawBatch(value);
      for (const v of value) ids.push(v.id);
    }
    log(`  loaded in ${((performance.now() - loadStart) / 1000).toFixed(1)} s (both stores)`);

    // ---- point reads -------------------------------------------------------
    log("point reads…");
    const pick = () => ids[Math.floor(Math.random() * ids.length)]!;
    const tesseraReads = await repeat(o.runs, async () => {
      let n = 0;
      const start = performance.now();
      while (performance.now() - start < o.durationMs) {
        for (let i = 0; i < 100; i++) {
          const tx = db.begin({ readOnly: true });
          await tx.get(pick());
        }
        n += 100;
      }
      return n / ((performance.now() - start) / 1000);
    });
    const rawGet = raw.prepare("SELECT value FROM docs WHERE id = ?").pluck();
    const rawReads = await repeat(o.runs, async () => {
      let n = 0;
      const start = performance.now();
      while (performance.now() - start < o.durationMs) {
        for (let i = 0; i < 100; i++) JSON.parse(rawGet.get(pick()) as string);
        n += 100;
      }
      return n / ((performance.now() - start) / 1000);
    });
    rows.push({
      name: `point reads by ID, random over ${o.docs.toLocaleString("en-US")} documents, one read-only transaction each`,
      unit: "reads/s",
      better: "higher",
      tessera: tesseraReads,
      baseline: { label: "raw SQLite SELECT by primary key + JSON.parse", stat: rawReads },
      target: { text: "≥ 50 % of raw", met: tesseraReads.median >= 0.5 * rawReads.median },
    });

    // ---- range scans ---------------------------------------------------------
    log("range scans…");
    const scans = o.quick ? 300 : 2000;
    const p99s: number[] = [];
    const tesseraScan = await repeat(o.runs, async () => {
      const lat: number[] = [];
      for (let i = 0; i < scans; i++) {
        const from = Math.random() * 0.9e6;
        const t0 = performance.now();
        const tx = db.begin({ readOnly: true });
        const docs = await tx
          .query("big", "by_n", [{ type: "Gte", fieldPath: "n", value: from }])
          .next(100);
        lat.push(performance.now() - t0);
        if (docs.length !== 100) throw new Error(`range scan returned ${docs.length} documents`);
      }
      lat.sort((a, b) => a - b);
      p99s.push(percentile(lat, 99));
      return percentile(lat, 50);
    });
    const rawRange = raw
      .prepare("SELECT value FROM docs WHERE n >= ? ORDER BY n LIMIT 100")
      .pluck();
    const rawP99s: number[] = [];
    const rawScan = await repeat(o.runs, async () => {
      const lat: number[] = [];
      for (let i = 0; i < scans; i++) {
        const from = Math.random() * 0.9e6;
        const t0 = performance.now();
        for (const v of rawRange.all(from)) JSON.parse(v as string);
        lat.push(performance.now() - t0);
      }
      lat.sort((a, b) => a - b);
      rawP99s.push(percentile(lat, 99));
      return percentile(lat, 50);
    });
    rows.push({
      name: `100-document index range scan on a ${o.docs.toLocaleString("en-US")}-document table, p50`,
      unit: "ms",
      better: "lower",
      tessera: tesseraScan,
      baseline: { label: "raw SQLite secondary index + JSON.parse", stat: rawScan },
      note: `p99: Tessera ${stat(p99s).median.toFixed(2)} ms, raw ${stat(rawP99s).median.toFixed(2)} ms`,
    });

    // ---- reopen --------------------------------------------------------------
    log("reopen…");
    const probe = ids[0]!;
    const reopen: number[] = [];
    for (let i = 0; i < o.runs; i++) {
      await db.close();
      const t0 = performance.now();
      db = await openDb(bigPath);
      const tx = db.begin({ readOnly: true });
      if ((await tx.get(probe)) === null) throw new Error("document missing after reopen");
      reopen.push((performance.now() - t0) / 1000);
    }
    await db.close();
    raw.close();
    const rawReopen: number[] = [];
    for (let i = 0; i < o.runs; i++) {
      const t0 = performance.now();
      const r = openRaw(join(dir, "raw-big.sqlite"), true);
      r.prepare("SELECT value FROM docs WHERE id = ?").get(probe);
      r.close();
      rawReopen.push((performance.now() - t0) / 1000);
    }
    const reopenStat: Stat = stat(reopen);
    rows.push({
      name: `reopen a ${o.docs.toLocaleString("en-US")}-document database and read one document`,
      unit: "s",
      better: "lower",
      tessera: reopenStat,
      baseline: { label: "raw SQLite open + one read", stat: stat(rawReopen) },
      target: { text: "≤ 3 s", met: reopenStat.median <= 3 },
      note: "file cache warm (same process just wrote it)",
    });
    return rows;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
