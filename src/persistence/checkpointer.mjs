// The WAL checkpointer: a worker thread with its own connection to the
// store's file that copies committed WAL frames into the database file, so
// that the copying and the two fsyncs of a checkpoint (the WAL before, the
// database after) never hold the server's event loop (see README.md,
// "Checkpoints"). Plain JavaScript: a worker loads it without the
// TypeScript hooks of the process that starts it.
//
// Messages in: "checkpoint" (run passive checkpoints until the WAL is fully
// copied or a few rounds did not get there), "close" (close the connection
// and exit). Out, after each "checkpoint": { done, log, copied } (frames in
// the WAL and frames copied so far; done says all were) or { failed }.
import { parentPort, workerData } from "node:worker_threads";
import Sqlite from "better-sqlite3";

/** Rounds per request: a writer that keeps appending leaves the rest to the next request. */
const ROUNDS = 4;

const db = new Sqlite(workerData.path, { timeout: workerData.busyTimeoutMs });
// NORMAL: a checkpoint syncs the WAL before copying and the database after,
// as SQLite's own checkpoints do under the server's setting.
db.pragma("synchronous = NORMAL");
db.pragma("wal_autocheckpoint = 0");
db.pragma("cache_size = -1024");

parentPort.on("message", (message) => {
  if (message === "close") {
    db.close();
    parentPort.close();
    return;
  }
  try {
    let log = 0;
    let copied = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const [row] = db.pragma("wal_checkpoint(PASSIVE)");
      log = row.log;
      copied = row.checkpointed;
      if (copied >= log) break;
    }
    parentPort.postMessage({ done: copied >= log, log, copied });
  } catch (e) {
    parentPort.postMessage({ failed: e instanceof Error ? e.message : String(e) });
  }
});
