/**
 * Crash safety: a child process commits in a loop and reports each
 * acknowledged commit; it is killed with SIGKILL at random moments over
 * several rounds. After reopening, every acknowledged commit must be there
 * and no transaction may be partly visible, nor the answer stored with a
 * commit be there without it.
 */
import { spawn } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Database } from "../../src/database/index.js";
import { SqlitePersistence } from "../../src/persistence/index.js";
import { tempDir } from "../helpers.js";

const child = join(import.meta.dirname, "crash-child.ts");

function runAndKill(path: string, start: number, killAfterMs: number): Promise<Set<number>> {
  return new Promise((resolve, reject) => {
    const proc = spawn(
      process.execPath,
      [
        "--import",
        join(import.meta.dirname, "../../bin/ts-register.mjs"),
        child,
        path,
        String(start),
      ],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const acked = new Set<number>();
    let buffered = "";
    let stderr = "";
    let timer: NodeJS.Timeout | undefined;
    proc.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        if (!line.startsWith("ack ")) continue;
        acked.add(Number(line.slice(4)));
        // Counted from the first acknowledgement, so that every round commits something
        // however long the child took to get going.
        timer ??= setTimeout(() => proc.kill("SIGKILL"), killAfterMs);
      }
    });
    proc.stderr.on("data", (c: Buffer) => {
      stderr += c.toString();
    });
    // Once its output is all read: acknowledgements still in the pipe count too.
    proc.on("close", (code, signal) => {
      clearTimeout(timer);
      if (signal === "SIGKILL") resolve(acked);
      else reject(new Error(`child exited on its own (code ${code}): ${stderr}`));
    });
  });
}

describe("crash safety", () => {
  it("keeps every acknowledged commit, with its answer, and never shows part of a transaction", async () => {
    const dir = tempDir();
    const path = join(dir.path, "db.sqlite");
    try {
      const allAcked = new Set<number>();
      let next = 0;
      let lastTs = 0n;
      const delays = [150, 400, 60, 700, 250, 1000];
      for (const delay of delays) {
        const acked = await runAndKill(path, next, delay);
        for (const n of acked) allAcked.add(n);
        next += 1_000_000;

        const db = await Database.open({
          persistence: new SqlitePersistence({ path }),
          gcIntervalMs: 0,
        });
        try {
          expect(db.latestTs()).toBeGreaterThan(lastTs);
          lastTs = db.latestTs();
          const tx = db.begin({ readOnly: true });
          const docs = await tx.query("crash", "by_creation_time").collect();
          const byBatch = new Map<number, number>();
          for (const d of docs)
            byBatch.set(d.batch as number, (byBatch.get(d.batch as number) ?? 0) + 1);
          for (const n of allAcked) expect(byBatch.get(n), `acknowledged batch ${n}`).toBe(3);
          for (const [n, count] of byBatch) expect(count, `batch ${n}`).toBe(3);
          const counter = (await tx.query("counter", "by_creation_time").collect())[0]!;
          expect(counter.total).toBe(byBatch.size);
          // The user index holds exactly the same documents.
          const viaIndex = await tx.query("crash", "by_batch").collect();
          expect(viaIndex.map((d) => d._id).sort()).toEqual(docs.map((d) => d._id).sort());
          // Answers are stored with their commits: there exactly for the batches that are.
          for (let n = next - 1_000_000; n < next - 1_000_000 + 2_000; n++) {
            const answer = await db.mutationAnswer("crash", n);
            if (byBatch.has(n)) expect(answer?.text, `answer of batch ${n}`).toBe(`b${n}`);
            else expect(answer, `answer of batch ${n}, not committed`).toBeNull();
          }
        } finally {
          await db.close();
        }
      }
      // The rounds must have done real work, or nothing was tested.
      expect(allAcked.size).toBeGreaterThan(200);
    } finally {
      dir.remove();
    }
  }, 120_000);
});
