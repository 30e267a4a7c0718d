/**
 * Randomized serializability check. Many concurrent transactions run random
 * programs (point reads, range scans in both directions with limits,
 * inserts, patches that move documents between index keys, deletes) whose
 * writes depend on what they read, with random yields in between so they
 * interleave. Afterwards the committed ones are replayed one by one in
 * commit-timestamp order against a plain in-memory model: every read must
 * return what it returned in the concurrent run, and the final state must
 * match the database. Seeded and reproducible.
 */
import { describe, expect, it } from "vitest";
import { ConflictError, type Database, type Transaction } from "../../src/database/index.js";
import { compareValues, type Document, type Value } from "../../src/values/index.js";
import { openTestDb } from "../helpers.js";

function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Op =
  | { op: "get"; slot: number }
  | { op: "scan"; lo: number | null; hi: number | null; order: "asc" | "desc"; limit: number }
  | { op: "patch"; slot: number; delta: number; moveTo: number | null }
  | { op: "insert"; k: Value }
  | { op: "delete"; slot: number };

interface Observed {
  op: Op;
  result: unknown;
}

interface Run {
  program: Op[];
  observed: Observed[];
  inserted: Document[];
  ts: bigint;
}

const KEYS = 8;

function randomProgram(rand: () => number, slots: number): Op[] {
  const n = 2 + Math.floor(rand() * 5);
  const ops: Op[] = [];
  const slot = () => Math.floor(rand() * slots);
  for (let i = 0; i < n; i++) {
    const r = rand();
    if (r < 0.25) ops.push({ op: "get", slot: slot() });
    else if (r < 0.55) {
      const a = rand() < 0.2 ? null : Math.floor(rand() * KEYS);
      const b = rand() < 0.2 ? null : Math.floor(rand() * KEYS) + 1;
      ops.push({
        op: "scan",
        lo: a,
        hi: b,
        order: rand() < 0.5 ? "asc" : "desc",
        limit: 1 + Math.floor(rand() * 4),
      });
    } else if (r < 0.8) {
      ops.push({
        op: "patch",
        slot: slot(),
        delta: 1 + Math.floor(rand() * 9),
        moveTo: rand() < 0.4 ? Math.floor(rand() * KEYS) : null,
      });
    } else if (r < 0.92)
      ops.push({ op: "insert", k: rand() < 0.1 ? "str" : Math.floor(rand() * KEYS) });
    else ops.push({ op: "delete", slot: slot() });
  }
  return ops;
}

const view = (d: Document | null) => (d === null ? null : { _id: d._id, k: d.k, v: d.v });

function rangeOf(op: Extract<Op, { op: "scan" }>) {
  const r: Array<{ type: "Gte" | "Lt"; fieldPath: string; value: Value }> = [];
  if (op.lo !== null) r.push({ type: "Gte", fieldPath: "k", value: op.lo });
  if (op.hi !== null) r.push({ type: "Lt", fieldPath: "k", value: op.hi });
  return r;
}

/** Runs a program in a real transaction, yielding between operations. */
async function execute(
  tx: Transaction,
  ops: Op[],
  ids: string[],
  rand: () => number,
): Promise<Omit<Run, "ts">> {
  const observed: Observed[] = [];
  const inserted: string[] = [];
  let sum = 0;
  for (const op of ops) {
    if (rand() < 0.6) await new Promise((r) => setImmediate(r));
    switch (op.op) {
      case "get": {
        const d = await tx.get(ids[op.slot]!);
        sum += (d?.v as number) ?? 0;
        observed.push({ op, result: view(d) });
        break;
      }
      case "scan": {
        const docs = await tx.query("kv", "by_k", rangeOf(op), op.order).next(op.limit);
        for (const d of docs) sum += d.v as number;
        observed.push({ op, result: docs.map(view) });
        break;
      }
      case "patch": {
        const d = await tx.get(ids[op.slot]!);
        observed.push({ op, result: view(d) });
        if (d !== null)
          await tx.patch(d._id, {
            v: (d.v as number) + op.delta + sum,
            ...(op.moveTo === null ? {} : { k: op.moveTo }),
          });
        break;
      }
      case "insert":
        inserted.push(await tx.insert("kv", { k: op.k, v: sum }));
        observed.push({ op, result: null });
        break;
      case "delete": {
        const d = await tx.get(ids[op.slot]!);
        observed.push({ op, result: view(d) });
        if (d !== null) await tx.delete(d._id);
        break;
      }
    }
  }
  const docs: Document[] = [];
  for (const id of inserted) docs.push((await tx.get(id))!);
  return { program: ops, observed, inserted: docs };
}

/** Replays a committed run against the model and returns the first mismatch, if any. */
function replay(model: Map<string, Document>, run: Run, ids: string[]): string | null {
  let sum = 0;
  let insertIndex = 0;
  for (const { op, result } of run.observed) {
    let expected: unknown;
    switch (op.op) {
      case "get":
      case "patch":
      case "delete": {
        const d = model.get(ids[op.slot]!) ?? null;
        expected = view(d);
        if (op.op === "get") sum += (d?.v as number) ?? 0;
        if (op.op === "patch" && d) {
          model.set(d._id, {
            ...d,
            v: (d.v as number) + op.delta + sum,
            ...(op.moveTo === null ? {} : { k: op.moveTo }),
          });
        }
        if (op.op === "delete" && d) model.delete(d._id);
        break;
      }
      case "scan": {
        const docs = [...model.values()]
          .filter(
            (d) =>
              (op.lo === null || compareValues(d.k, op.lo) >= 0) &&
              (op.hi === null || compareValues(d.k, op.hi) < 0),
          )
          .sort((a, b) =>
            compareValues(
              [a.k, a._creationTime, a._id] as Value,
              [b.k, b._creationTime, b._id] as Value,
            ),
          );
        if (op.order === "desc") docs.reverse();
        const taken = docs.slice(0, op.limit);
        for (const d of taken) sum += d.v as number;
        expected = taken.map(view);
        break;
      }
      case "insert": {
        const d = run.inserted[insertIndex++]!;
        model.set(d._id, { ...d, v: sum });
        expected = null;
        break;
      }
    }
    if (JSON.stringify(expected) !== JSON.stringify(result)) {
      return `at ts ${run.ts}, ${JSON.stringify(op)}: concurrent run saw ${JSON.stringify(result)}, serial replay sees ${JSON.stringify(expected)}`;
    }
  }
  return null;
}

async function checkSeed(seed: number, transactions: number, concurrency: number) {
  const t = await openTestDb();
  try {
    const db: Database = t.db;
    const rand = prng(seed);
    const { value: ids } = await db.run(async (tx) => {
      await tx.createIndex("kv", "by_k", ["k"]);
      const out: string[] = [];
      for (let i = 0; i < KEYS; i++) out.push(await tx.insert("kv", { k: i, v: 0 }));
      return out;
    });
    const model = new Map<string, Document>();
    for (const d of (await db.run((tx) => tx.query("kv", "by_creation_time").collect())).value)
      model.set(d._id, d);

    const committed: Run[] = [];
    let started = 0;
    let conflicts = 0;
    const worker = async () => {
      while (started < transactions) {
        started++;
        const program = randomProgram(rand, ids.length);
        const tx = db.begin();
        try {
          const run = await execute(tx, program, ids, rand);
          const ts = await db.commit(tx);
          committed.push({ ...run, ts });
        } catch (e) {
          if (!(e instanceof ConflictError)) throw e;
          conflicts++;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));

    committed.sort((a, b) => (a.ts < b.ts ? -1 : 1));
    for (const run of committed) {
      const mismatch = replay(model, run, ids);
      if (mismatch) throw new Error(`seed ${seed}: ${mismatch}`);
    }
    const final = (await db.run((tx) => tx.query("kv", "by_creation_time").collect())).value;
    expect(final.map(view), `seed ${seed}: final state`).toEqual(
      [...model.values()]
        .sort((a, b) =>
          compareValues([a._creationTime, a._id] as Value, [b._creationTime, b._id] as Value),
        )
        .map(view),
    );
    // The index agrees with the documents.
    const byK = (await db.run((tx) => tx.query("kv", "by_k").collect())).value;
    expect(byK.map((d) => d._id).sort()).toEqual(final.map((d) => d._id).sort());
    return { committed: committed.length, conflicts };
  } finally {
    await t.close();
  }
}

describe("serializability", () => {
  for (const seed of [1, 2, 3, 4]) {
    it(`concurrent random transactions equal a serial replay in commit order (seed ${seed})`, async () => {
      const { committed, conflicts } = await checkSeed(seed, 400, 12);
      // Both outcomes must actually happen, or the check proves nothing.
      expect(committed).toBeGreaterThan(50);
      expect(conflicts).toBeGreaterThan(10);
    });
  }
});
