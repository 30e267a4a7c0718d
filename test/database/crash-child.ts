/**
 * Child process of the crash test: commits transactions as fast as it can
 * from several concurrent committers and prints `ack <n>` for each batch
 * number once its commit has been acknowledged (is durable). Each
 * transaction inserts three documents tagged with its batch number and
 * bumps a counter document, so a partial commit would be visible; each
 * commit carries an answer (as a sync session's mutation does) under the
 * batch number.
 */
import { ConflictError, Database } from "../../src/database/index.js";
import { SqlitePersistence } from "../../src/persistence/index.js";

const [path, startArg] = process.argv.slice(2);
let next = Number(startArg);
const db = await Database.open({
  persistence: new SqlitePersistence({ path: path! }),
  gcIntervalMs: 0,
});
const { value: counterId } = await db.run(async (tx) => {
  const existing = await tx.query("counter", "by_creation_time").next(1);
  if (existing[0]) return existing[0]._id;
  await tx.createIndex("crash", "by_batch", ["batch"]);
  return tx.insert("counter", { total: 0 });
});
process.stdout.write("ready\n");

async function committer(): Promise<void> {
  for (;;) {
    const batch = next++;
    for (let attempt = 1; ; attempt++) {
      const tx = db.begin();
      for (let part = 0; part < 3; part++)
        await tx.insert("crash", { batch, part, pad: "x".repeat(200) });
      const counter = await tx.get(counterId);
      await tx.patch(counterId, { total: (counter!.total as number) + 1 });
      try {
        // Stored with the commit, as a sync session stores a mutation's answer.
        await db.commit(tx, { answer: { client: "crash", requestId: batch, text: `b${batch}` } });
        break;
      } catch (e) {
        if (!(e instanceof ConflictError) || attempt >= 1000) throw e;
      }
    }
    process.stdout.write(`ack ${batch}\n`);
  }
}
await Promise.all(Array.from({ length: 8 }, committer));
