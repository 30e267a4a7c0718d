/**
 * Group commit over the SQLite persistence, whose WAL sync runs off the
 * event loop: commits queued together are validated in order (a conflict
 * inside the group is caught), written as one batch and acknowledged — and
 * made visible — only once the sync of that batch has finished; a commit
 * arriving meanwhile is written at once and waits for a sync of its own,
 * and batches are published in order (none after one whose sync failed).
 * A commit arriving while nothing is in flight is written before the event
 * loop turns. Read-write transactions begin at the newest written commit,
 * durable or not, and nothing they decide is told before it is durable.
 */
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConflictError, Database } from "../../src/database/index.js";
import { SqlitePersistence } from "../../src/persistence/index.js";
import { tempDir, track } from "../helpers.js";

const settle = async () => {
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
};

let cleanup: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const f of cleanup.reverse()) await f();
  cleanup = [];
});

/** A database whose WAL syncs are held while `hold` is set, until the test finishes (or fails) them. */
async function openGated(options: { documentCacheBytes?: number } = {}) {
  const dir = tempDir();
  const held: Array<() => void> = [];
  const failers: Array<(e: Error) => void> = [];
  const gate = { hold: false, held, failers, writes: 0, reads: 0 };
  const persistence = new SqlitePersistence({
    path: join(dir.path, "db.sqlite"),
    syncFile: () =>
      gate.hold
        ? new Promise<void>((resolve, reject) => {
            held.push(resolve);
            failers.push(reject);
          })
        : Promise.resolve(),
  });
  const getDocument = persistence.getDocument.bind(persistence);
  persistence.getDocument = (...args) => {
    gate.reads++;
    return getDocument(...args);
  };
  const write = persistence.write.bind(persistence);
  persistence.write = (batch) => {
    gate.writes++;
    return write(batch);
  };
  const db = await Database.open({ persistence, gcIntervalMs: 0, ...options });
  cleanup.push(async () => {
    gate.hold = false;
    for (const r of held.splice(0)) r();
    await db.close().catch(() => {});
    dir.remove();
  });
  return { db, gate };
}

/** Inserts X ({v: 0}), then holds the syncs and commits A, which sets it to 1: A is written, not durable. */
async function patchSyncing(db: Database, gate: { hold: boolean }) {
  const { value: x } = await db.run((tx) => tx.insert("kv", { v: 0 }));
  gate.hold = true;
  const a = db.begin();
  await a.patch(x, { v: 1 });
  const pa = track(db.commit(a));
  await settle();
  return { x, pa };
}

describe("group commit", () => {
  it("validates a group in order and acknowledges and publishes it only after its sync", async () => {
    const { db, gate } = await openGated();
    const {
      value: [x, y],
    } = await db.run(async (tx) => [
      await tx.insert("kv", { v: 0 }),
      await tx.insert("kv", { v: 0 }),
    ]);
    const before = db.latestTs();
    gate.hold = true;

    // Three transactions at one snapshot, committed together: B read and
    // wrote what A wrote first, C touched nothing of theirs.
    const a = db.begin();
    const b = db.begin();
    const c = db.begin();
    const d = db.begin();
    await a.get(x!);
    await a.patch(x!, { v: 1 });
    await b.get(x!);
    await b.patch(x!, { v: 2 });
    const cId = await c.insert("kv", { v: 3 });
    await d.patch(y!, { v: 4 });
    const [pa, pb, pc] = [track(db.commit(a)), track(db.commit(b)), track(db.commit(c))];
    await settle();
    expect(gate.held.length).toBe(1);
    // Written, not yet durable: nobody has heard back and nothing is visible.
    expect([pa.done, pb.done, pc.done, pb.error]).toEqual([false, false, false, null]);
    expect(db.latestTs()).toBe(before);
    const reader = db.begin({ readOnly: true });
    expect((await reader.get(x!))?.v).toBe(0);
    expect(await reader.get(cId)).toBeNull();
    reader.abort();

    // A commit arriving while the group syncs is not in it, but it is
    // written at once (pipelined), to share the sync that follows.
    const writes = gate.writes;
    const pd = track(db.commit(d));
    await settle();
    expect(gate.held.length).toBe(1);
    expect(gate.writes).toBe(writes + 1);
    expect(pd.done).toBe(false);

    gate.held.shift()!();
    await settle();
    expect([pa.done, pc.done]).toEqual([true, true]);
    expect(pb.error).toBeInstanceOf(ConflictError);
    expect(pa.value! < pc.value!).toBe(true);
    expect(db.latestTs()).toBe(pc.value);
    // D went into the next group, which is syncing now.
    expect(gate.held.length).toBe(1);
    expect(pd.done).toBe(false);
    gate.held.shift()!();
    await settle();
    expect(pd.done).toBe(true);
    expect(db.latestTs()).toBe(pd.value);

    const after = db.begin({ readOnly: true });
    expect((await after.get(x!))?.v).toBe(1);
    expect((await after.get(y!))?.v).toBe(4);
    expect((await after.get(cId))?.v).toBe(3);
    after.abort();
  });

  it("writes a commit at once when nothing is in flight, and batches one turn's commits while a sync runs", async () => {
    const { db, gate } = await openGated();
    await db.run((tx) => tx.insert("kv", { v: 0 }));
    gate.hold = true;
    const [a, b, c] = [db.begin(), db.begin(), db.begin()];
    for (const [i, tx] of [a, b, c].entries()) await tx.insert("kv", { v: i + 1 });
    const microtasks = async () => {
      for (let i = 0; i < 10; i++) await Promise.resolve();
    };
    const writes = gate.writes;
    const pa = track(db.commit(a));
    // Microtasks only: the write starts before the event loop turns, so its
    // sync runs while the caller's other transactions go on executing.
    await microtasks();
    expect(gate.writes).toBe(writes + 1);
    expect(gate.held.length).toBe(1);
    // While A syncs, B and C (committed in different microtasks of one turn)
    // wait for the turn to end and are written together.
    const pb = track(db.commit(b));
    await microtasks();
    const pc = track(db.commit(c));
    await microtasks();
    expect(gate.writes).toBe(writes + 1);
    await settle();
    expect(gate.writes).toBe(writes + 2);
    gate.hold = false;
    gate.held.shift()!();
    await settle();
    gate.held.shift()?.();
    await settle();
    expect([pa.done, pb.done, pc.done]).toEqual([true, true, true]);
    expect(pb.value! < pc.value!).toBe(true);
  });

  it("begins read-write transactions at a commit still syncing, and tells nothing they decide before it is durable", async () => {
    const { db, gate } = await openGated();
    const { x, pa } = await patchSyncing(db, gate);
    expect(gate.held.length).toBe(1);

    // Readers see the durable state; a read-write transaction sees A already.
    const reader = db.begin({ readOnly: true });
    expect((await reader.get(x))?.v).toBe(0);
    reader.abort();
    const b = db.begin();
    expect(b.beginTs > db.latestTs()).toBe(true);
    expect((await b.get(x))?.v).toBe(1);
    // B wrote nothing: its commit still waits for A's sync.
    const pb = track(db.commit(b));
    // C throws after reading A's write: its error waits for A's sync too.
    const pc = track(
      db.run(async (tx) => {
        if ((await tx.get(x))?.v === 1) throw new Error("saw v=1");
      }),
    );
    // D writes on top of A without a conflict, into the next batch.
    const d = db.begin();
    await d.patch(x, { v: ((await d.get(x))?.v as number) + 1 });
    const pd = track(db.commit(d));
    await settle();
    expect([pa.done, pb.done, pc.error, pd.done]).toEqual([false, false, null, false]);

    gate.hold = false;
    gate.held.shift()!();
    await settle();
    gate.held.shift()?.();
    await settle();
    expect([pa.done, pb.done, pd.done]).toEqual([true, true, true]);
    expect(pb.value).toBe(pa.value);
    expect((pc.error as Error).message).toBe("saw v=1");
    expect(pd.value! > pa.value!).toBe(true);
    const after = db.begin({ readOnly: true });
    expect((await after.get(x))?.v).toBe(2);
    after.abort();
  });

  it("caches what readers read while a commit syncs, never an older version of what it wrote", async () => {
    // A cache of a few documents: later writes evict earlier entries.
    const { db, gate } = await openGated({ documentCacheBytes: 4000 });
    const pad = "p".repeat(300);
    const {
      value: [x, y],
    } = await db.run(async (tx) => [
      await tx.insert("kv", { v: 0, pad }),
      await tx.insert("kv", { v: 0, pad }),
    ]);
    const fill = async () => {
      const tx = db.begin();
      for (let i = 0; i < 8; i++) await tx.insert("fill", { pad });
      return db.commit(tx);
    };
    await fill();
    gate.hold = true;
    const a = db.begin();
    await a.patch(x!, { v: 1 });
    const pa = track(db.commit(a));
    await settle();
    // Written behind A (pipelined), these evict A's version of X from the cache.
    const pf = track(fill());
    await settle();
    expect(gate.held.length).toBe(1);
    const readsOf = async (id: string) => {
      const before = gate.reads;
      for (let i = 0; i < 4; i++) {
        const r = db.begin({ readOnly: true });
        expect((await r.get(id))?.v).toBe(0);
        r.abort();
      }
      return gate.reads - before;
    };
    // Y enters the cache on its second miss; X, written by a batch not yet
    // published, never does (its version read here is not the newest).
    expect(await readsOf(y!)).toBe(2);
    expect(await readsOf(x!)).toBe(4);
    gate.hold = false;
    for (let i = 0; i < 3; i++) {
      gate.held.shift()?.();
      await settle();
    }
    expect([pa.done, pf.done]).toEqual([true, true]);
    const r = db.begin({ readOnly: true });
    expect((await r.get(x!))?.v).toBe(1);
    r.abort();
  });

  it("tells write listeners of a batch before it is durable, and reads it only through beginWritten", async () => {
    const { db, gate } = await openGated();
    const heard: Array<{ ts: bigint; keys: number; latest: bigint }> = [];
    const stop = db.onWrite((commits) => {
      for (const c of commits) heard.push({ ts: c.ts, keys: c.keys.length, latest: db.latestTs() });
    });
    const { x, pa } = await patchSyncing(db, gate);
    const before = db.latestTs();
    // Heard once written, with what it wrote, while the published snapshot is older.
    expect(heard.length).toBe(2);
    const a = heard[1]!;
    expect(a.latest).toBe(before);
    expect(a.ts > before).toBe(true);
    expect(a.keys).toBeGreaterThan(0);
    expect(db.unpublishedCommits(a.ts).map((c) => c.ts)).toEqual([a.ts]);
    expect(db.unpublishedCommits(before)).toEqual([]);
    const ahead = db.beginWritten();
    expect(ahead.beginTs).toBe(a.ts);
    expect((await ahead.get(x))?.v).toBe(1);
    ahead.abort();
    const reader = db.begin({ readOnly: true });
    expect((await reader.get(x))?.v).toBe(0);
    reader.abort();

    gate.hold = false;
    gate.held.shift()!();
    await settle();
    expect(pa.value).toBe(a.ts);
    expect(db.unpublishedCommits(a.ts)).toEqual([]);
    stop();
    await db.run((tx) => tx.insert("kv", { v: 2 }));
    expect(heard.length).toBe(2);
  });

  it("refuses what read a commit whose sync failed", async () => {
    const { db, gate } = await openGated();
    const { x, pa } = await patchSyncing(db, gate);
    const b = db.begin();
    expect((await b.get(x))?.v).toBe(1);
    const pb = track(db.commit(b));
    const pc = track(
      db.run(async (tx) => {
        await tx.get(x);
        throw new Error("user error");
      }),
    );
    await settle();
    gate.hold = false;
    gate.failers.shift()!(new Error("EIO: the disk went away"));
    gate.held.shift();
    await settle();
    for (const p of [pa, pb, pc]) {
      expect(p.done).toBe(false);
      expect((p.error as Error).message).toMatch(/EIO/);
    }
  });

  it("acknowledges nothing behind a batch whose sync failed", async () => {
    const { db, gate } = await openGated();
    await db.run((tx) => tx.insert("kv", { v: 0 }));
    gate.hold = true;
    const a = db.begin();
    await a.insert("kv", { v: 1 });
    const pa = track(db.commit(a));
    await settle();
    const b = db.begin();
    await b.insert("kv", { v: 2 });
    const pb = track(db.commit(b));
    await settle();
    // B is written and waits for the sync after A's.
    expect(gate.writes).toBe(3);
    expect(gate.held.length).toBe(1);
    const before = db.latestTs();
    gate.hold = false;
    gate.failers.shift()!(new Error("EIO: the disk went away"));
    gate.held.shift();
    await settle();
    await settle();
    // B's own sync succeeded, but the batch before it is lost: B is not acknowledged.
    expect(pa.error).toBeInstanceOf(Error);
    expect((pa.error as Error).message).toMatch(/storage write error: EIO/);
    expect(pb.error).toBeInstanceOf(Error);
    expect((pb.error as Error).message).toMatch(/storage write error: EIO/);
    expect(db.latestTs()).toBe(before);
    // The database says why it stopped to whoever tries next.
    expect(() => db.begin()).toThrow(/must be reopened: EIO/);
  });
});
